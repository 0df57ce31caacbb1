"""The paper's regime weighting in the shared pretraining task (multibert.core.pretraining): a weighted sum of the
text-only, video-only and text-video objectives, each logged; text BERT exactly as before."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from multibert.core.batch import IGNORE_INDEX, TokenBatch
from multibert.core.config import BertConfig
from multibert.core.pretraining import PretrainingTask, RegimeTokenBatch

CFG = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                 max_position_embeddings=40, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
NAMES = ["text_only", "video_only", "text_video"]


def batch(cls=TokenBatch, **extra):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 99, (3, 9), generator=g)
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, [1, 2]] = ids[0, [1, 2]]
    labels[1, [3]] = ids[1, [3]]
    labels[2, [1, 4, 6]] = ids[2, [1, 4, 6]]
    pairs = torch.tensor([IGNORE_INDEX, IGNORE_INDEX, 1])  # only the text-video example has an alignment label
    return cls(ids, torch.ones_like(ids), torch.zeros_like(ids), labels, pairs, **extra)


def logged(task: PretrainingTask, b) -> tuple[torch.Tensor, dict[str, float]]:
    """The training step's loss and what it logged; each training value is logged twice (``_step``: this rank,
    ``_epoch``: averaged over ranks at the epoch's end), with the same value here, returned under the base name."""
    seen = {}
    task.log = lambda name, value, **kw: seen.__setitem__(name, float(value))
    loss = task.shared_step(b, "train")
    steps = {k.removesuffix("_step"): v for k, v in seen.items() if k.endswith("_step")}
    assert steps == {k.removesuffix("_epoch"): v for k, v in seen.items() if k.endswith("_epoch")}
    assert len(seen) == 2 * len(steps)
    return loss, steps


def by_hand(task: PretrainingTask, b, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mean MLM cross-entropy over the masked tokens of ``rows`` and mean pair cross-entropy over their labels."""
    enc = task.encoder(b)
    logits = task.mlm.head(enc.last_hidden_state)  # (B, T, V)
    sel = torch.zeros_like(b.mlm_labels, dtype=torch.bool)
    sel[rows] = b.mlm_labels[rows] != IGNORE_INDEX
    mlm = F.cross_entropy(logits[sel], b.mlm_labels[sel])
    valid = [r for r in rows if b.pair_labels[r] != IGNORE_INDEX]
    pair = F.cross_entropy(task.pair.head(enc.pooled_output)[valid], b.pair_labels[valid]) if valid else None
    return mlm, pair


def test_text_bert_is_unchanged():
    """A plain TokenBatch (text BERT) takes the single-regime path: mlm + pair, the same metrics as before."""
    torch.manual_seed(0)
    task = PretrainingTask(CFG, mlm_weight=0.7, pair_weight=0.3).eval()
    b = batch()
    loss, metrics = logged(task, b)
    mlm, pair = by_hand(task, b, [0, 1, 2])
    torch.testing.assert_close(loss, 0.7 * mlm + 0.3 * pair)
    assert sorted(metrics) == ["train/loss", "train/mlm_acc", "train/mlm_loss", "train/nsp_acc", "train/nsp_loss"]
    # a task that knows regime names still treats a plain TokenBatch the old way
    torch.manual_seed(0)
    named = PretrainingTask(CFG, mlm_weight=0.7, pair_weight=0.3, regime_names=NAMES).eval()
    torch.testing.assert_close(logged(named, b)[0], loss)


def test_regime_losses_are_a_weighted_sum_and_each_is_logged():
    torch.manual_seed(0)
    weights = {"text_only": 0.5, "video_only": 2.0, "text_video": 1.0}
    task = PretrainingTask(CFG, pair_name="align", regime_names=NAMES, regime_weights=weights).eval()
    b = batch(RegimeTokenBatch, regimes=torch.tensor([0, 1, 2]))
    loss, metrics = logged(task, b)
    expect = 0.0
    for r, name in enumerate(NAMES):
        mlm, pair = by_hand(task, b, [r])
        regime = mlm + (pair if pair is not None else 0.0)
        assert metrics[f"train/{name}_loss"] == pytest.approx(float(regime), rel=1e-5)
        assert metrics[f"train/{name}_mlm_loss"] == pytest.approx(float(mlm), rel=1e-5)
        expect = expect + weights[name] * regime
    torch.testing.assert_close(loss, expect)
    assert "train/text_video_align_loss" in metrics and "train/text_only_align_loss" not in metrics
    # not the old single mean over all masked tokens
    mlm_all, pair_all = by_hand(task, b, [0, 1, 2])
    assert abs(float(loss) - float(mlm_all + pair_all)) > 1e-3


def test_one_regime_with_weight_one_equals_the_plain_loss():
    torch.manual_seed(0)
    task = PretrainingTask(CFG, pair_name="align", regime_names=NAMES).eval()
    both = batch(RegimeTokenBatch, regimes=torch.tensor([2, 2, 2]))
    plain = batch()
    torch.testing.assert_close(logged(task, both)[0], logged(task, plain)[0])


def test_regime_gradients_flow_and_bad_weights_are_refused():
    torch.manual_seed(0)
    task = PretrainingTask(CFG, regime_names=NAMES, regime_weights={"video_only": 0.0})
    b = batch(RegimeTokenBatch, regimes=torch.tensor([1, 1, 1]))  # only a zero-weight regime in the batch
    loss, _ = logged(task, b)
    loss.backward()
    assert float(loss) == 0.0 and task.mlm.head.bias.grad is not None
    with pytest.raises(ValueError, match=r"regimes \['speech'\] that are not in regime_names"):
        PretrainingTask(CFG, regime_names=NAMES, regime_weights={"speech": 1.0})
