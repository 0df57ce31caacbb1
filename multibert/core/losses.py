"""Losses as pure functions of logits and labels. Modules elsewhere hold the parameters."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from multibert.core.batch import IGNORE_INDEX


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the labelled rows, computed in float32.

    Rows whose label is ``IGNORE_INDEX`` do not count. With no labelled row the loss is an exact 0 that still
    carries a gradient path, rather than the NaN ``F.cross_entropy`` returns for an empty mean.

    Shapes:
        logits: (N, V); labels: (N,) → scalar.
    """
    if logits.numel() == 0 or not (labels != IGNORE_INDEX).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)


def accuracy_counts(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(number of rows whose argmax equals the label, number of labelled rows).

    Shapes:
        logits: (N, V); labels: (N,) → two scalars.
    """
    valid = labels != IGNORE_INDEX
    correct = (logits.argmax(-1) == labels) & valid
    return correct.sum(), valid.sum()


def multilabel_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy with logits over every (example, label) pair, in float32: the loss of
    multi-label classification (patentBERT, AAPD) and of G-BERT's heads.

    Shapes:
        logits: (B, C); targets: (B, C) in {0, 1} → scalar.
    """
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float())
