"""The ``multibert`` command: LightningCLI's ``fit | validate | test | predict`` plus preparation commands.

Training commands take YAML configs (``-c``, repeatable) whose ``model`` and ``data`` are any LightningModule /
LightningDataModule named by ``class_path``. Values only the data knows (vocabulary size, number of visual words,
ontology size, label count) flow into the model through **model links**: a datamodule class declares

    model_links: ClassVar[dict[str, str]] = {"vocab_size": "config.vocab_size"}

mapping one of its attributes (set in ``__init__``) to a dotted init-argument path of the model; the CLI fills
each target the chosen model has, after building the datamodule and before building the model, and the filled
value is saved with the checkpoint's hyperparameters. (Lightning's ``link_arguments`` would fail for every model
class that lacks the target; this variant lets one entry point serve every family.)

Preparation commands (``multibert NAME --help``) are plain typed functions listed in :data:`PREP_COMMANDS`.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

# LightningCLI itself still calls jsonargparse APIs that warn about their deprecation; users cannot act on it
os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")

import lightning.pytorch as pl  # noqa: E402
from jsonargparse import ArgumentParser, Namespace  # noqa: E402
from lightning.pytorch.cli import LightningCLI  # noqa: E402

#: ``multibert NAME ...`` → ``"module:function"`` run through ``jsonargparse.CLI``.
PREP_COMMANDS: dict[str, str] = {
    "vocab": "datamodules.tokenizer:train_vocab",
    "export": "multibert.export:export_checkpoint",
    "squad-eval": "multibert.tasks.qa:squad_eval",
    "augment": "datamodules.augment:augment_file",
    "gbert-prep": "datamodules.ehr_io:prepare_ehr",
    "gbert-map": "multibert.gbert_map:plot_code_map",
    "make-synthetic-videos": "datamodules.synthetic.video:make_synthetic_videos",
    "tokenize-video": "multibert.video.tokenize:tokenize_video_command",
    "zeroshot-video": "multibert.video.zeroshot:zeroshot_video",
    "video-montage": "multibert.video.montage:visual_word_montage",
}


class MultiBertCLI(LightningCLI):
    """LightningCLI with subclass mode for model and data and data-decided model links."""

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
            apply_model_links(datamodule, cfg.model)
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


def apply_model_links(datamodule: pl.LightningDataModule, model_cfg: Namespace) -> dict[str, object]:
    """Copy each ``datamodule.model_links`` source into the model's init args where the target exists."""
    applied = {}
    init_args = model_cfg.get("init_args")
    if init_args is None:
        return applied
    for source, target in getattr(datamodule, "model_links", {}).items():
        head, _, leaf = target.rpartition(".")
        node = init_args.get(head) if head else init_args
        if isinstance(node, Namespace) and leaf in node:
            node[leaf] = getattr(datamodule, source)
            applied[target] = node[leaf]
    return applied


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
