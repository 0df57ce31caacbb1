"""LightningDataModules that turn each modality's raw data into typed batches (:mod:`multibert.core.batch`)."""

from __future__ import annotations

import os
from pathlib import Path

#: The folder that holds the repository's (and the installed package's) ``datamodules/``.
PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def resolve_path(path: str | Path) -> Path:
    """``path`` as given if it exists; else, for a relative path such as ``datamodules/data/shakespeare.txt``, the
    same path under the installed package, so shipped data resolves from any working directory."""
    path = Path(path)
    if path.exists() or path.is_absolute():
        return path
    shipped = PACKAGE_ROOT / path
    return shipped if shipped.exists() else path


def default_cache_dir() -> Path:
    """Where vocabularies and token caches go: ``$MULTIBERT_CACHE``, else ``~/.cache/multibert``."""
    return Path(os.environ.get("MULTIBERT_CACHE", Path.home() / ".cache" / "multibert"))
