"""A WordPiece vocabulary trained on a text corpus: cached per corpus and settings (what a datamodule without
``vocab_file`` uses), and the ``multibert vocab`` command."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

from datamodules.text.cache import file_fingerprint
from datamodules.text.corpus import MAX_SENTENCE_CHARS, Corpus, check_encoding, corpus_files, read_documents
from datamodules.tokenizer import train_wordpiece
from multibert.core.progress import progress_bar

log = logging.getLogger(__name__)


def iter_corpus_text(
    files: Corpus, encoding: str = "utf-8", max_sentence_chars: int = MAX_SENTENCE_CHARS, progress: bool = True
) -> Iterator[str]:
    """Every sentence of the corpus, for vocabulary training, with progress (log lines when not on a terminal)."""
    files = corpus_files(files)
    bar = progress_bar(sum(p.stat().st_size for p in files), "reading corpus for the vocabulary", enabled=progress)
    try:
        for document in read_documents(files, bar, encoding, max_sentence_chars):
            yield from document
    finally:
        bar.close()
    log.info("corpus read; computing the WordPiece vocabulary")


def cached_vocabulary(
    files: list[Path],
    vocab_size: int,
    lowercase: bool,
    cache_dir: Path,
    encoding: str = "utf-8",
    max_sentence_chars: int = MAX_SENTENCE_CHARS,
) -> Path:
    """A WordPiece vocabulary trained on ``files``, cached under ``cache_dir/vocab/<key>/vocab.txt`` (the key covers
    the files' paths, sizes and modification times and the settings); trained on the first call only."""
    h = hashlib.sha1(f"{vocab_size}|{lowercase}|{encoding}|{max_sentence_chars}".encode())
    for path, size, mtime in file_fingerprint(files):
        h.update(f"|{path}|{size}|{mtime}".encode())
    path = Path(cache_dir) / "vocab" / h.hexdigest()[:16] / "vocab.txt"
    if not path.is_file():
        log.info("training a %d-token WordPiece vocabulary on %d corpus files", vocab_size, len(files))
        train_wordpiece(iter_corpus_text(files, encoding, max_sentence_chars), vocab_size, path, lowercase)
    return path


def train_vocab(
    *,
    corpus: str | list[str],
    out: str,
    vocab_size: int = 30522,
    lowercase: bool = True,
    min_frequency: int = 2,
    encoding: str = "utf-8",
) -> None:
    """Train a WordPiece vocabulary on a corpus (``multibert vocab``).

    Args:
        corpus: corpus files, directories or glob patterns: plain text (one sentence per line, blank line between
            documents) or JSONL with a ``text`` field.
        out: where to write ``vocab.txt``.
        vocab_size: target vocabulary size (special tokens included).
        lowercase: lower-case and strip accents (uncased BERT).
        min_frequency: minimum count of a merge.
        encoding: the files' text encoding (utf-8, latin-1, cp1252, ...).
    """
    texts = iter_corpus_text(corpus, check_encoding(encoding))
    path = train_wordpiece(texts, vocab_size, out, lowercase, min_frequency)
    size = len(Path(path).read_text(encoding="utf-8").splitlines())
    print(f"wrote {size} tokens to {path}")
