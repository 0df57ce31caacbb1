"""Where pretrained weights come from: a local Hugging Face BERT directory, a multibert ``.ckpt``, or a Hugging Face
hub id (``google-bert/bert-base-uncased``) resolved through ``huggingface_hub``'s cache.

A hub id is fetched with :func:`huggingface_hub.snapshot_download` (only the files a BERT directory needs). With
``HF_HUB_OFFLINE=1`` only the local cache (``HF_HUB_CACHE`` or ``HF_HOME/hub``) is read; a model missing from it is
an error that says how to get it. Both variables are read when a model is resolved, not when Python starts.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from multibert.core.checkpoint import read_checkpoint
from multibert.core.config import BertConfig

#: The files of a Hugging Face BERT directory that multibert reads.
HUB_FILES = ["config.json", "model.safetensors", "pytorch_model.bin", "vocab.txt", "tokenizer.json", "tokenizer_config.json"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_WEIGHT_SUFFIXES = (".ckpt", ".safetensors", ".pt", ".pth", ".bin")


def looks_like_hub_id(source: str) -> bool:
    """``name`` or ``owner/name`` that is not a path to a weights file."""
    return bool(_HUB_ID.match(source)) and not source.endswith(_WEIGHT_SUFFIXES)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_pretrained(source: str | Path, what: str = "init_from") -> Path:
    """The local path of ``source``: the path itself when it exists, else the cached snapshot of a hub id.

    Raises:
        FileNotFoundError: nothing local, and ``source`` is no hub id, or it is neither cached nor downloadable.
    """
    path = Path(source)
    if path.exists():
        return path
    if not looks_like_hub_id(str(source)):
        raise FileNotFoundError(
            f"{what} {source} does not exist; give a Hugging Face BERT directory, a multibert .ckpt file or a "
            "Hugging Face hub id (e.g. google-bert/bert-base-uncased)"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
    )

    cache_dir = os.environ.get("HF_HUB_CACHE") or None
    try:
        local = snapshot_download(str(source), allow_patterns=HUB_FILES, cache_dir=cache_dir, local_files_only=_offline())
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, FileNotFoundError) as e:
        where = cache_dir or "the Hugging Face cache (HF_HUB_CACHE / HF_HOME)"
        mode = "HF_HUB_OFFLINE is set and " if _offline() else ""
        raise FileNotFoundError(
            f"{what} {source!r} is no local file or directory, and {mode}the hub model {source!r} is not in {where}; "
            f"download it where there is network (`hf download {source}`, then copy the cache) or give a local "
            f"directory ({type(e).__name__})"
        ) from None
    except (HFValidationError, OSError) as e:  # a name the hub rejects, or no network
        raise FileNotFoundError(
            f"{what} {source!r} is no local file or directory, and fetching it from the Hugging Face hub failed: {e}"
        ) from None
    return Path(local)


def pretrained_config(source: str | Path) -> BertConfig:
    """The encoder sizes of pretrained weights: a Hugging Face directory's ``config.json`` or the ``config``
    hyperparameter of a multibert ``.ckpt``."""
    from multibert.core.convert import read_hf_config

    path = resolve_pretrained(source)
    if path.is_dir():
        return read_hf_config(path)
    config = read_checkpoint(path, mmap=True).get("hyper_parameters", {}).get("config")
    if not isinstance(config, dict):
        raise ValueError(f"{path} records no encoder config (hyper_parameters.config); was it written by `multibert fit`?")
    return BertConfig(**config)
