"""Checkpoints as plain data: weights-only loading, and the ``{class_path, init_args}`` records that name the
classes a task was built from (its adapter, optimiser and scheduler).

A checkpoint loads with ``torch.load(weights_only=True)``, which runs no code; the classes it names are imported
only after :func:`check_class_path` accepts them. Class paths of multibert's earlier layout (before the layers of
:mod:`multibert`) are translated by :data:`MOVED`, so older checkpoints and configs keep loading.
"""

from __future__ import annotations

import functools
import importlib
import os
from pathlib import Path
from typing import Any, Callable

import torch

from multibert.core.optim import callable_class

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


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning / multibert checkpoint, loaded weights-only (no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist" + (" (it is a directory)" if path.is_dir() else ""))
    return torch.load(path, map_location="cpu", weights_only=True)


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
