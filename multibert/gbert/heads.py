"""G-BERT's heads (Shang et al., 2019, "Pre-training of Graph Augmented Transformers for Medication
Recommendation", arXiv 1906.00346; reference code jshang123/G-Bert, ``predictive_models.py``). Heads own
parameters; the losses (:mod:`multibert.gbert.losses`) and metrics (:mod:`multibert.gbert.metrics`) are pure
functions.

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
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from multibert.core.backbone import init_bert_weights
from multibert.core.config import BertConfig


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
