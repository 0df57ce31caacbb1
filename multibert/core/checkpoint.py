"""Checkpoints as plain data: weights-only loading, and the ``{class_path, init_args}`` records that name the
classes a task was built from (its adapter, optimiser and scheduler).

A checkpoint loads with ``torch.load(weights_only=True)``, which runs no code; the classes it names are imported
only after :func:`check_class_path` accepts them. Class paths of multibert's earlier layout (before the layers of
:mod:`multibert`) are translated by :data:`MOVED`, so older checkpoints and configs keep loading.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from multibert.core.optim import callable_class

log = logging.getLogger(__name__)

#: Modules moved when multibert took its layered layout: old dotted prefix → new one (longest prefix wins).
MOVED: dict[str, str] = {
    "multibert.adapters.base": "multibert.core.adapter",
    "multibert.adapters.text": "multibert.core.text_adapter",
    "multibert.adapters.video": "multibert.video.adapter",
    "multibert.adapters.ontology": "multibert.gbert.adapter",
    "multibert.tasks.base": "multibert.core.task",
    "multibert.tasks.pretraining": "multibert.core.pretraining",
    "multibert.tasks.gbert": "multibert.gbert.task",
    "multibert.tasks.classification": "multibert.finetune.classification",
    "multibert.tasks.qa": "multibert.finetune.qa",
    "multibert.tasks.tokens": "multibert.finetune.tokens",
    "multibert.tasks.distillation": "multibert.distill.task",
    "datamodules.text": "datamodules.text.datamodule",
    "datamodules.video": "datamodules.video.datamodule",
    "datamodules.ehr": "datamodules.ehr.datamodule",
    "datamodules.labels": "datamodules.finetune.labels",
    "datamodules.squad": "datamodules.finetune.squad",
    "datamodules.conll": "datamodules.finetune.conll",
}

#: Module prefixes whose classes a checkpoint or a stored record may name. More can be allowed with the
#: ``MULTIBERT_TRUSTED_MODULES`` environment variable (comma-separated prefixes, e.g. ``my_adapters.``).
TRUSTED_PREFIXES: tuple[str, ...] = ("multibert.", "datamodules.", "torch.", "lightning.", "pytorch_lightning.")


def current_class_path(class_path: str) -> str:
    """``class_path`` with a module of the earlier layout replaced by its new home (unchanged otherwise)."""
    module, _, name = class_path.rpartition(".")
    return f"{MOVED[module]}.{name}" if module in MOVED else class_path


def trusted_prefixes() -> tuple[str, ...]:
    extra = tuple(p.strip() for p in os.environ.get("MULTIBERT_TRUSTED_MODULES", "").split(",") if p.strip())
    return TRUSTED_PREFIXES + extra


def check_class_path(class_path: str, source: str) -> str:
    """Refuse a class path outside the trusted prefixes before anything imports it; return its current form."""
    class_path = current_class_path(class_path)
    if not class_path.startswith(trusted_prefixes()):
        raise ValueError(
            f"{source} names the class {class_path!r}, outside the trusted modules {list(trusted_prefixes())}; "
            "if you trust it, add its module prefix to the MULTIBERT_TRUSTED_MODULES environment variable"
        )
    return class_path


def import_class(class_path: str, source: str) -> type:
    """The class a trusted ``module.Class`` path names."""
    module, _, name = check_class_path(class_path, source).rpartition(".")
    cls = getattr(importlib.import_module(module), name, None)
    if not isinstance(cls, type):
        raise ValueError(f"{source}: {class_path!r} is not a class")
    return cls


def to_spec(factory: Callable[..., Any] | None) -> dict | None:
    """A plain-data record ``{"class_path", "init_args"}`` of a class, a ``functools.partial`` of it or
    jsonargparse's callable; ``None`` when the factory is not built from a class (e.g. a lambda)."""
    if factory is None:
        return None
    cls = callable_class(factory)
    if cls is None:
        return None
    init_args = dict(factory.keywords) if isinstance(factory, functools.partial) else {}
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": init_args}


def from_spec(spec: Callable[..., Any] | dict | None, base: type, source: str = "a stored record") -> Callable[..., Any] | None:
    """The factory a record describes (imported after :func:`check_class_path`), or the factory itself."""
    if not isinstance(spec, dict):
        return spec
    cls = import_class(spec["class_path"], source)
    if not issubclass(cls, base):
        raise ValueError(f"{source}: class_path {spec['class_path']!r} is not a {base.__module__}.{base.__qualname__}")
    return functools.partial(cls, **(spec.get("init_args") or {}))


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """A Lightning / multibert checkpoint, loaded weights-only (no code runs); ``mmap`` maps the tensors instead of
    reading them (cheap when only the metadata is wanted)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist" + (" (it is a directory)" if path.is_dir() else ""))
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except RuntimeError as e:
        if not mmap:
            raise
        log.debug("%s: memory-mapping failed (%s); reading it", path, e)  # an old (non-zip) checkpoint format
        return torch.load(path, map_location="cpu", weights_only=True)


#: The key under which ``multibert fit`` stores its run record (data settings, the run's config) in a checkpoint.
RUN_KEY = "multibert_run"
#: The parts of a checkpoint that name classes: hyperparameters and the run record.
_NAMING_KEYS = ("hyper_parameters", "datamodule_hyper_parameters", RUN_KEY)


def named_classes(record: Any) -> list[str]:
    """Every class a stored record names: the values of ``class_path``, ``_class_path`` and ``_instantiator``
    keys at any depth."""
    found: list[str] = []
    if isinstance(record, dict):
        for key, value in record.items():
            if key in ("class_path", "_class_path", "_instantiator") and isinstance(value, str):
                found.append(value)
            else:
                found.extend(named_classes(value))
    elif isinstance(record, (list, tuple)):
        for value in record:
            found.extend(named_classes(value))
    return found


def check_checkpoint_classes(checkpoint: dict[str, Any] | str | Path, source: str | None = None) -> dict[str, Any]:
    """Refuse a checkpoint that names a class outside the trusted modules, before anything imports it.

    Lightning's ``load_from_checkpoint`` imports the ``_instantiator`` a checkpoint names, and LightningCLI's
    ``--ckpt_path`` hands the stored class paths to jsonargparse, which imports them: both are checked here first.
    Returns the checkpoint (read weights-only and memory-mapped when a path is given).
    """
    if not isinstance(checkpoint, dict):
        source = source or str(checkpoint)
        checkpoint = read_checkpoint(checkpoint, mmap=True)
    for key in _NAMING_KEYS:
        for class_path in named_classes(checkpoint.get(key)):
            check_class_path(class_path, f"{source or 'the checkpoint'} ({key})")
    return checkpoint


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The model weights of a multibert / Lightning ``.ckpt`` (or a ``.safetensors`` / ``.pt`` state dict)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} does not exist")
        from safetensors.torch import load_file

        return load_file(path)
    obj = read_checkpoint(path)
    return obj.get("state_dict", obj) if isinstance(obj, dict) else obj


def checkpoint_vocab(checkpoint: str | Path | dict[str, Any]) -> str | None:
    """The vocabulary text a datamodule stored in the checkpoint (``vocab`` in its state), if any."""
    ckpt = checkpoint if isinstance(checkpoint, dict) else read_checkpoint(checkpoint)
    for key, state in ckpt.items():
        if isinstance(state, dict) and isinstance(state.get("vocab"), str) and key.endswith("DataModule"):
            return state["vocab"]
    return None
