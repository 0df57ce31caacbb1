"""A user-defined adapter living outside ``multibert/``: token embeddings plus fixed sinusoidal positions
(Vaswani et al., 2017) instead of BERT's learned position table. Named by ``class_path`` in the CLI test."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from multibert.core.adapter import Adapter, AdapterOutput
from multibert.core.config import BertConfig


class SinusoidalAdapter(Adapter):
    """Word embeddings + fixed sinusoidal positions, LayerNorm, dropout.

    Args:
        config: shared sizes.
        scale: multiplier of the word embeddings.
    """

    def __init__(self, config: BertConfig, scale: float = 1.0) -> None:
        super().__init__(config)
        H, P = config.hidden_size, config.max_position_embeddings
        self.scale = scale
        self.word_embeddings = nn.Embedding(config.vocab_size, H, padding_idx=config.pad_token_id)
        nn.init.normal_(self.word_embeddings.weight, std=config.initializer_range)
        position = torch.arange(P)[:, None]  # (P, 1)
        freq = torch.exp(torch.arange(0, H, 2) * (-math.log(10000.0) / H))  # (H/2,)
        table = torch.zeros(P, H)
        table[:, 0::2] = torch.sin(position * freq)
        table[:, 1::2] = torch.cos(position * freq)
        self.register_buffer("positions", table, persistent=False)
        self.norm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, batch: Any) -> AdapterOutput:
        """Shapes:
        batch.input_ids: (B, T) → embeddings (B, T, H).
        """
        T = batch.input_ids.size(1)
        self.check_length(T)
        x = self.scale * self.word_embeddings(batch.input_ids) + self.positions[:T]  # (B, T, H)
        return AdapterOutput(self.dropout(self.norm(x)), batch.attention_mask, batch.token_type_ids)

    def output_embeddings(self) -> nn.Embedding:
        return self.word_embeddings
