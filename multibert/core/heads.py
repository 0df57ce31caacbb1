"""Heads: the small parameterised modules behind the encoder (Devlin et al., 2019; HF ``BertPreTrainingHeads``).

Heads own parameters and produce logits; the losses that read them are pure functions (:mod:`multibert.core.losses`).
"""

from __future__ import annotations

import torch
from torch import nn

from multibert.core.backbone import activation, init_bert_weights
from multibert.core.config import BertConfig


class Pooler(nn.Module):
    """BERT's pooler: ``tanh(W · h_[CLS] + b)``, the sequence vector NSP and classifiers read.

    Shapes:
        hidden: (B, T, H) → (B, H).
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        init_bert_weights(self.dense, config.initializer_range)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, H)


class MLMHead(nn.Module):
    """Masked-LM head: transform (dense → act → LayerNorm), then a decoder tied to the input embedding.

    The decoder shares its weight with the adapter's token embedding (one parameter, two uses) but keeps a bias
    of its own: the embedding has no bias, and the per-token output bias lets the head learn token frequencies
    without moving the shared vectors (as in BERT).

    Args:
        config: sizes and activation.
        embedding: the adapter's token embedding (V, H) to tie the decoder to.

    Shapes:
        hidden: (..., H) → logits (..., V).
    """

    def __init__(self, config: BertConfig, embedding: nn.Embedding) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = activation(config.hidden_act)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, embedding.num_embeddings, bias=False)
        for module in (self.dense, self.LayerNorm, self.decoder):
            init_bert_weights(module, config.initializer_range)
        self.decoder.weight = embedding.weight  # weight tying: one parameter, read by the adapter and the decoder
        self.bias = nn.Parameter(torch.zeros(embedding.num_embeddings))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        h = self.LayerNorm(self.act(self.dense(hidden)))  # (..., H)
        return self.decoder(h) + self.bias  # (..., V)


class ClassificationHead(nn.Module):
    """Dropout + linear layer on a pooled vector: NSP, text-video alignment, sequence classification.

    Args:
        config: ``hidden_size``, ``hidden_dropout_prob``, ``initializer_range``.
        num_labels: output classes (2 for NSP / alignment).
        dropout: dropout before the classifier; ``None`` takes ``config.hidden_dropout_prob``.

    Shapes:
        pooled: (B, H) → logits (B, num_labels).
    """

    def __init__(self, config: BertConfig, num_labels: int = 2, dropout: float | None = None) -> None:
        super().__init__()
        self.dropout = nn.Dropout(config.hidden_dropout_prob if dropout is None else dropout)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        init_bert_weights(self.classifier, config.initializer_range)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(pooled))
