"""The families of the compatibility fixtures (``tests/fixtures/compat/``): how each tiny checkpoint is trained,
the input batch it is run on (plain tensors), and the outputs compared across versions."""

from __future__ import annotations

from typing import Any

import torch

from multibert.core.batch import TokenBatch
from multibert.finetune.batch import ClassificationBatch
from multibert.gbert.batch import GBertRecommendBatch

QUICK = ["--trainer.max_steps=3", "--trainer.limit_val_batches=0", "--trainer.val_check_interval=null",
         "--trainer.check_val_every_n_epoch=1"]


def _tokens(task: Any, low: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(low, task.config.vocab_size, (2, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # a padded row
    ids[1, 8:] = 0
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": (torch.arange(11) > 5).long().expand(2, 11),
            "mlm_labels": labels, "pair_labels": torch.tensor([0, 1])}


def _pretraining_outputs(task: Any, t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    batch = TokenBatch(**t)
    encoded = task.encoder(batch)
    out = {"hidden": encoded.last_hidden_state * batch.attention_mask[..., None], "mlm": task.mlm(encoded, batch).logits}
    if getattr(task, "pair", None) is not None:
        out["pair"] = task.pair(encoded, batch).logits
    return out


def _classification_batch(task: Any) -> dict[str, torch.Tensor]:
    t = _tokens(task)
    return {"input_ids": t["input_ids"], "attention_mask": t["attention_mask"], "token_type_ids": torch.zeros_like(t["input_ids"]),
            "owner": torch.tensor([0, 1])}


def _classification_outputs(task: Any, t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"logits": task(ClassificationBatch(**t, ids=["a", "b"]))}


def _gbert_batch(task: Any) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    nd, nr = len(task.dx_codes), len(task.rx_codes)
    dx = [torch.randint(3, 3 + nd, (n,), generator=g) for n in (4, 2, 3)]  # three visits of one patient
    rx = [torch.randint(3 + nd, 3 + nd + nr, (n,), generator=g) for n in (2, 3, 2)]
    seqs = [torch.cat([torch.tensor([1]), s]) for s in dx + rx]  # [CLS] + codes
    T = max(len(s) for s in seqs)
    ids = torch.stack([torch.nn.functional.pad(s, (0, T - len(s))) for s in seqs])
    return {"input_ids": ids, "attention_mask": (ids != 0).long(), "token_type_ids": torch.tensor([0] * 3 + [1] * 3)[:, None].expand(6, T).clone(),
            "first_visit": torch.zeros(3, dtype=torch.long), "target_visit": torch.tensor([1, 2])}


def _gbert_outputs(task: Any, t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    visits = TokenBatch(t["input_ids"], t["attention_mask"], t["token_type_ids"])
    batch = GBertRecommendBatch(visits, t["first_visit"], t["target_visit"], torch.zeros(2, len(task.rx_codes)),
                                torch.tensor([7, 7]), torch.tensor([71, 72]))
    return {"logits": task(batch)}


def _student_outputs(task: Any, t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    batch = TokenBatch(**t)
    encoded = task.encoder(batch)
    return {"hidden": encoded.last_hidden_state * batch.attention_mask[..., None], "mlm": task.mlm(encoded, batch).logits}


#: family → how its fixture is trained (configs, extra CLI arguments), its input tensors and its outputs.
FAMILIES: dict[str, dict[str, Any]] = {
    "bert": {"configs": ["configs/bert/tiny.yaml"], "args": QUICK, "batch": _tokens, "outputs": _pretraining_outputs},
    "videobert": {"configs": ["configs/videobert/tiny.yaml"], "args": QUICK, "batch": _tokens,
                  "outputs": _pretraining_outputs},
    "gbert": {"configs": ["configs/gbert/tiny.yaml"], "args": QUICK, "batch": _gbert_batch, "outputs": _gbert_outputs},
    "finetune": {"configs": ["configs/finetune/tiny_classification.yaml"], "args": QUICK, "batch": _classification_batch,
                 "outputs": _classification_outputs},
    "distill": {"configs": ["configs/distill/tiny.yaml"], "args": QUICK, "batch": _tokens, "outputs": _student_outputs},
}

