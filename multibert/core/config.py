"""The encoder configuration, spelled with Hugging Face ``BertConfig`` field names.

Named presets are data (:data:`PRESETS`); tuned recipes live in YAML under ``configs/``. Derived values are
computed and validated in ``__post_init__`` so a bad config fails when it is built, not deep inside a forward.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

#: Field values for the named sizes. tiny/mini/small follow Turc et al. 2019 ("Well-Read Students Learn Better"),
#: base/large follow Devlin et al. 2019.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512),
    "mini": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "small": dict(hidden_size=512, num_hidden_layers=4, num_attention_heads=8, intermediate_size=2048),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}

_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish")


@dataclass
class BertConfig:
    """Sizes and regularisation of a BERT encoder.

    Args:
        vocab_size: rows of the input (and tied output) embedding; usually linked from the datamodule.
        hidden_size: H.
        num_hidden_layers: number of transformer blocks.
        num_attention_heads: nh; must divide ``hidden_size``.
        intermediate_size: width of the feed-forward layer.
        hidden_act: feed-forward activation (``gelu`` is the exact erf form BERT uses).
        hidden_dropout_prob: dropout on embeddings and on every residual branch.
        attention_probs_dropout_prob: dropout on attention probabilities.
        max_position_embeddings: longest sequence the position table covers.
        type_vocab_size: number of segment (token type) embeddings.
        layer_norm_eps: LayerNorm epsilon (1e-12 in the original BERT).
        initializer_range: std of the truncated-normal weight init.
        pad_token_id: id of ``[PAD]``; its embedding row is zero at init.
        gradient_checkpointing: recompute each block's activations in backward to save memory.
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}"
            )
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"hidden_act={self.hidden_act!r} is not one of {_ACTIVATIONS}")
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size", "max_position_embeddings"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def head_size(self) -> int:
        """hs = H // nh."""
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "BertConfig":
        """A preset (``tiny``, ``mini``, ``small``, ``base``, ``large``) with optional field overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def from_hf_dict(cls, hf: dict[str, Any]) -> "BertConfig":
        """Build from a Hugging Face ``config.json`` dict, keeping the fields this encoder understands."""
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(
                f"position_embedding_type={hf['position_embedding_type']!r} is not supported; only 'absolute' is"
            )
        names = {f.name for f in dataclasses.fields(cls)} - {"gradient_checkpointing"}
        return cls(**{k: v for k, v in hf.items() if k in names})

    def to_hf_dict(self) -> dict[str, Any]:
        """The ``config.json`` contents of an equivalent Hugging Face ``BertForPreTraining``."""
        fields = dataclasses.asdict(self)
        fields.pop("gradient_checkpointing")
        return {
            "architectures": ["BertForPreTraining"],
            "model_type": "bert",
            "position_embedding_type": "absolute",
            **fields,
        }
