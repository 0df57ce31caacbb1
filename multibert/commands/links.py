"""Values the data or the initial weights decide, filled into the model's arguments before it is built (see
:mod:`multibert.cli`): the datamodule's ``model_links`` and the encoder sizes a Hugging Face ``init_from`` states."""

from __future__ import annotations

import logging

import lightning.pytorch as pl
from jsonargparse import Namespace

from multibert.core.convert import ARCHITECTURE_FIELDS

log = logging.getLogger(__name__)


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


def fill_sizes_from_init(model_cfg: Namespace, explicit: Namespace | None = None) -> dict[str, object]:
    """With ``init_from``, copy the checkpoint's encoder sizes into the config fields nobody set (as
    ``from_pretrained`` does); a field set to another value is an error naming the flag. ``vocab_size`` is the
    data's to decide (a model link), so it is left to the architecture check when the weights load."""
    init_args = model_cfg.get("init_args")
    source = init_args.get("init_from") if isinstance(init_args, Namespace) else None
    config = init_args.get("config") if source else None
    if not source or not isinstance(config, Namespace) or init_args.get("init_partial"):
        return {}
    from multibert.core.hub import pretrained_config

    theirs = pretrained_config(source)
    stated = explicit.get("init_args.config") if isinstance(explicit, Namespace) else None
    filled, conflicts = {}, []
    for name in ARCHITECTURE_FIELDS:
        if name == "vocab_size" or name not in config:
            continue
        value = getattr(theirs, name)
        given = stated.get(name) if isinstance(stated, Namespace) else None
        if given is not None and given != value:
            conflicts.append(f"--model.init_args.config.{name}={given!r} (the checkpoint has {value!r})")
        elif config[name] != value:
            config[name] = value
            filled[name] = value
    if conflicts:
        raise ValueError(
            f"init_from {source} does not match the sizes set in the config: {'; '.join(conflicts)}; remove those "
            "settings (the checkpoint's are used) or set model.init_args.init_partial: true to load what fits"
        )
    if filled:
        log.info("init_from %s: sizes read from the checkpoint: %s", source, filled)
    return filled


def _short(value: object) -> str:
    """A value for an error message: lists by their length and first items."""
    if isinstance(value, (list, tuple)) and len(value) > 4:
        return f"[{', '.join(map(repr, value[:3]))}, ...] ({len(value)} items)"
    return repr(value)
