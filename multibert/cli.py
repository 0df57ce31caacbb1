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

Preparation commands (``multibert NAME --help``) are plain typed functions listed in :data:`PREP_COMMANDS`.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

# LightningCLI itself still calls jsonargparse APIs that warn about their deprecation; users cannot act on it
os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")

import lightning.pytorch as pl  # noqa: E402
from jsonargparse import ArgumentParser, Namespace  # noqa: E402
from lightning.pytorch.cli import LightningCLI  # noqa: E402

log = logging.getLogger(__name__)

#: ``multibert NAME ...`` → ``"module:function"`` run through ``jsonargparse.CLI``.
PREP_COMMANDS: dict[str, str] = {
    "vocab": "datamodules.text.corpus:train_vocab",
    "export": "multibert.commands.export:export_checkpoint",
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


class MultiBertCLI(LightningCLI):
    """LightningCLI with subclass mode for model and data and data-decided model links."""

    def parse_arguments(self, parser: ArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        # the values the user stated (configs and flags, no defaults): a model link never overwrites one of them
        if isinstance(args, (dict, Namespace)):
            self.explicit = parser.parse_object(args, defaults=False)
        else:
            self.explicit = parser.parse_args(args, defaults=False)

    def instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        if cfg.get("data") is not None and cfg.get("model") is not None:
            parser = ArgumentParser(exit_on_error=False)
            parser.add_subclass_arguments(pl.LightningDataModule, "data", fail_untyped=False)
            try:
                datamodule = parser.instantiate(parser.parse_object({"data": cfg.data.as_dict()})).data
            except ValueError as e:
                # jsonargparse wraps the datamodule's own error (missing file, bad field) in a type-union
                # message; the user needs the original one
                raise (e.__cause__ or e) from None
            explicit = self.explicit[self.subcommand] if self.subcommand else self.explicit
            apply_model_links(datamodule, cfg.model, explicit.get("model"))
            # hand jsonargparse the datamodule built above instead of a second one; the config keeps its YAML form
            self.parser.add_instantiator(_Prebuilt(datamodule), pl.LightningDataModule, subclasses=True, prepend=True)
        super().instantiate_classes()


class _Prebuilt:
    """A jsonargparse instantiator that returns an already built object of the requested class."""

    def __init__(self, instance: object) -> None:
        self.instance = instance

    def __call__(self, class_type: type, *args: object, **kwargs: object) -> object:
        if isinstance(self.instance, class_type):
            return self.instance
        return class_type(*args, **{k: v for k, v in kwargs.items() if k != "applied_instantiation_links"})


def apply_model_links(
    datamodule: pl.LightningDataModule, model_cfg: Namespace, explicit: Namespace | None = None
) -> dict[str, object]:
    """Copy each ``datamodule.model_links`` source into the model's init args (see the module docstring).

    Args:
        datamodule: the built datamodule.
        model_cfg: the model's config (``class_path`` + ``init_args``), filled in place.
        explicit: the part of ``model_cfg`` the user stated; a linked value never overwrites one of them.

    Returns:
        the targets filled, with their values.
    """
    applied: dict[str, object] = {}
    init_args = model_cfg.get("init_args")
    stated = explicit.get("init_args") if isinstance(explicit, Namespace) else None
    data_name = type(datamodule).__name__
    for source, target in getattr(datamodule, "model_links", {}).items():
        value = getattr(datamodule, source)
        if value is None:
            continue
        head, _, leaf = target.rpartition(".")
        node = (init_args.get(head) if head else init_args) if init_args is not None else None
        if not (isinstance(node, Namespace) and leaf in node):
            log.warning(
                "%s links data.%s to model.init_args.%s, but %s has no such argument: the value is not used",
                data_name, source, target, model_cfg.get("class_path"),
            )
            continue
        given = stated.get(target) if isinstance(stated, Namespace) else None
        if given is not None and given != value:
            raise ValueError(
                f"model.init_args.{target} is set to {_short(given)} in the config, but the data decides "
                f"{_short(value)} ({data_name}.{source}); remove model.init_args.{target} from the config (the "
                "data fills it) or change the data"
            )
        node[leaf] = value
        applied[target] = value
    return applied


def _short(value: object) -> str:
    """A value for an error message: lists by their length and first items."""
    if isinstance(value, (list, tuple)) and len(value) > 4:
        return f"[{', '.join(map(repr, value[:3]))}, ...] ({len(value)} items)"
    return repr(value)


def _prep_help() -> str:
    return "preparation commands: " + ", ".join(sorted(PREP_COMMANDS)) + " (multibert NAME --help)"


def main(args: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in PREP_COMMANDS:
        from jsonargparse import CLI

        module, _, name = PREP_COMMANDS[argv[0]].partition(":")
        function = getattr(importlib.import_module(module), name)
        CLI(function, args=argv[1:], prog=f"multibert {argv[0]}")
        return
    MultiBertCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=None if args is None else argv,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"description": "multibert: BERT-family models beyond plain text. " + _prep_help()},
    )


if __name__ == "__main__":
    main()
