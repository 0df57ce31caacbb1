"""Typed batches passed from the datamodules to the adapters and objectives.

Plain dataclasses of tensors: Lightning moves them between devices field by field, and the model reads
``batch.input_ids`` rather than probing string keys. This module imports torch only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: Label value that the losses ignore (positions that are not predicted); the one definition, data and losses read it.
IGNORE_INDEX = -100


@dataclass
class TokenBatch:
    """A batch of token sequences: text, or text + visual words.

    Attributes:
        input_ids: (B, T) token ids, ``pad_token_id`` after each sequence's end.
        attention_mask: (B, T) 1 for real tokens, 0 for padding.
        token_type_ids: (B, T) segment ids (0 for the first segment, 1 for the second).
        mlm_labels: (B, T) original ids at masked positions, :data:`IGNORE_INDEX` elsewhere.
        pair_labels: (B,) 0 when the second segment truly follows (NSP) or is aligned (VideoBERT), 1 when it was
            drawn from elsewhere — Hugging Face's ``next_sentence_label`` convention.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor | None = None
    mlm_labels: torch.Tensor | None = None
    pair_labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.input_ids.size(0)
