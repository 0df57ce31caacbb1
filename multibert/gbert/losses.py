"""G-BERT's pretraining loss as a pure function (Shang et al., 2019, arXiv 1906.00346, eq. 8): the sum of the
binary cross-entropies of the four pretraining heads (:class:`~multibert.gbert.heads.PretrainHeads`). The
recommendation loss is :func:`multibert.core.losses.multilabel_bce` itself.
"""

from __future__ import annotations

import torch

from multibert.core.losses import multilabel_bce
from multibert.gbert.heads import PretrainLogits


def pretrain_loss(logits: PretrainLogits, dx_labels: torch.Tensor, rx_labels: torch.Tensor) -> torch.Tensor:
    """G-BERT's pretraining loss: the sum of the four heads' binary cross-entropies."""
    return (
        multilabel_bce(logits.dx2dx, dx_labels)
        + multilabel_bce(logits.rx2dx, dx_labels)
        + multilabel_bce(logits.dx2rx, rx_labels)
        + multilabel_bce(logits.rx2rx, rx_labels)
    )
