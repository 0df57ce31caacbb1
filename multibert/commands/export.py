"""``multibert export``: a training checkpoint → a Hugging Face BERT directory."""

from __future__ import annotations

import tempfile
from pathlib import Path

from multibert.core.checkpoint import checkpoint_vocab
from multibert.core.task import EncoderTask


def export_checkpoint(*, checkpoint: str, out: str, vocab_file: str | None = None) -> None:
    """Export a training checkpoint as a Hugging Face BERT directory (config.json, model.safetensors, vocab.txt).

    Args:
        checkpoint: a ``.ckpt`` written by ``multibert fit``.
        out: the directory to write.
        vocab_file: the vocabulary to copy; by default the one stored in the checkpoint.
    """
    task = EncoderTask.from_checkpoint(checkpoint)
    if vocab_file is None:
        text = checkpoint_vocab(checkpoint)
        if text is not None:
            vocab_file = str(Path(tempfile.mkdtemp()) / "vocab.txt")
            Path(vocab_file).write_text(text, encoding="utf-8")
    task.export_hf(out, vocab_file)
    print(f"exported {checkpoint} → {out}" + ("" if vocab_file else " (no vocabulary: pass --vocab_file)"))
