"""Fine-tuning losses as pure functions (Devlin et al., 2019, §4): multi-label BCE and the SQuAD span loss.

Single-label sequence and token classification use :func:`multibert.losses.token_cross_entropy`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from multibert.losses import token_cross_entropy


def multilabel_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy with logits over every (example, label) pair, in float32 (patentBERT's loss).

    Shapes:
        logits: (B, C); targets: (B, C) in {0, 1} → scalar.
    """
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float())


def span_loss(start_logits: torch.Tensor, end_logits: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """BERT's SQuAD loss: the mean of the start and end cross-entropies over token positions.

    Shapes:
        start_logits, end_logits: (F, T); start, end: (F,) token indices → scalar.
    """
    return 0.5 * (token_cross_entropy(start_logits, start) + token_cross_entropy(end_logits, end))
