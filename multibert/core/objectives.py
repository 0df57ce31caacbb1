"""Objectives: a head, the loss that reads it and the batch fields both need.

The masked-LM objective runs its vocabulary projection only on the masked positions: with a 30k vocabulary the
decoder costs more than a small encoder, and 85 % of positions carry no label. Next-sentence prediction
(BERT) and text-video alignment (VideoBERT) are the same :class:`PairObjective` on the pooled ``[CLS]`` vector.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from multibert.core.batch import IGNORE_INDEX
from multibert.core.config import BertConfig
from multibert.core.encoder import EncoderOutput
from multibert.core.heads import ClassificationHead, MLMHead
from multibert.core.losses import accuracy_counts, token_cross_entropy


class ObjectiveOutput(NamedTuple):
    """loss: scalar; correct / total: counts for the objective's accuracy; logits: (N, V) on the scored rows."""

    loss: torch.Tensor
    correct: torch.Tensor
    total: torch.Tensor
    logits: torch.Tensor


class MaskedLM(nn.Module):
    """Predict the original token at each masked position; reads ``batch.mlm_labels``.

    Args:
        config: sizes.
        embedding: the adapter's token embedding the decoder is tied to.
    """

    def __init__(self, config: BertConfig, embedding: nn.Embedding) -> None:
        super().__init__()
        self.head = MLMHead(config, embedding)

    def forward(self, encoded: EncoderOutput, batch: Any) -> ObjectiveOutput:
        """Shapes:
        encoded.last_hidden_state: (B, T, H); batch.mlm_labels: (B, T) → logits (M, V).
        """
        labels = batch.mlm_labels
        selected = labels != IGNORE_INDEX  # (B, T)
        hidden = encoded.last_hidden_state[selected]  # (M, H)
        target = labels[selected]  # (M,)
        logits = self.head(hidden)  # (M, V)
        return ObjectiveOutput(token_cross_entropy(logits, target), *accuracy_counts(logits, target), logits)


class PairObjective(nn.Module):
    """Binary classification of a sequence pair on the pooled ``[CLS]``; reads ``batch.pair_labels``.

    Label 0: the second segment belongs with the first (next sentence, aligned video); 1: drawn at random.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        # BERT applies no dropout between the pooler and the NSP classifier
        self.head = ClassificationHead(config, num_labels=2, dropout=0.0)

    def forward(self, encoded: EncoderOutput, batch: Any) -> ObjectiveOutput:
        """Shapes:
        encoded.pooled_output: (B, H); batch.pair_labels: (B,) → logits (B, 2).
        """
        if encoded.pooled_output is None:
            raise ValueError("the pair objective reads the pooled [CLS] vector, but the encoder has no pooler")
        logits = self.head(encoded.pooled_output)  # (B, 2)
        labels = batch.pair_labels
        return ObjectiveOutput(token_cross_entropy(logits, labels), *accuracy_counts(logits, labels), logits)
