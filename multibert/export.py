"""``multibert export``: a training checkpoint → a Hugging Face BERT directory."""

from __future__ import annotations

import importlib
import tempfile
from pathlib import Path

import torch

from multibert.tasks.base import EncoderTask


def load_task(checkpoint: str | Path) -> EncoderTask:
    """Rebuild the task a multibert ``.ckpt`` was trained with, loading with ``weights_only=True``.

    Only classes that subclass :class:`EncoderTask` are instantiated, so a checkpoint cannot name arbitrary code.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    class_path = ckpt.get("hyper_parameters", {}).get("_class_path")
    if class_path is None:
        raise ValueError(f"{checkpoint} records no model class (_class_path); was it written by `multibert fit`?")
    module, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, EncoderTask)):
        raise ValueError(f"{checkpoint}: {class_path} is not a multibert EncoderTask")
    return cls.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)


def checkpoint_vocab(checkpoint: str | Path) -> str | None:
    """The vocabulary text a text datamodule stored in the checkpoint, if any."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    for key, state in ckpt.items():
        if isinstance(state, dict) and isinstance(state.get("vocab"), str) and key.endswith("DataModule"):
            return state["vocab"]
    return None


def export_checkpoint(*, checkpoint: str, out: str, vocab_file: str | None = None) -> None:
    """Export a training checkpoint as a Hugging Face BERT directory (config.json, model.safetensors, vocab.txt).

    Args:
        checkpoint: a ``.ckpt`` written by ``multibert fit``.
        out: the directory to write.
        vocab_file: the vocabulary to copy; by default the one stored in the checkpoint.
    """
    task = load_task(checkpoint)
    if vocab_file is None:
        text = checkpoint_vocab(checkpoint)
        if text is not None:
            vocab_file = str(Path(tempfile.mkdtemp()) / "vocab.txt")
            Path(vocab_file).write_text(text, encoding="utf-8")
    task.export_hf(out, vocab_file)
    print(f"exported {checkpoint} → {out}" + ("" if vocab_file else " (no vocabulary: pass --vocab_file)"))
