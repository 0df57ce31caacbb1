"""What every multibert task shares: the encoder built from a config and an adapter, loading initial weights
(a Hugging Face BERT directory or hub id, or a multibert ``.ckpt``) with the same architecture and vocabulary checks
for both, BERT's optimiser groups handed to whatever optimiser and schedule the config names
(:mod:`multibert.core.optim`), one step for train / val / test, checkpoints that only load what they may, and
export to Hugging Face format.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from safetensors.torch import load_file

from multibert.core.adapter import Adapter, AdapterFactory
from multibert.core.checkpoint import (
    RUN_KEY,
    check_checkpoint_classes,
    checkpoint_vocab,
    from_spec,
    import_class,
    read_checkpoint,
    to_spec,
)
from multibert.core.config import BertConfig
from multibert.core.convert import (
    architecture_differences,
    check_architecture,
    hf_to_multibert,
    load_into,
    read_hf_checkpoint,
    save_hf_checkpoint,
)
from multibert.core.encoder import Encoder
from multibert.core.hub import resolve_pretrained
from multibert.core.optim import AdamW, LinearWarmupDecay, build_scheduler, parameter_groups
from multibert.core.text_adapter import TextAdapter

log = logging.getLogger(__name__)


class EncoderTask(pl.LightningModule):
    """Base LightningModule: an :class:`~multibert.core.encoder.Encoder` plus optimisation.

    Args:
        config: encoder sizes (``vocab_size`` is usually linked from the datamodule); a dict is accepted.
        adapter: the input adapter's class (``class_path`` + ``init_args`` in YAML, or such a dict); text by
            default.
        init_from: initial weights: a Hugging Face BERT directory, a Hugging Face hub id (through
            ``huggingface_hub``'s cache) or a multibert ``.ckpt``; loaded once when training / evaluation starts
            (``setup``), so a resumed run's own checkpoint takes precedence. Its architecture and vocabulary must
            match this model's (an error names each field that differs).
        init_partial: load only the tensors of ``init_from`` whose names and shapes match, even when the
            architecture differs; the tensors left at their initial values are listed in a warning.
        freeze: parameter-name prefixes to keep fixed, e.g. ``encoder.adapter.word_embeddings``.
        optimizer: the optimiser class and its arguments (``--model.optimizer``); it receives BERT's two parameter
            groups (:func:`~multibert.core.optim.parameter_groups`). ``None`` (default): BERT's AdamW
            (:class:`~multibert.core.optim.AdamW`). (Not AdamW as the default value itself: jsonargparse would carry
            its eps and weight decay into another class a config names, e.g. L2 decay 0.01 into ``torch.optim.Adam``
            — jsonargparse issue 460.)
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
        init_partial: bool = False,
        freeze: list[str] | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = LinearWarmupDecay,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        config = BertConfig(**config) if isinstance(config, dict) else config
        adapter = from_spec(adapter, Adapter, "model.adapter") or TextAdapter
        self.optimizer_factory = from_spec(optimizer or AdamW, torch.optim.Optimizer, "model.optimizer")
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
        self.init_partial = init_partial
        self._init_loaded = False
        #: what the command that built this task records in every checkpoint (the data settings, the run's config)
        self.run_record: dict[str, Any] | None = None

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

    def load_pretrained(self, source: str | Path) -> None:
        """Load initial weights from a Hugging Face BERT directory or hub id, or a multibert checkpoint file.

        The architecture must match (``check_architecture``: each differing field named with both values) and so
        must the vocabulary when the data's is known (same size, different tokens is an error too); with
        ``init_partial`` only the tensors whose names and shapes match are loaded and the rest is listed.
        """
        path = resolve_pretrained(source)
        partial = self.hparams.get("init_partial", False)
        if path.is_dir():
            theirs, state = read_hf_checkpoint(path)
            mapped, unused = hf_to_multibert(state, self.config.num_hidden_layers)
            extend = getattr(self.encoder.adapter, "extend_pretrained", None)
            if extend is not None:  # an adapter whose vocabulary extends the checkpoint's (VideoBERT's visual words)
                theirs, mapped = extend(theirs, mapped)
            vocab_file = path / "vocab.txt"
            their_vocab = vocab_file.read_text(encoding="utf-8") if vocab_file.is_file() else None
            vocab_hint = f"tokenize with the checkpoint's vocabulary (--data.vocab_file {path}/vocab.txt)"
        else:
            ckpt = load_file(path) if path.suffix == ".safetensors" else read_checkpoint(path)
            config = ckpt.get("hyper_parameters", {}).get("config") if "state_dict" in ckpt else None
            # a bare state dict (.safetensors, .pt) records no sizes: only the tensor shapes are checked then
            theirs = BertConfig(**config) if isinstance(config, dict) else None
            mapped, unused = ckpt.get("state_dict", ckpt), []
            their_vocab = checkpoint_vocab(ckpt) if "state_dict" in ckpt else None
            vocab_hint = f"tokenize with the checkpoint's vocabulary (`multibert export --checkpoint {path} --out DIR`, then --data.vocab_file DIR/vocab.txt)"
        diffs = architecture_differences(self.config, theirs) if theirs is not None else {}
        if partial and diffs:
            log.warning("init_from %s (init_partial): architecture differs (%s); loading the tensors that fit", path,
                        ", ".join(f"{k}: {a} here, {b} there" for k, (a, b) in diffs.items()))
        else:
            if theirs is not None:
                check_architecture(self.config, theirs, str(path), vocab_hint)
            self._check_vocabulary(their_vocab, str(path), vocab_hint)
        own = self.state_dict()
        usable = {k: v for k, v in mapped.items() if k in own}
        if not usable:
            raise ValueError(f"init_from {path}: no tensor matches this model's parameter names (e.g. {next(iter(own))})")
        missing = load_into(self, usable, str(path), partial=partial)
        unused = unused + sorted(set(mapped) - set(own))
        if unused:
            log.info("init_from %s: %d checkpoint tensors not used by this task: %s", path, len(unused), describe_keys(unused))
        if missing:
            (log.warning if partial else log.info)(
                "init_from %s: %d tensors kept at their initial values: %s", path, len(missing), describe_keys(missing)
            )
        self._init_loaded = True

    def _check_vocabulary(self, their_vocab: str | None, source: str, hint: str) -> None:
        """Same size but other tokens is as wrong as another size: compare with the data's vocabulary file."""
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        ours_path = getattr(datamodule, "vocab_path", None)
        if their_vocab is None or ours_path is None or not Path(ours_path).is_file():
            return
        theirs, ours = their_vocab.splitlines(), Path(ours_path).read_text(encoding="utf-8").splitlines()
        if len(theirs) != len(ours) or theirs == ours:
            return  # a size difference is an architecture difference, reported already (or extended, for video)
        i = next(i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b)
        raise ValueError(
            f"init_from {source}: its vocabulary differs from the data's ({ours_path}) although both have "
            f"{len(ours)} tokens: id {i} is {theirs[i]!r} there and {ours[i]!r} here; {hint}"
        )

    def export_hf(
        self, directory: str | Path, vocab_file: str | Path | None = None, lowercase: bool = True, model_card: str | None = None
    ) -> Path:
        """Write a Hugging Face BERT directory (``BertForPreTraining`` and ``AutoTokenizer`` load it)."""
        return save_hf_checkpoint(self, self.config, directory, vocab_file, lowercase, model_card)

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.run_record is not None:
            checkpoint[RUN_KEY] = self.run_record

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of another architecture with the project's message (before the state dict load
        would fail on a tensor's size)."""
        saved = checkpoint.get("hyper_parameters", {}).get("config")
        if not isinstance(saved, dict):
            return
        diffs = architecture_differences(self.config, BertConfig(**saved))
        if not diffs:
            return
        source = getattr(self._trainer, "ckpt_path", None) if self._trainer is not None else None
        parts = "; ".join(f"{k}: the checkpoint has {b!r}, this run {a!r}" for k, (a, b) in diffs.items())
        hint = (
            "the data gives a different vocabulary: use the data settings the checkpoint was trained with (the same "
            "data.vocab_file, or the same training files and vocabulary size)"
            if "vocab_size" in diffs
            else "use the model settings the checkpoint was trained with"
        )
        raise ValueError(f"checkpoint {source or ''} does not fit this model ({parts}); {hint}; {self.rerun_hint()}")

    def rerun_hint(self) -> str:
        """How to rerun the current command with the settings the checkpoint was trained with."""
        trainer = self._trainer
        fn = trainer.state.fn.value if trainer is not None and getattr(trainer.state, "fn", None) else "test"
        ckpt = (getattr(trainer, "ckpt_path", None) if trainer is not None else None) or "CKPT"
        run_config = Path(ckpt).parent.parent / "config.yaml"
        hint = f"`multibert {fn} -c {run_config} --ckpt_path {ckpt}` (the run's config)" if run_config.is_file() else ""
        if fn == "fit":
            return "resume with the run's config: " + (hint or f"`multibert fit -c RUN_FOLDER/config.yaml --ckpt_path {ckpt}`")
        restored = f"`multibert {fn} --ckpt_path {ckpt}` with no data config or data flags (the training data settings are restored from the checkpoint)"
        return f"run {restored}" + (f", or {hint}" if hint else "")

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Any:
        """Lightning's ``load_from_checkpoint``, weights-only by default, after checking that every class the
        checkpoint names (its ``_instantiator``, ``_class_path``, adapter, optimiser, ...) is trusted: Lightning and
        jsonargparse would import them before ``__init__`` runs."""
        if isinstance(checkpoint_path, (str, Path)) and not str(checkpoint_path).startswith(("http://", "https://")):
            check_checkpoint_classes(checkpoint_path)
        elif hasattr(checkpoint_path, "read") and hasattr(checkpoint_path, "seek"):  # a file object
            position = checkpoint_path.tell()
            check_checkpoint_classes(torch.load(checkpoint_path, map_location="cpu", weights_only=True), "the checkpoint")
            checkpoint_path.seek(position)
        else:
            raise ValueError(f"load_from_checkpoint: give a local path or a file object, not {checkpoint_path!r}")
        kwargs.setdefault("weights_only", True)
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    @staticmethod
    def from_checkpoint(checkpoint: str | Path) -> EncoderTask:
        """Rebuild whatever task a multibert ``.ckpt`` was trained with, loading with ``weights_only=True``.

        The classes the checkpoint names must be trusted (:func:`~multibert.core.checkpoint.check_class_path`),
        which is checked before any is imported.
        """
        ckpt = check_checkpoint_classes(checkpoint)
        class_path = ckpt.get("hyper_parameters", {}).get("_class_path")
        if class_path is None:
            raise ValueError(f"{checkpoint} records no model class (_class_path); was it written by `multibert fit`?")
        cls = import_class(class_path, str(checkpoint))
        if not issubclass(cls, EncoderTask):
            raise ValueError(f"{checkpoint}: {class_path} is not a multibert EncoderTask")
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

    def log_metric(
        self, name: str, value: torch.Tensor, batch_size: int, prog_bar: bool = False, add_dataloader_idx: bool = True,
    ) -> None:
        """Log ``stage/...`` the one way every task does: epoch means averaged over ranks under DDP; training also
        logs ``NAME_step``, this rank's value, with no collective per step (a rank whose batch lacks an objective's
        labels logs nothing for it at that step, and a per-step all-reduce would wait for it forever).
        ``add_dataloader_idx=False``: several validation loaders log one name (G-BERT validates both its tasks)."""
        common = {"batch_size": batch_size, "add_dataloader_idx": add_dataloader_idx}
        if name.startswith("train/"):
            self.log(f"{name}_step", value, prog_bar=prog_bar, on_step=True, on_epoch=False, **common)
            self.log(f"{name}_epoch", value, on_step=False, on_epoch=True, sync_dist=True, **common)
        else:
            self.log(name, value, prog_bar=prog_bar, on_step=False, on_epoch=True, sync_dist=True, **common)

    def log_lr(self) -> None:
        if self._trainer is not None and self.trainer.optimizers:
            self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False, prog_bar=False)


def describe_keys(keys: list[str], limit: int = 12) -> str:
    """Parameter names grouped by module (a transformer block counts as one), e.g.
    ``encoder.backbone.blocks.2 (12 tensors), head.classifier (2 tensors)``."""
    groups: dict[str, int] = {}
    for key in keys:
        parts = key.split(".")
        cut = next((i + 2 for i, p in enumerate(parts) if p == "blocks" and i + 1 < len(parts)), len(parts) - 1)
        prefix = ".".join(parts[: max(cut, 1)])
        groups[prefix] = groups.get(prefix, 0) + 1
    items = [f"{p} ({n} tensor{'s' if n > 1 else ''})" for p, n in groups.items()]
    return ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more modules)" if len(items) > limit else "")
