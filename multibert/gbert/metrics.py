"""G-BERT's metrics as pure functions (Shang et al., 2019, arXiv 1906.00346, section 4.2; the DDI rate of GAMENet,
Shang et al., AAAI 2019).

Metrics (each a mean over target visits, threshold 0.3 by default): Jaccard of the predicted and true sets;
PR-AUC = the average precision of the visit's scores (``sklearn.metrics.average_precision_score`` on the row);
F1 from the visit's precision and recall (precision 0 when nothing is predicted). The DDI rate (GAMENet) is the
share of predicted drug pairs, over all target visits, that a drug-drug-interaction adjacency marks.
"""

from __future__ import annotations

import torch


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
