"""The ``multibert`` command: LightningCLI's ``fit | validate | test | predict`` plus preparation commands.

Training commands take YAML configs (``-c``, repeatable) whose ``model`` and ``data`` are any LightningModule /
LightningDataModule named by ``class_path``. Values only the data knows (vocabulary size, number of visual words,
ontology size, label count) flow into the model through **model links**: a datamodule class declares

    model_links: ClassVar[dict[str, str]] = {"vocab_size": "config.vocab_size"}

mapping one of its attributes to a dotted init-argument path of the model (``adapter.init_args.codebook`` reaches
the adapter's own arguments). The CLI builds the datamodule, reads each source (a datamodule computes such values
on first read: the vocabulary is trained, the EHR table read, then, not in ``__init__``), fills each target the
chosen model has and only then builds the model; the filled value is saved with the checkpoint's hyperparameters.
Three rules: a source whose value is ``None`` links nothing; a target the model lacks is reported as a warning
(the value is not used); a value the user set explicitly in a config or flag is never overwritten — if it differs
from the data's, the command fails naming both. (Lightning's ``link_arguments`` would fail for every model class
that lacks the target; this variant lets one entry point serve every family.)

What else the command does around LightningCLI:

- **Initial weights decide unset sizes.** With ``model.init_args.init_from`` (a Hugging Face directory or hub id,
  or a ``.ckpt``), encoder sizes the configs and flags leave unset are read from the checkpoint, as
  ``from_pretrained`` does; a size set to another value is an error naming the flag.
- **Synthetic data is announced.** A datamodule that substituted synthetic data for data the user did not give sets
  ``synthetic_data`` (a one-line description, ``None`` otherwise); the command warns on stderr, and the run's
  ``config.yaml`` and checkpoints record it.
- **One folder per run.** The loggers of a run share one version number (``runs/NAME/version_N/`` holds
  ``config.yaml``, the TensorBoard and CSV logs, ``learning_curves.png`` and ``checkpoints/``), and
  ``--ckpt_path last`` resumes the newest run of the same config in its own folder (:mod:`multibert.commands.runs`);
  with nothing to resume it fails.
- **Checkpoints only load what they may.** Every ``--ckpt_path`` is read weights-only, and the classes it names
  are checked against the trusted modules before jsonargparse imports them.
- **test / validate / predict restore the data settings.** With ``--ckpt_path FILE``, the model and data settings
  the checkpoint was trained with come first; configs and flags given on the command line override them.
- **Readable output.** Logging is configured once (INFO for multibert's loggers, rank zero only; ``--verbosity
  warning`` or ``MULTIBERT_VERBOSITY=warning`` quiets it), upstream warnings users cannot act on are silenced, and
  an error multibert raises on purpose prints one line and exits with status 1 (``--debug`` or
  ``MULTIBERT_DEBUG=1`` shows the traceback). Called from Python as ``main([...])``, errors propagate.

Preparation commands (``multibert NAME --help``) are plain typed functions listed in :data:`PREP_COMMANDS`
(``text-prep`` tokenizes a text corpus once into litdata's streaming format for many nodes).
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# LightningCLI itself still calls jsonargparse APIs that warn about their deprecation; users cannot act on it
os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")

import lightning.pytorch as pl  # noqa: E402
import yaml  # noqa: E402
from jsonargparse import ArgumentParser, Namespace  # noqa: E402
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback  # noqa: E402
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger  # noqa: E402

from multibert.commands.links import apply_model_links, fill_sizes_from_init  # noqa: E402
from multibert.commands.output import (  # noqa: E402
    DELIBERATE,
    command_options,
    configure_logging,
    quiet_upstream_warnings,
    raised_by_us,
)
from multibert.commands.runs import find_last, next_version, read_run_config, run_folder_of, same_config  # noqa: E402
from multibert.core.callbacks import LearningCurves, ModelSummary  # noqa: E402
from multibert.core.checkpoint import MOVED, check_checkpoint_classes  # noqa: E402

log = logging.getLogger(__name__)

#: ``multibert NAME ...`` → ``"module:function"`` run through ``jsonargparse.CLI``.
PREP_COMMANDS: dict[str, str] = {
    "vocab": "datamodules.text.vocab:train_vocab",
    "text-prep": "datamodules.text.prepare:prepare_corpus",
    "export": "multibert.commands.export:export_checkpoint",
    "curves": "multibert.commands.curves:plot_curves",
    "configs": "multibert.commands.configs:Configs",
    "squad-eval": "multibert.commands.squad_eval:squad_eval",
    "augment": "multibert.commands.augment:augment_file",
    "gbert-prep": "datamodules.ehr.tables:prepare_ehr",
    "gbert-map": "multibert.commands.gbert_map:plot_code_map",
    "gbert-report": "multibert.commands.gbert_report:gbert_report",
    "make-synthetic-videos": "datamodules.video.synthetic:make_synthetic_videos",
    "tokenize-video": "multibert.video.tokenize:tokenize_video_command",
    "zeroshot-video": "multibert.commands.zeroshot_video:zeroshot_video",
    "video-montage": "multibert.video.montage:visual_word_montage",
}

# ------------------------------------------------------------------------------------------------- the CLI
class _SaveConfig(SaveConfigCallback):
    """Lightning's config saving, with comment lines on top of ``config.yaml`` (e.g. that the data is synthetic)."""

    def __init__(self, *args: Any, header: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header = header

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.header and trainer.log_dir:
            path = Path(trainer.log_dir) / self.config_filename
            if path.is_file():
                path.write_text(self.header + path.read_text(encoding="utf-8"), encoding="utf-8")


class MultiBertCLI(LightningCLI):
    """LightningCLI with subclass mode for model and data, data-decided model links, run folders, checked
    checkpoints and restored data settings (see the module docstring)."""

    _synthetic: str | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("save_config_callback", _SaveConfig)
        super().__init__(*args, **kwargs)

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> Any:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        # Trainer.fit / test / ... load --ckpt_path with torch.load's default, which allows code before torch 2.6
        if "weights_only" in {a.dest for a in parser._actions}:
            parser.set_defaults(weights_only=True)
        return parser

    def parse_arguments(self, parser: ArgumentParser, args: Any) -> None:
        if not isinstance(args, (dict, Namespace)):
            args = self._with_checkpoint_settings(list(sys.argv[1:] if args is None else args))
        super().parse_arguments(parser, args)
        # the values the user stated (configs and flags, no defaults): a model link never overwrites one of them
        if isinstance(args, (dict, Namespace)):
            self.explicit = parser.parse_object(args, defaults=False)
        else:
            self.explicit = parser.parse_args(args, defaults=False)

    def _with_checkpoint_settings(self, argv: list[str]) -> list[str]:
        """For ``validate`` / ``test`` / ``predict --ckpt_path FILE``: the model class and sizes and the data settings
        the checkpoint was trained with, as a first config that the given configs and flags override."""
        if not argv or argv[0] not in ("validate", "test", "predict"):
            return argv
        ckpt_path = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--ckpt_path"), None)
        ckpt_path = ckpt_path or next((a.partition("=")[2] for a in argv if a.startswith("--ckpt_path=")), None)
        if not ckpt_path or not Path(ckpt_path).is_file():
            return argv
        ckpt = check_checkpoint_classes(ckpt_path)
        hparams = ckpt.get("hyper_parameters", {})
        first: dict[str, Any] = {}
        if "_class_path" in hparams and isinstance(hparams.get("config"), dict):
            sizes = {k: v for k, v in hparams["config"].items() if k != "vocab_size"}  # the data decides it
            first["model"] = {"class_path": hparams["_class_path"], "init_args": {"config": sizes}}
        record = ckpt.get("multibert_run") or {}
        if isinstance(record.get("data"), dict) and "class_path" in record["data"]:
            first["data"] = record["data"]
            seed = (yaml.safe_load(record.get("config") or "{}") or {}).get("seed_everything")
            if seed is not None:
                first["seed_everything"] = seed
        if not first:
            return argv
        log.info("%s: the model and data settings it was trained with are the defaults of this %s", ckpt_path, argv[0])
        return [argv[0], "-c", yaml.safe_dump(first, sort_keys=False), *argv[1:]]

    def _parse_ckpt_path(self) -> None:
        sub = self.config.get("subcommand")
        ckpt_path = self.config[sub].get("ckpt_path") if sub else None
        if ckpt_path and Path(ckpt_path).is_file():
            # LightningCLI hands the checkpoint's hyperparameters to jsonargparse, which imports the classes they name
            check_checkpoint_classes(ckpt_path)
        super()._parse_ckpt_path()

    # ----------------------------------------------------------------- building
    def instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        explicit = self.explicit[self.subcommand] if self.subcommand else self.explicit
        datamodule = None
        if cfg.get("data") is not None and cfg.get("model") is not None:
            parser = ArgumentParser(exit_on_error=False)
            parser.add_subclass_arguments(pl.LightningDataModule, "data", fail_untyped=False)
            try:
                datamodule = parser.instantiate(parser.parse_object({"data": cfg.data.as_dict()})).data
            except ValueError as e:
                # jsonargparse wraps the datamodule's own error (missing file, bad field) in a type-union
                # message; the user needs the original one
                raise (e.__cause__ or e) from None
            apply_model_links(datamodule, cfg.model, explicit.get("model"))
            fill_sizes_from_init(cfg.model, explicit.get("model"))
            synthetic = getattr(datamodule, "synthetic_data", None)
            if synthetic:
                self._announce_synthetic(synthetic)
            # hand jsonargparse the datamodule built above instead of a second one; the config keeps its YAML form
            self.parser.add_instantiator(_Prebuilt(datamodule), pl.LightningDataModule, subclasses=True, prepend=True)
        super().instantiate_classes()
        if self.subcommand is None:
            return
        resume = self._resolve_checkpoint(cfg)
        self._assign_run_version(resume)
        if self.subcommand == "fit" and hasattr(self.model, "run_record"):
            self.model.run_record = self._run_record(cfg, datamodule)

    def _announce_synthetic(self, description: str) -> None:
        log.warning("SYNTHETIC DATA: %s. This run does not train on real data.", description)
        self.save_config_kwargs["header"] = f"# SYNTHETIC DATA: {description}\n"
        self._synthetic = description

    def _config_dump(self, cfg: Namespace) -> dict[str, Any]:
        return yaml.safe_load(self._parser(self.subcommand).dump(cfg, skip_none=False))

    def _log_roots(self) -> list[Path]:
        return [Path(lg.root_dir) for lg in self.trainer.loggers if isinstance(lg, (TensorBoardLogger, CSVLogger))]

    def _resolve_checkpoint(self, cfg: Namespace) -> Path | None:
        """Resolve ``--ckpt_path last`` (see :mod:`multibert.commands.runs`); return the run folder a ``fit``
        continues in, if it resumes one of this log folder's runs of the same config."""
        ckpt_path = cfg.get("ckpt_path")
        if not ckpt_path:
            return None
        roots = self._log_roots()
        if ckpt_path == "last":
            if not roots:
                raise ValueError("--ckpt_path last looks for the newest run in the logger's folder, but this run has no "
                                 "TensorBoard or CSV logger; give the checkpoint file")
            path, folder = find_last(roots[0], self._config_dump(cfg), self.subcommand)
            check_checkpoint_classes(path)
            log.info("--ckpt_path last: %s", path)
            self.config_init[self.subcommand]["ckpt_path"] = str(path)
            return folder if self.subcommand == "fit" else None
        if self.subcommand != "fit":
            return None
        folder = run_folder_of(Path(ckpt_path), roots)
        saved = read_run_config(folder) if folder is not None else None
        if saved is not None and same_config(saved, self._config_dump(cfg), ("model", "data")):
            return folder
        return None

    def _assign_run_version(self, resume: Path | None) -> None:
        """One version number for all the run's loggers: the resumed run's, or the next free one."""
        loggers = [lg for lg in self.trainer.loggers if isinstance(lg, (TensorBoardLogger, CSVLogger))]
        if not loggers or any(lg._version is not None for lg in loggers):
            return  # versions configured by hand
        if resume is not None:
            version = int(resume.name.rpartition("_")[2])
            log.info("resuming %s in its own folder", resume)
        else:
            version = next_version([Path(lg.root_dir) for lg in loggers])
        for lg in loggers:
            lg._version = version

    def _run_record(self, cfg: Namespace, datamodule: pl.LightningDataModule | None) -> dict[str, Any]:
        """What every checkpoint of this run records besides the weights: the data settings (``test`` /
        ``predict --ckpt_path`` restore them), the resolved config (the exported model card shows it) and whether
        the data was synthetic. Plain data, so that checkpoints load weights-only."""
        dumped = self._config_dump(cfg)
        return {
            "data": dumped.get("data"),
            "config": yaml.safe_dump(dumped, sort_keys=False),
            "synthetic_data": getattr(self, "_synthetic", None),
        }

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[pl.Callback]) -> pl.Trainer:
        callbacks = list(callbacks)
        configured = config.get("callbacks") or []
        configured = configured if isinstance(configured, list) else [configured]
        if config.get("enable_model_summary") is not False and not any(isinstance(c, pl.callbacks.ModelSummary) for c in configured):
            callbacks.append(ModelSummary())
        if self.subcommand == "fit" and not any(isinstance(c, LearningCurves) for c in configured):
            callbacks.append(LearningCurves())
        return super()._instantiate_trainer(config, callbacks)


class _Prebuilt:
    """A jsonargparse instantiator that returns an already built object of the requested class."""

    def __init__(self, instance: object) -> None:
        self.instance = instance

    def __call__(self, class_type: type, *args: object, **kwargs: object) -> object:
        if isinstance(self.instance, class_type):
            return self.instance
        return class_type(*args, **{k: v for k, v in kwargs.items() if k != "applied_instantiation_links"})


def _prep_help() -> str:
    return (
        "preparation commands: " + ", ".join(sorted(PREP_COMMANDS)) + " (multibert NAME --help). "
        "Options of every command: --verbosity {debug,info,warning,error} (or MULTIBERT_VERBOSITY), "
        "--debug (or MULTIBERT_DEBUG=1) for tracebacks"
    )


def check_moved_class_paths(argv: list[str]) -> None:
    """Refuse, with the new name, a config or flag that names a class by multibert's earlier module layout
    (``multibert.tasks.gbert.GBertRecommendTask`` is ``multibert.gbert.task.GBertRecommendTask`` now)."""
    sources = [("the command line", " ".join(argv))]
    for flag, value in zip(argv, argv[1:]):
        if flag in ("-c", "--config") and Path(value).is_file():
            sources.append((value, Path(value).read_text(encoding="utf-8", errors="replace")))
    for where, text in sources:
        for old, new in MOVED.items():
            found = re.search(rf"(?<![\w.]){re.escape(old)}\.([A-Z]\w*)", text)
            if found:
                raise ValueError(
                    f"{where} names {old}.{found[1]}, a class path of multibert's earlier layout; it is "
                    f"{new}.{found[1]} now (see the README's \"The picture\")"
                )


def run(argv: list[str]) -> None:
    """Run one ``multibert`` command line (without the program name); errors propagate."""
    if argv and argv[0] in PREP_COMMANDS:
        from jsonargparse import CLI

        module, _, name = PREP_COMMANDS[argv[0]].partition(":")
        function = getattr(importlib.import_module(module), name)
        CLI(function, args=argv[1:], prog=f"multibert {argv[0]}")
        return
    check_moved_class_paths(argv)
    MultiBertCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=argv,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"description": "multibert: BERT-family models beyond plain text. " + _prep_help()},
    )


def main(args: Sequence[str] | None = None) -> None:
    """The ``multibert`` command. From the command line (``args`` None), an error multibert raises on purpose
    prints one line and exits with status 1; with ``args`` (Python, tests) errors propagate."""
    argv, verbosity, debug = command_options(list(sys.argv[1:] if args is None else args))
    configure_logging(verbosity)
    quiet_upstream_warnings()
    try:
        run(argv)
    except DELIBERATE as e:
        if args is not None or debug or not raised_by_us(e):
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"multibert: error: {message}", file=sys.stderr)
        print("multibert: (--debug or MULTIBERT_DEBUG=1 shows the traceback)", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
