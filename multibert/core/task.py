"""What every multibert task shares: the encoder built from a config and an adapter, loading initial weights
(a Hugging Face BERT directory or a multibert ``.ckpt``), BERT's optimiser groups handed to whatever optimiser and
schedule the config names (:mod:`multibert.core.optim`), one step for train / val / test, and export to Hugging Face
format.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from multibert.core.adapter import Adapter, AdapterFactory
from multibert.core.checkpoint import (
    check_class_path,
    from_spec,
    import_class,
    load_state_dict_file,
    read_checkpoint,
    to_spec,
)
from multibert.core.config import BertConfig
from multibert.core.convert import (
    check_architecture,
    hf_to_multibert,
    load_into,
    read_hf_checkpoint,
    save_hf_checkpoint,
)
from multibert.core.encoder import Encoder
from multibert.core.optim import AdamW, LinearWarmupDecay, build_scheduler, parameter_groups
from multibert.core.text_adapter import TextAdapter

log = logging.getLogger(__name__)


class EncoderTask(pl.LightningModule):
    """Base LightningModule: an :class:`~multibert.core.encoder.Encoder` plus optimisation.

    Args:
        config: encoder sizes (``vocab_size`` is usually linked from the datamodule); a dict is accepted.
        adapter: the input adapter's class (``class_path`` + ``init_args`` in YAML, or such a dict); text by
            default.
        init_from: initial weights: a Hugging Face BERT directory or a multibert ``.ckpt``; loaded once when
            training / evaluation starts (``setup``), so a resumed run's own checkpoint takes precedence.
        freeze: parameter-name prefixes to keep fixed, e.g. ``encoder.adapter.word_embeddings``.
        optimizer: the optimiser class and its arguments (``--model.optimizer``); it receives BERT's two parameter
            groups (:func:`~multibert.core.optim.parameter_groups`). Default: BERT's AdamW.
        lr_scheduler: the schedule, stepped every optimiser step; one that takes ``total_steps`` gets the trainer's
            estimate. ``None``: a constant learning rate. Default: BERT's linear warmup and decay.

    Subclasses take their own arguments and pass ``**kwargs`` on, so these are declared here only (LightningCLI
    reads them through the ``**kwargs``).
    """

    #: whether the encoder has BERT's pooler (the pooled [CLS] that NSP and sequence classifiers read)
    add_pooler: ClassVar[bool] = True

    def __init__(
        self,
        config: BertConfig,
        adapter: AdapterFactory | None = None,
        init_from: str | None = None,
        freeze: list[str] | None = None,
        optimizer: OptimizerCallable = AdamW,
        lr_scheduler: LRSchedulerCallable | None = LinearWarmupDecay,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        config = BertConfig(**config) if isinstance(config, dict) else config
        adapter = from_spec(adapter, Adapter, "model.adapter") or TextAdapter
        self.optimizer_factory = from_spec(optimizer, torch.optim.Optimizer, "model.optimizer")
        self.scheduler_factory = from_spec(lr_scheduler, torch.optim.lr_scheduler.LRScheduler, "model.lr_scheduler")
        # plain values in the hyperparameters, so that checkpoints load with weights_only=True; a record the CLI
        # stored ({class_path, init_args} as configured) is kept as it is
        self.hparams["config"] = dataclasses.asdict(config)
        for name, factory in (("adapter", adapter), ("optimizer", self.optimizer_factory), ("lr_scheduler", self.scheduler_factory)):
            if not isinstance(self.hparams.get(name), dict):
                self.hparams[name] = to_spec(factory)
        self.config = config
        # a task whose config decides the pooler (distillation) has it as an argument; the others as a class fact
        self.encoder = Encoder(config, adapter(config), add_pooler=self.hparams.get("add_pooler", self.add_pooler))
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

    @staticmethod
    def from_checkpoint(checkpoint: str | Path) -> "EncoderTask":
        """Rebuild whatever task a multibert ``.ckpt`` was trained with, loading with ``weights_only=True``.

        The class the checkpoint names must be a trusted :class:`EncoderTask` subclass
        (:func:`~multibert.core.checkpoint.check_class_path`), checked before it is imported.
        """
        ckpt = read_checkpoint(checkpoint)
        hparams = ckpt.get("hyper_parameters", {})
        class_path = hparams.get("_class_path")
        if class_path is None:
            raise ValueError(f"{checkpoint} records no model class (_class_path); was it written by `multibert fit`?")
        cls = import_class(class_path, str(checkpoint))
        if not issubclass(cls, EncoderTask):
            raise ValueError(f"{checkpoint}: {class_path} is not a multibert EncoderTask")
        for name in ("adapter", "optimizer", "lr_scheduler"):
            if isinstance(hparams.get(name), dict) and "class_path" in hparams[name]:
                check_class_path(hparams[name]["class_path"], f"{checkpoint} (model.{name})")
        return cls.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)

    # ----------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> Any:
        """The configured optimiser over BERT's decay / no-decay groups, and the schedule stepped every step."""
        optimizer = self.optimizer_factory(parameter_groups(self))
        if self.scheduler_factory is None:
            return optimizer
        scheduler = build_scheduler(self.scheduler_factory, optimizer, self.trainer.estimated_stepping_batches)
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
