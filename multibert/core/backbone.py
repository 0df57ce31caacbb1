"""The shared BERT encoder stack (Devlin et al., 2019, "BERT: Pre-training of Deep Bidirectional Transformers").

Post-LN transformer blocks exactly as in Google's BERT and Hugging Face's ``BertEncoder``::

    a = LayerNorm(x + Dropout(W_o · Attention(x)))
    y = LayerNorm(a + Dropout(W_2 · act(W_1 · a)))

Attention runs through :func:`torch.nn.functional.scaled_dot_product_attention`. The stack holds no embeddings:
those belong to the adapters (:mod:`multibert.adapters`), which hand it ``(B, T, H)`` vectors and a padding mask.
Per-layer hidden states and pre-softmax attention scores are returned only when asked for (distillation needs
them); the default path never materialises a ``(B, nh, T, T)`` tensor.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from multibert.core.config import BertConfig


class BackboneOutput(NamedTuple):
    """What the encoder returns.

    Attributes:
        last_hidden_state: (B, T, H) output of the last block.
        hidden_states: L + 1 tensors (B, T, H) — the input embeddings, then each block's output — or ``None``.
        attention_scores: L tensors (B, nh, T, T) of pre-softmax scores q·kᵀ/√hs (before the padding mask is
            added), or ``None``.
    """

    last_hidden_state: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attention_scores: tuple[torch.Tensor, ...] | None = None


def activation(name: str) -> nn.Module:
    """The feed-forward non-linearity named by ``BertConfig.hidden_act``."""
    if name == "gelu":
        return nn.GELU()  # BERT's exact erf form, not the tanh approximation
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return nn.GELU(approximate="tanh")
    if name == "relu":
        return nn.ReLU()
    return nn.SiLU()


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused q/k/v projection."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.n_head = config.num_attention_heads
        self.head_size = config.head_size
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.attn_dropout = config.attention_probs_dropout_prob

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None, return_scores: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Args:
            x: hidden states.
            attn_mask: boolean mask, True where a key may be attended to, or ``None`` for no padding.
            return_scores: also return the pre-softmax scores (computed explicitly, not through SDPA).

        Shapes:
            x: (B, T, H); attn_mask: (B, 1, 1, T); output: (B, T, H); scores: (B, nh, T, T).
        """
        B, T, H = x.shape
        q, k, v = self.qkv(x).split(H, dim=-1)  # 3 × (B, T, H)
        q = q.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        dropout = self.attn_dropout if self.training else 0.0
        scores = None
        if return_scores:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_size)  # (B, nh, T, T)
            masked = scores if attn_mask is None else scores.masked_fill(~attn_mask, torch.finfo(scores.dtype).min)
            # softmax in float32: under bf16 autocast the row sums would otherwise lose precision
            probs = F.dropout(masked.float().softmax(dim=-1).to(v.dtype), dropout, self.training)
            y = probs @ v  # (B, nh, T, hs)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, H)  # (B, T, H)
        return self.proj(y), scores


class FeedForward(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = activation(config.hidden_act)
        self.proj = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self.fc(x)))


class Block(nn.Module):
    """One post-LN transformer block (LayerNorm after each residual sum, as in the original BERT)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attn = SelfAttention(config)
        self.attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = FeedForward(config)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None, return_scores: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, scores = self.attn(x, attn_mask, return_scores)
        x = self.attn_norm(x + self.dropout(a))
        x = self.mlp_norm(x + self.dropout(self.mlp(x)))
        return x, scores


class Backbone(nn.Module):
    """The BERT encoder: ``num_hidden_layers`` post-LN blocks, no embeddings.

    Args:
        config: sizes; ``config.gradient_checkpointing`` recomputes each block in backward while training.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            init_bert_weights(module, self.config.initializer_range)

    def forward(
        self,
        embeddings: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attention_scores: bool = False,
    ) -> BackboneOutput:
        """Encode a batch of embedded sequences.

        Args:
            embeddings: the adapter's output.
            attention_mask: True (or 1) for real tokens, False (0) for padding; ``None`` means no padding.
            output_hidden_states: also return the input and every block's output.
            output_attention_scores: also return each block's pre-softmax attention scores.

        Shapes:
            embeddings: (B, T, H); attention_mask: (B, T); last_hidden_state: (B, T, H).
        """
        if embeddings.size(-1) != self.config.hidden_size:
            raise ValueError(
                f"embeddings have size {embeddings.size(-1)} but the backbone's hidden_size is {self.config.hidden_size}"
            )
        attn_mask = None
        if attention_mask is not None:
            keep = attention_mask.bool()
            if not keep.all():
                attn_mask = keep[:, None, None, :]  # (B, 1, 1, T)
        x = embeddings
        hidden_states = [x] if output_hidden_states else None
        scores = [] if output_attention_scores else None
        for block in self.blocks:
            if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x, s = checkpoint(block, x, attn_mask, output_attention_scores, use_reentrant=False)
            else:
                x, s = block(x, attn_mask, output_attention_scores)
            if hidden_states is not None:
                hidden_states.append(x)
            if scores is not None:
                scores.append(s)
        return BackboneOutput(
            x,
            tuple(hidden_states) if hidden_states is not None else None,
            tuple(scores) if scores is not None else None,
        )


def init_bert_weights(module: nn.Module, std: float) -> None:
    """BERT's initialisation: N(0, std) weights, zero biases, unit LayerNorm; the padding row of an embedding is 0."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
