"""What every multibert task shares: the encoder built from a config and an adapter, loading initial weights
(a Hugging Face BERT directory or a multibert ``.ckpt``), BERT's optimiser (AdamW, no weight decay on biases and
LayerNorm) with linear warmup and linear decay, and export to Hugging Face format.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from multibert.adapters.base import Adapter, AdapterFactory
from multibert.adapters.text import TextAdapter
from multibert.config import BertConfig
from multibert.convert import check_architecture, hf_to_multibert, load_into, read_hf_checkpoint, save_hf_checkpoint
from multibert.model import Encoder

log = logging.getLogger(__name__)


def linear_warmup_decay(warmup_steps: int, total_steps: int):
    """LR multiplier: 0 → 1 linearly over ``warmup_steps``, then 1 → 0 linearly at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The model weights of a multibert / Lightning ``.ckpt`` (or a ``.safetensors`` / ``.pt`` state dict), loaded
    without running code (``weights_only=True`` / safetensors)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return obj.get("state_dict", obj) if isinstance(obj, dict) else obj


def resolve_adapter(adapter: AdapterFactory | dict | None) -> AdapterFactory:
    """The adapter factory: text by default; a ``{"class_path": ..., "init_args": {...}}`` dict (as stored in
    checkpoints) is imported and bound to its arguments."""
    if adapter is None:
        return TextAdapter
    if isinstance(adapter, dict):
        module, _, name = adapter["class_path"].rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        if not (isinstance(cls, type) and issubclass(cls, Adapter)):
            raise ValueError(f"adapter class_path {adapter['class_path']!r} is not a multibert Adapter")
        return functools.partial(cls, **adapter.get("init_args", {}))
    return adapter


def adapter_spec(adapter: AdapterFactory) -> dict | None:
    """A plain-data description of an adapter factory (class path and bound arguments), or None if it has none."""
    cls, kwargs = adapter, {}
    if isinstance(adapter, functools.partial):
        # a partial of the class itself, or jsonargparse's partial(instantiate, instantiator, cls, **init_args)
        cls = next((a for a in (adapter.func, *adapter.args) if isinstance(a, type)), None)
        kwargs = dict(adapter.keywords)
    if isinstance(cls, type):
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": kwargs}
    return None


class EncoderTask(pl.LightningModule):
    """Base LightningModule: an :class:`~multibert.model.Encoder` plus optimisation.

    Args:
        config: encoder sizes (``vocab_size`` is usually linked from the datamodule); a dict is accepted.
        adapter: the input adapter's class (``class_path`` + ``init_args`` in YAML, or such a dict); text by
            default.
        add_pooler: keep BERT's pooler.
        init_from: initial weights: a Hugging Face BERT directory or a multibert ``.ckpt``; loaded once when
            training / evaluation starts (``setup``), so a resumed run's own checkpoint takes precedence.
        lr: peak learning rate.
        weight_decay: AdamW decoupled weight decay on matrices (not on biases or LayerNorm).
        betas: AdamW betas.
        eps: AdamW epsilon (BERT used 1e-6).
        warmup_steps: linear warmup length in optimiser steps; a value in (0, 1) is a fraction of all steps.
        freeze: parameter-name prefixes to keep fixed, e.g. ``encoder.adapter.word_embeddings``.
    """

    def __init__(
        self,
        config: BertConfig,
        adapter: AdapterFactory | None = None,
        add_pooler: bool = True,
        init_from: str | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        warmup_steps: float = 10000,
        freeze: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        config = BertConfig(**config) if isinstance(config, dict) else config
        adapter = resolve_adapter(adapter)
        # plain values in the hyperparameters, so that checkpoints load with weights_only=True
        self.hparams["config"] = dataclasses.asdict(config)
        spec = adapter_spec(adapter)
        if spec is not None or not isinstance(self.hparams.get("adapter"), dict):  # keep the CLI's own record
            self.hparams["adapter"] = spec
        self.config = config
        self.encoder = Encoder(config, adapter(config), add_pooler=add_pooler)
        self.init_from = init_from
        self._init_loaded = False

    # ----------------------------------------------------------------- weights in and out
    def setup(self, stage: str) -> None:
        self.apply_freeze()
        if self.init_from and not self._init_loaded:
            self.load_pretrained(self.init_from)

    def apply_freeze(self) -> None:
        prefixes = tuple(self.hparams.get("freeze") or ())
        if not prefixes:
            return
        frozen = [n for n, p in self.named_parameters() if n.startswith(prefixes)]
        if not frozen:
            raise ValueError(f"freeze={list(prefixes)} matches no parameter; names look like {next(iter(dict(self.named_parameters())))}")
        for n, p in self.named_parameters():
            if n.startswith(prefixes):
                p.requires_grad_(False)

    def load_pretrained(self, path: str | Path) -> None:
        """Load initial weights from a Hugging Face BERT directory or a multibert checkpoint file."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(
                f"init_from {path} does not exist; give a Hugging Face BERT directory or a multibert .ckpt file"
            )
        if path.is_dir():
            theirs, state = read_hf_checkpoint(path)
            mapped, unused = hf_to_multibert(state, self.config.num_hidden_layers)
            extend = getattr(self.encoder.adapter, "extend_pretrained", None)
            if extend is not None:  # an adapter whose vocabulary extends the checkpoint's (VideoBERT's visual words)
                theirs, mapped = extend(theirs, mapped)
            check_architecture(self.config, theirs, str(path))
            missing = load_into(self, {k: v for k, v in mapped.items() if k in self.state_dict()}, str(path))
            skipped = sorted(set(mapped) - set(self.state_dict()))
            if unused or skipped:
                log.info("%s: %d checkpoint tensors not used by this task: %s", path, len(unused) + len(skipped), (unused + skipped)[:6])
        else:
            state = load_state_dict_file(path)
            own = self.state_dict()
            mapped = {k: v for k, v in state.items() if k in own}
            if not mapped:
                raise ValueError(f"{path}: no tensor matches this model's parameter names (e.g. {next(iter(own))})")
            missing = load_into(self, mapped, str(path))
        if missing:
            log.info("%s: %d tensors kept at their initial values: %s", path, len(missing), missing[:6])
        self._init_loaded = True

    def export_hf(self, directory: str | Path, vocab_file: str | Path | None = None) -> Path:
        """Write a Hugging Face BERT directory (``BertForPreTraining.from_pretrained`` loads it)."""
        return save_hf_checkpoint(self, self.config, directory, vocab_file)

    # ----------------------------------------------------------------- optimisation
    def optimizer_groups(self) -> list[dict[str, Any]]:
        """AdamW groups: matrices decay, vectors (biases, LayerNorm weights) do not, as in BERT."""
        decay, no_decay = [], []
        for p in self.parameters():  # each tied parameter once
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
        return [
            {"params": decay, "weight_decay": self.hparams.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(
            self.optimizer_groups(),
            lr=self.hparams.lr,
            betas=tuple(self.hparams.betas),
            eps=self.hparams.eps,
        )
        total = int(self.trainer.estimated_stepping_batches)
        warmup = self.hparams.warmup_steps
        warmup = int(warmup * total) if 0 < warmup < 1 else int(warmup)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(warmup, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ----------------------------------------------------------------- one step for train / val / test
    def shared_step(self, batch: Any, stage: str) -> torch.Tensor:
        """The loss of one batch, logging ``{stage}/...`` metrics; stage is ``train``, ``val`` or ``test``."""
        raise NotImplementedError(f"{type(self).__name__} must implement shared_step(batch, stage)")

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.log_lr()
        return self.shared_step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.shared_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.shared_step(batch, "test")

    def log_lr(self) -> None:
        if self._trainer is not None and self.trainer.optimizers:
            self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False, prog_bar=False)
