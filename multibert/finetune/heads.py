"""Fine-tuning heads (Devlin et al., 2019, §4): the span head for extractive QA, and pooling of a long document's
window vectors (the docBERT long-document variant; Adhikari et al., 2019 truncate at 512 tokens instead).

Sequence and token classification reuse :class:`multibert.core.heads.ClassificationHead` (dropout + linear, applied to
the last axis, so it serves (B, H) and (B, T, H) alike).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import nn

from multibert.core.backbone import init_bert_weights
from multibert.core.config import BertConfig


class SpanLogits(NamedTuple):
    """start (B, T) and end (B, T) logits of the answer span."""

    start: torch.Tensor
    end: torch.Tensor


class SpanHead(nn.Module):
    """BERT's SQuAD head: one linear map H → 2 on every token gives start and end logits.

    Padding positions get -inf-like logits (the smallest float) so they never win; question and special tokens
    stay scorable because position 0 ([CLS]) is the "no answer" span of SQuAD v2.0.

    Args:
        config: ``hidden_size``, ``initializer_range``.

    Shapes:
        hidden: (B, T, H), attention_mask: (B, T) → start, end: (B, T) each, float32.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.qa_outputs = nn.Linear(config.hidden_size, 2)  # HF's name, so fine-tuned HF heads map by name
        init_bert_weights(self.qa_outputs, config.initializer_range)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> SpanLogits:
        logits = self.qa_outputs(hidden).float()  # (B, T, 2)
        logits = logits.masked_fill(~attention_mask.bool().unsqueeze(-1), torch.finfo(logits.dtype).min)
        start, end = logits.unbind(-1)  # (B, T) each
        return SpanLogits(start, end)


def pool_windows(
    vectors: torch.Tensor, owner: torch.Tensor, num_documents: int, mode: Literal["mean", "max", "first"] = "mean"
) -> torch.Tensor:
    """Pool the vectors of each document's windows into one vector per document.

    ``mean`` averages, ``max`` takes the element-wise maximum, ``first`` keeps the first window (truncation). A
    document with one window gets that window's vector unchanged in every mode.

    Shapes:
        vectors: (W, H); owner: (W,) in [0, B) → (B, H).
    """
    B, H = num_documents, vectors.size(-1)
    index = owner.unsqueeze(-1).expand(-1, H)  # (W, H)
    if mode == "mean":
        total = vectors.new_zeros(B, H).index_add_(0, owner, vectors)  # (B, H)
        count = torch.bincount(owner, minlength=B).clamp(min=1).to(vectors.dtype)  # (B,)
        return total / count.unsqueeze(-1)
    if mode == "max":
        init = vectors.new_full((B, H), torch.finfo(vectors.dtype).min)
        return init.scatter_reduce(0, index, vectors, reduce="amax", include_self=True)  # (B, H)
    if mode == "first":
        first = torch.full((B,), vectors.size(0), dtype=torch.long, device=owner.device)
        first = first.scatter_reduce(0, owner, torch.arange(owner.numel(), device=owner.device), reduce="amin")  # (B,)
        return vectors[first]  # (B, H)
    raise ValueError(f"window pooling {mode!r}; expected 'mean', 'max' or 'first'")
