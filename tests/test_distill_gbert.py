"""G-BERT through the distillation task: a G-BERT teacher (.ckpt of GBertPretrainTask, or a config) and a smaller
G-BERT student with the same ontology adapter and code vocabularies, reading the visits of G-BERT batches."""

from __future__ import annotations

import csv
import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.ehr.datamodule import EHRDataModule, _visit_tokens
from multibert.cli import main
from multibert.core.config import BertConfig
from multibert.core.task import EncoderTask
from multibert.distill.task import DistillationTask
from multibert.gbert.adapter import OntologyAdapter
from multibert.gbert.batch import GBertPretrainBatch

CONFIGS = Path(__file__).parents[1] / "configs"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
DX = ["25001", "25002", "4019", "042", "V4581"]
RX = ["N02B", "N02A", "A10B", "C07A"]
ADAPTER = functools.partial(OntologyAdapter, dx_codes=DX, rx_codes=RX)


def _config(hidden: int, layers: int) -> BertConfig:
    return BertConfig(vocab_size=3 + len(DX) + len(RX), hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=2, intermediate_size=17, hidden_act="relu",
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _batch() -> GBertPretrainBatch:
    dx = [np.array([3, 4, 5]), np.array([6]), np.array([3, 7])]
    rx = [np.array([8, 9]), np.array([10, 11, 8]), np.array([9])]
    visits = _visit_tokens(dx, rx)  # 6 sequences: 3 diagnosis, 3 medication
    return GBertPretrainBatch(visits, torch.zeros(3, len(DX)), torch.zeros(3, len(RX)))


def test_config_teacher_shares_the_vocabularies_and_intermediate_terms_fall():
    task = DistillationTask(_config(8, 1), ADAPTER, teacher_config=_config(16, 2), input_field="visits",
                            prediction="none", add_pooler=False, alpha_embedding=1.0, alpha_attention=1.0, alpha_hidden=1.0)
    task.build_teacher()
    for adapter in (task.encoder.adapter, task.teacher.encoder.adapter):  # the teacher takes the student's adapter
        assert isinstance(adapter, OntologyAdapter) and adapter.dx_codes == DX and adapter.num_rx == len(RX)
    assert task.teacher_layers == [2] and task.hidden_projection.dense.weight.shape == (16, 8)
    assert task.hparams.adapter == {"class_path": "multibert.gbert.adapter.OntologyAdapter",
                                    "init_args": {"dx_codes": DX, "rx_codes": RX}}
    batch = _batch()
    optimizer = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=1e-2)
    task.train()
    history = []
    for _ in range(15):
        terms, s_pred, t_pred = task.losses(batch)
        assert set(terms) == {"embedding", "attention", "hidden"} and s_pred is None and t_pred is None
        loss = sum(terms.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert all(math.isfinite(x) for x in history)
    assert history[-1] < 0.7 * history[0], history


def test_configuration_errors_name_the_field():
    with pytest.raises(ValueError, match="needs non-empty dx_codes and rx_codes"):
        DistillationTask(_config(8, 1), functools.partial(OntologyAdapter, dx_codes=DX), teacher_config=_config(16, 2),
                         prediction="none", alpha_hidden=1.0)
    with pytest.raises(ValueError, match="prediction='mlm'"):  # the ontology adapter has no token embedding
        DistillationTask(_config(8, 1), ADAPTER, teacher_config=_config(16, 2), alpha_ce=1.0)
    task = DistillationTask(_config(8, 1), ADAPTER, teacher_config=_config(16, 2), prediction="none", alpha_hidden=1.0)
    with pytest.raises(ValueError, match=r"\['visits'\]: set model.input_field"):
        task.losses(_batch())
    task.hparams.input_field = "visit"
    with pytest.raises(ValueError, match="input_field='visit'"):
        task.losses(_batch())


def _train_losses(root: Path) -> list[float]:
    (path,) = root.glob("runs/*/version_*/metrics.csv")
    return [float(r["train/loss_step"]) for r in csv.DictReader(open(path)) if r.get("train/loss_step")]


def test_cli_distils_a_gbert_pretraining_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # 1. a tiny G-BERT teacher: pretraining on the synthetic cohort
    main(["fit", "-c", str(CONFIGS / "gbert" / "tiny_pretrain.yaml"), "--trainer.accelerator=cpu", "--trainer.max_steps=12",
          "--trainer.limit_val_batches=0", "--trainer.logger=false", "--trainer.default_root_dir=teacher", *QUIET])
    teacher = next(Path("teacher").rglob("*.ckpt"))
    # 2. distil it into the shipped 1 × 16 student
    main(["fit", "-c", str(CONFIGS / "distill" / "gbert_tiny.yaml"), "-c", str(CONFIGS / "trainer" / "cpu.yaml"),
          "--model.teacher_from", str(teacher), "--model.teacher_config=null", "--trainer.max_steps=30",
          "--trainer.log_every_n_steps=1", *QUIET])
    losses = _train_losses(tmp_path)
    assert len(losses) == 30 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5]), losses

    # 3. the student checkpoint: no teacher tensors; it reloads alone, with the data's vocabularies
    ckpt = next(Path("runs").rglob("last.ckpt"))
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert state and not any(k.startswith("teacher.") for k in state)
    codes = EHRDataModule(task="pretrain", synthetic_patients=200)
    student = EncoderTask.from_checkpoint(ckpt)
    assert isinstance(student, DistillationTask) and student.teacher is None
    assert isinstance(student.encoder.adapter, OntologyAdapter) and student.encoder.adapter.rx_codes == codes.rx_codes
    assert student.config.hidden_size == 16
    assert torch.equal(student.encoder.adapter.special, state["encoder.adapter.special"])
    # and it initialises G-BERT's recommender of the student's sizes
    from multibert.gbert.task import GBertRecommendTask

    recommender = GBertRecommendTask(student.config, adapter=student.hparams.adapter, init_from=str(ckpt))
    recommender.setup("fit")
    assert torch.equal(recommender.encoder.backbone.blocks[0].mlp.fc.weight, state["encoder.backbone.blocks.0.mlp.fc.weight"])

    # 4. the teacher's vocabularies must be the student's
    reversed_codes = functools.partial(OntologyAdapter, dx_codes=codes.dx_codes[::-1], rx_codes=codes.rx_codes)
    other = DistillationTask(_config(8, 1), reversed_codes, teacher_from=str(teacher), input_field="visits",
                             prediction="none", alpha_hidden=1.0)
    with pytest.raises(ValueError, match="dx_codes"):
        other.build_teacher()
    same_codes = functools.partial(OntologyAdapter, dx_codes=codes.dx_codes, rx_codes=codes.rx_codes)
    same = DistillationTask(_config(8, 1), same_codes, teacher_from=str(teacher), input_field="visits",
                            prediction="none", alpha_hidden=1.0)
    same.build_teacher()
    theirs = torch.load(teacher, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(same.teacher.encoder.adapter.special, theirs["encoder.adapter.special"])
