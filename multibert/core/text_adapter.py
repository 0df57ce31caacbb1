"""WordPiece text embeddings (Devlin et al., 2019), in Hugging Face ``BertEmbeddings``' parameter layout.

``embeddings = Dropout(LayerNorm(word[input_ids] + position[0..T-1] + segment[token_type_ids]))``. The parameter
names equal HF's (``word_embeddings``, ``position_embeddings``, ``token_type_embeddings``, ``LayerNorm``) so the
checkpoint key map (:mod:`multibert.core.convert`) is a prefix change.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from multibert.core.adapter import Adapter, AdapterOutput
from multibert.core.backbone import init_bert_weights
from multibert.core.config import BertConfig


class TextAdapter(Adapter):
    """Token + position + segment embeddings.

    Reads ``batch.input_ids``, ``batch.attention_mask`` and (optionally) ``batch.token_type_ids``.

    Args:
        config: uses ``vocab_size``, ``hidden_size``, ``max_position_embeddings``, ``type_vocab_size``,
            ``pad_token_id``, ``layer_norm_eps`` and ``hidden_dropout_prob``.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            init_bert_weights(module, self.config.initializer_range)

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Shapes: input_ids (B, T), token_type_ids (B, T) → (B, T, H)."""
        T = input_ids.size(1)
        self.check_length(T)
        positions = torch.arange(T, device=input_ids.device)  # (T,)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)  # (B, T, H)
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))

    def forward(self, batch: Any) -> AdapterOutput:
        """Shapes:
        batch.input_ids: (B, T) → embeddings (B, T, H), attention_mask (B, T).
        """
        token_type_ids = getattr(batch, "token_type_ids", None)
        attention_mask = getattr(batch, "attention_mask", None)
        if attention_mask is None:
            attention_mask = torch.ones_like(batch.input_ids)
        return AdapterOutput(self.embed(batch.input_ids, token_type_ids), attention_mask, token_type_ids)

    def output_embeddings(self) -> nn.Embedding:
        return self.word_embeddings
