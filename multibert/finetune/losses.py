"""The SQuAD span loss as a pure function (Devlin et al., 2019, §4.2).

Single-label sequence and token classification use :func:`multibert.core.losses.token_cross_entropy`, multi-label
classification :func:`multibert.core.losses.multilabel_bce`.
"""

from __future__ import annotations

import torch

from multibert.core.losses import token_cross_entropy


def span_loss(start_logits: torch.Tensor, end_logits: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """BERT's SQuAD loss: the mean of the start and end cross-entropies over token positions.

    Shapes:
        start_logits, end_logits: (F, T); start, end: (F,) token indices → scalar.
    """
    return 0.5 * (token_cross_entropy(start_logits, start) + token_cross_entropy(end_logits, end))
