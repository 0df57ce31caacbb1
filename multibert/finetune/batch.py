"""Typed batches of the fine-tuning family: sequence classification, question answering, token classification.

Plain dataclasses: Lightning moves their tensor fields between devices; the plain-Python fields (ids, offsets,
gold strings) ride along untouched for the metrics and the prediction writers. This module imports torch only.

Long inputs become several *windows*; ``owner`` maps each window (row) back to its example in the batch, so a
batch of B examples has W ≥ B rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ClassificationBatch:
    """Attributes:
    input_ids: (W, T) token ids of every window of every document.
    attention_mask: (W, T) 1 for real tokens.
    token_type_ids: (W, T) segment ids.
    owner: (W,) index in [0, B) of the document each window belongs to.
    labels: (B,) class ids (single-label), (B, C) float {0, 1} (multi-label), or ``None`` (prediction).
    ids: B document ids.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    owner: torch.Tensor
    labels: torch.Tensor | None = None
    ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class QABatch:
    """Attributes:
    input_ids: (F, T) ``[CLS] question [SEP] context window [SEP]`` features.
    attention_mask: (F, T).
    token_type_ids: (F, T) 0 for the question, 1 for the context.
    owner: (F,) index in [0, B) of the question each feature belongs to.
    start_positions: (F,) token index of the answer start in the feature, 0 ([CLS]) when the answer is not
        inside the window or the question has none; ``None`` without gold answers.
    end_positions: (F,) likewise for the answer end.
    offsets: per feature, T entries: the ``(start, end)`` character span in the context of each context token,
        ``None`` for question, special and padding tokens.
    ids: B question ids.
    contexts: B context strings.
    answers: B lists of gold answer texts (empty: unanswerable or unknown).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    owner: torch.Tensor
    start_positions: torch.Tensor | None
    end_positions: torch.Tensor | None
    offsets: list[list[tuple[int, int] | None]]
    ids: list[str]
    contexts: list[str]
    answers: list[list[str]]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class TokenTagBatch:
    """Attributes:
    input_ids: (B, T) WordPiece ids of ``[CLS] sentence [SEP]``.
    attention_mask: (B, T).
    token_type_ids: (B, T) zeros.
    labels: (B, T) tag id on the first piece of each word, -100 elsewhere (and everywhere when predicting).
    word_index: (B, T) the word each first piece starts, -1 on other positions.
    words: B lists of the sentence's words (all of them, also those cut by truncation).
    tags: B lists of gold tags (empty lists when predicting).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    labels: torch.Tensor
    word_index: torch.Tensor
    words: list[list[str]]
    tags: list[list[str]]

    def __len__(self) -> int:
        return self.input_ids.size(0)
