"""An encoder = one adapter + the shared backbone (+ BERT's pooler): the unit tasks, distillation and export share."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from multibert.core.adapter import Adapter
from multibert.core.backbone import Backbone
from multibert.core.config import BertConfig
from multibert.core.heads import Pooler


class EncoderOutput(NamedTuple):
    """Attributes:
    last_hidden_state: (B, T, H).
    attention_mask: (B, T), the adapter's padding mask.
    pooled_output: (B, H) or ``None`` when the encoder has no pooler.
    hidden_states: L + 1 tensors (B, T, H) or ``None``.
    attention_scores: L tensors (B, nh, T, T) of pre-softmax scores, or ``None``.
    token_type_ids: (B, T) or ``None``.
    """

    last_hidden_state: torch.Tensor
    attention_mask: torch.Tensor
    pooled_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attention_scores: tuple[torch.Tensor, ...] | None = None
    token_type_ids: torch.Tensor | None = None


class Encoder(nn.Module):
    """Adapter → backbone → pooler.

    Args:
        config: shared sizes.
        adapter: the input adapter (built with the same ``config``).
        add_pooler: keep BERT's pooler (NSP and classifiers read it); DistilBERT-style students drop it.
    """

    def __init__(self, config: BertConfig, adapter: Adapter, add_pooler: bool = True) -> None:
        super().__init__()
        self.config = config
        self.adapter = adapter
        self.backbone = Backbone(config)
        self.pooler = Pooler(config) if add_pooler else None

    def forward(
        self, batch: Any, output_hidden_states: bool = False, output_attention_scores: bool = False
    ) -> EncoderOutput:
        """Shapes:
        batch → last_hidden_state (B, T, H), pooled_output (B, H).
        """
        embedded = self.adapter(batch)
        out = self.backbone(
            embedded.embeddings,
            embedded.attention_mask,
            output_hidden_states=output_hidden_states,
            output_attention_scores=output_attention_scores,
        )
        pooled = self.pooler(out.last_hidden_state) if self.pooler is not None else None
        return EncoderOutput(
            out.last_hidden_state,
            embedded.attention_mask,
            pooled,
            out.hidden_states,
            out.attention_scores,
            embedded.token_type_ids,
        )
