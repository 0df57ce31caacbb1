"""The adapter contract: the seam between a modality's data and the shared encoder.

An adapter is an ``nn.Module`` whose first constructor argument is the :class:`~multibert.core.config.BertConfig`
(further arguments are the adapter's own and come from YAML ``init_args``). Its ``forward`` receives the batch
object its datamodule yields (:mod:`multibert.core.batch`) and returns an :class:`AdapterOutput`:

- ``embeddings`` (B, T, H): the vectors the backbone encodes, already normalised and dropped out;
- ``attention_mask`` (B, T): True / 1 for real positions, False / 0 for padding;
- ``token_type_ids`` (B, T) or ``None``: kept for heads that need segment information.

If the adapter's inputs are tokens that a masked-LM objective should predict, ``output_embeddings()`` returns the
``nn.Embedding`` whose weight the MLM decoder ties to (V rows); adapters without a token vocabulary return
``None``.

Tasks receive an adapter as a factory (:data:`AdapterFactory`) so YAML names only the class and its own
options, and the shared sizes (hidden size, dropout, ...) flow from the one config::

    model:
      class_path: multibert.core.pretraining.PretrainingTask
      init_args:
        config: {hidden_size: 256, ...}
        adapter:
          class_path: my_package.my_adapter.MyAdapter   # any importable module; nothing in multibert changes
          init_args: {my_option: 3}
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, NamedTuple

import torch
from torch import nn

from multibert.core.config import BertConfig


class AdapterOutput(NamedTuple):
    """Shapes: embeddings (B, T, H); attention_mask (B, T); token_type_ids (B, T) or ``None``."""

    embeddings: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor | None = None


class Adapter(nn.Module, ABC):
    """Base class of all input adapters.

    Args:
        config: the encoder config; an adapter must produce vectors of ``config.hidden_size``.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config

    @abstractmethod
    def forward(self, batch: Any) -> AdapterOutput:
        """Embed one batch of this adapter's modality.

        Shapes:
            output.embeddings: (B, T, H); output.attention_mask: (B, T).
        """

    def output_embeddings(self) -> nn.Embedding | None:
        """The token embedding that a masked-LM decoder ties its weight to, or ``None``."""
        return None

    def check_compatible(self, other: "Adapter", source: str) -> None:
        """Raise when ``other`` (e.g. a distillation teacher's adapter, read from ``source``) does not read the same
        input ids as this adapter. The base compares token vocabularies; adapters with other inputs refine it."""
        ours, theirs = self.output_embeddings(), other.output_embeddings()
        if ours is not None and theirs is not None and ours.num_embeddings != theirs.num_embeddings:
            raise ValueError(
                f"{source} reads {theirs.num_embeddings} token ids, this model {ours.num_embeddings}: both read the "
                "same token ids; tokenize with the teacher's vocabulary (data.vocab_file)"
            )

    def check_length(self, T: int) -> None:
        """Fail early when a sequence is longer than the position table."""
        P = self.config.max_position_embeddings
        if T > P:
            raise ValueError(
                f"sequence of length {T} exceeds max_position_embeddings={P}; "
                "raise it in the config or lower data.max_seq_length"
            )


#: What tasks accept for their ``adapter`` argument: a callable that builds the adapter from the shared config.
AdapterFactory = Callable[[BertConfig], Adapter]
