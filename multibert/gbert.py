"""G-BERT heads, losses and metrics (Shang et al., 2019, "Pre-training of Graph Augmented Transformers for
Medication Recommendation", arXiv 1906.00346; reference code jshang123/G-Bert, ``predictive_models.py``).

Heads own parameters; the losses and metrics are pure functions of logits / scores and labels.

- Pretraining: four multi-label heads on the two ``[CLS]`` vectors of a visit — diagnoses → diagnoses and
  medications → medications (self-prediction), diagnoses → medications and medications → diagnoses (dual
  prediction); the loss is the sum of the four binary cross-entropies.
- Recommendation: for each target visit t ≥ 2 the features are [mean of the past diagnosis visit vectors, mean of
  the past medication visit vectors, the current diagnosis visit vector] (:func:`history_features`), each visit
  vector first mapped by a dense layer + ReLU, then an MLP 3H → 2H → Vr.

:func:`history_features` reads only visits before t (plus visit t's diagnoses): visit t's medications and every
later visit never reach the prediction for t. The authors' fine-tuning code lays the sequences out interleaved
(dx, rx, dx, rx, ...) but then splits them into halves as if they were (dx..., rx...), so about a fifth of targets
see their own answer; this module does not reproduce that.

Metrics (each a mean over target visits, threshold 0.3 by default): Jaccard of the predicted and true sets;
PR-AUC = the average precision of the visit's scores (``sklearn.metrics.average_precision_score`` on the row);
F1 from the visit's precision and recall (precision 0 when nothing is predicted). The DDI rate (GAMENet) is the
share of predicted drug pairs, over all target visits, that a drug-drug-interaction adjacency marks.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from multibert.backbone import init_bert_weights
from multibert.config import BertConfig


# ------------------------------------------------------------------------------------------------------- heads
class MultiLabelHead(nn.Module):
    """Linear → ReLU → Linear from a visit vector to one logit per code (the authors' ``ClsHead``).

    Shapes:
        x: (B, H) → logits (B, V).
    """

    def __init__(self, config: BertConfig, num_labels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(config.hidden_size, config.hidden_size), nn.ReLU(), nn.Linear(config.hidden_size, num_labels))
        self.apply(lambda m: init_bert_weights(m, config.initializer_range))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PretrainLogits(NamedTuple):
    """Logits of the four pretraining heads: (B, Vd), (B, Vd), (B, Vr), (B, Vr)."""

    dx2dx: torch.Tensor
    rx2dx: torch.Tensor
    dx2rx: torch.Tensor
    rx2rx: torch.Tensor


class PretrainHeads(nn.Module):
    """G-BERT's self-prediction and dual-prediction heads.

    Args:
        config: sizes.
        num_dx: Vd diagnosis codes; num_rx: Vr medication codes.

    Shapes:
        dx_cls, rx_cls: (B, H) → four logits tensors, (B, Vd) twice then (B, Vr) twice.
    """

    def __init__(self, config: BertConfig, num_dx: int, num_rx: int) -> None:
        super().__init__()
        self.dx2dx = MultiLabelHead(config, num_dx)
        self.rx2dx = MultiLabelHead(config, num_dx)
        self.dx2rx = MultiLabelHead(config, num_rx)
        self.rx2rx = MultiLabelHead(config, num_rx)

    def forward(self, dx_cls: torch.Tensor, rx_cls: torch.Tensor) -> PretrainLogits:
        return PretrainLogits(self.dx2dx(dx_cls), self.rx2dx(rx_cls), self.dx2rx(dx_cls), self.rx2rx(rx_cls))


class MedicationHead(nn.Module):
    """The recommendation head: dense + ReLU per visit type, history features, then MLP 3H → 2H → Vr.

    Shapes:
        dx_cls, rx_cls: (Nv, H); first_visit: (Nv,); target_visit: (Nt,) → logits (Nt, Vr).
    """

    def __init__(self, config: BertConfig, num_rx: int) -> None:
        super().__init__()
        H = config.hidden_size
        self.dx_map = nn.Sequential(nn.Linear(H, H), nn.ReLU())
        self.rx_map = nn.Sequential(nn.Linear(H, H), nn.ReLU())
        self.classifier = nn.Sequential(nn.Linear(3 * H, 2 * H), nn.ReLU(), nn.Linear(2 * H, num_rx))
        self.apply(lambda m: init_bert_weights(m, config.initializer_range))

    def forward(self, dx_cls: torch.Tensor, rx_cls: torch.Tensor, first_visit: torch.Tensor, target_visit: torch.Tensor) -> torch.Tensor:
        features = history_features(self.dx_map(dx_cls), self.rx_map(rx_cls), first_visit, target_visit)  # (Nt, 3H)
        return self.classifier(features)  # (Nt, Vr)


def history_features(dx: torch.Tensor, rx: torch.Tensor, first_visit: torch.Tensor, target_visit: torch.Tensor) -> torch.Tensor:
    """[mean of dx over visits first..t-1, mean of rx over visits first..t-1, dx of visit t] for each target t.

    Prefix sums make this one vectorised step for a batch of many patients: the sum over ``[s, t)`` is
    ``cumsum[t] - cumsum[s]`` with a zero row in front. Only rows ``< t`` of ``rx`` and rows ``<= t`` of ``dx``
    enter the features of target ``t``.

    Args:
        dx, rx: per-visit vectors, visits of each patient contiguous and in order.
        first_visit: flat index of the first visit of each visit's patient.
        target_visit: flat indices of the target visits (each later than its patient's first visit).

    Shapes:
        dx, rx: (Nv, H); first_visit: (Nv,); target_visit: (Nt,) → (Nt, 3H).
    """
    start = first_visit[target_visit]  # (Nt,)
    if bool((target_visit <= start).any()):
        raise ValueError("a target visit must have at least one earlier visit of the same patient")
    count = (target_visit - start).unsqueeze(-1).to(dx.dtype)  # (Nt, 1)
    zero = dx.new_zeros(1, dx.size(-1))
    dx_sum = torch.cat([zero, dx.cumsum(0)])  # (Nv + 1, H)
    rx_sum = torch.cat([zero, rx.cumsum(0)])  # (Nv + 1, H)
    dx_past = (dx_sum[target_visit] - dx_sum[start]) / count  # (Nt, H)
    rx_past = (rx_sum[target_visit] - rx_sum[start]) / count  # (Nt, H)
    return torch.cat([dx_past, rx_past, dx[target_visit]], dim=-1)  # (Nt, 3H)


# ------------------------------------------------------------------------------------------------------- losses
def multilabel_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over all entries, in float32.

    Shapes:
        logits, labels: (B, V) → scalar.
    """
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


def pretrain_loss(logits: PretrainLogits, dx_labels: torch.Tensor, rx_labels: torch.Tensor) -> torch.Tensor:
    """G-BERT's pretraining loss: the sum of the four heads' binary cross-entropies."""
    return (
        multilabel_bce(logits.dx2dx, dx_labels)
        + multilabel_bce(logits.rx2dx, dx_labels)
        + multilabel_bce(logits.dx2rx, rx_labels)
        + multilabel_bce(logits.rx2rx, rx_labels)
    )


# ------------------------------------------------------------------------------------------------------- metrics
def jaccard(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """|pred ∩ true| / |pred ∪ true| per row (0 when both are empty).

    Shapes:
        pred, target: (N, V) booleans / {0, 1} → (N,).
    """
    pred, target = pred.bool(), target.bool()
    inter = (pred & target).sum(-1).float()
    union = (pred | target).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))


def f1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """2PR / (P + R) per row; precision is 0 when nothing is predicted, F1 is 0 when P + R = 0.

    Shapes:
        pred, target: (N, V) → (N,).
    """
    pred, target = pred.bool(), target.bool()
    tp = (pred & target).sum(-1).float()
    precision = tp / pred.sum(-1).clamp(min=1)
    recall = tp / target.sum(-1).clamp(min=1)
    denom = precision + recall
    return torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(denom))


def average_precision(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Average precision of each row's scores, as ``sklearn.metrics.average_precision_score`` (ties share one
    threshold): ``Σ_n (R_n − R_{n−1}) P_n`` over the distinct score thresholds. Rows without positives give 0.

    Shapes:
        scores, target: (N, V) → (N,).
    """
    order = scores.argsort(dim=-1, descending=True)  # (N, V)
    s = scores.gather(-1, order)  # (N, V) sorted descending
    y = target.gather(-1, order).float()  # (N, V)
    tp = y.cumsum(-1)  # (N, V) true positives at each cut
    k = torch.arange(1, s.size(-1) + 1, device=s.device, dtype=tp.dtype)  # (V,)
    # a cut is a threshold only where the next score differs (the last of a run of ties)
    last = torch.ones_like(s, dtype=torch.bool)
    last[:, :-1] = s[:, 1:] != s[:, :-1]
    tp_at = torch.where(last, tp, torch.zeros_like(tp))  # (N, V)
    prev_tp = torch.cat([torch.zeros_like(tp[:, :1]), tp_at[:, :-1]], dim=-1).cummax(-1).values  # (N, V)
    positives = y.sum(-1, keepdim=True)  # (N, 1)
    gain = torch.where(last, (tp - prev_tp) * (tp / k), torch.zeros_like(tp))  # ΔR·P up to the 1/|pos| factor
    return torch.where(positives.squeeze(-1) > 0, gain.sum(-1) / positives.squeeze(-1).clamp(min=1), torch.zeros_like(positives.squeeze(-1)))


def ddi_pair_counts(pred: torch.Tensor, ddi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(interacting predicted pairs, all predicted pairs), summed over rows; the DDI rate is their ratio.

    Args:
        pred: predicted medication sets.
        ddi: symmetric adjacency, 1 where two medications interact.

    Shapes:
        pred: (N, V); ddi: (V, V) → two scalars.
    """
    p = pred.float()
    interacting = ((p @ ddi.float()) * p).sum() / 2  # each unordered pair counted twice
    n = p.sum(-1)
    return interacting, (n * (n - 1) / 2).sum()
