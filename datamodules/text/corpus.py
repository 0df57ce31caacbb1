"""Text corpora: reading BERT's document format or JSONL, and a memory-mapped token cache.

Formats:

- plain text (BERT's pretraining format): one sentence per line, a blank line between documents;
- JSONL: one JSON object per line with a ``text`` field; each object is a document, split into sentences at line
  breaks and at sentence-final punctuation.

Tokenization runs once, streaming, into ``<cache>/tokens.bin`` (uint16 or uint32 ids) plus sentence and document
offset arrays, and every later run memory-maps the result, so a corpus larger than RAM works and re-runs skip the
work. The cache key covers the files' paths, sizes and modification times, the vocabulary and the casing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from datamodules import resolve_path
from datamodules.tokenizer import train_wordpiece

log = logging.getLogger(__name__)

CACHE_VERSION = 1
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")


def _check_files(files: Iterable[str | Path]) -> list[Path]:
    paths = [resolve_path(f) for f in ([files] if isinstance(files, (str, Path)) else files)]
    if not paths:
        raise ValueError("no corpus file given (data.corpus is empty)")
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"corpus file {p} does not exist")
        if p.stat().st_size == 0:
            raise ValueError(f"corpus file {p} is empty")
    return paths


def split_sentences(text: str) -> list[str]:
    """Split a JSONL document into sentences: at line breaks, then after ``.``, ``!``, ``?`` before a capital."""
    out = []
    for line in text.splitlines():
        out.extend(s.strip() for s in _SENTENCE_END.split(line) if s.strip())
    return out


def read_documents(files: Iterable[str | Path], progress: tqdm | None = None) -> Iterator[list[str]]:
    """Yield each document as a list of sentences, streaming line by line."""
    for path in _check_files(files):
        if path.suffix in (".jsonl", ".json"):
            with open(path, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if progress is not None:
                        progress.update(len(line.encode("utf-8")))
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
                    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                        raise ValueError(f"{path}:{n}: expected an object with a string field 'text'")
                    sentences = split_sentences(record["text"])
                    if sentences:
                        yield sentences
        else:
            document: list[str] = []
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if progress is not None:
                        progress.update(len(line.encode("utf-8")))
                    line = line.strip()
                    if line:
                        document.append(line)
                    elif document:
                        yield document
                        document = []
            if document:
                yield document


@dataclass
class TokenizedCorpus:
    """A tokenized corpus, memory-mapped.

    Attributes:
        tokens: (N,) all token ids, sentence after sentence.
        sentence_offsets: (S + 1,) sentence s is ``tokens[sentence_offsets[s]:sentence_offsets[s + 1]]``.
        document_offsets: (D + 1,) document d is sentences ``document_offsets[d]:document_offsets[d + 1]``.
    """

    tokens: np.ndarray
    sentence_offsets: np.ndarray
    document_offsets: np.ndarray

    @property
    def num_documents(self) -> int:
        return len(self.document_offsets) - 1

    @property
    def sentence_lengths(self) -> np.ndarray:
        return np.diff(self.sentence_offsets)

    def sentence(self, s: int) -> np.ndarray:
        return self.tokens[self.sentence_offsets[s] : self.sentence_offsets[s + 1]]


def cache_key(files: Iterable[str | Path], vocab_file: str | Path, lowercase: bool) -> str:
    h = hashlib.sha1(f"v{CACHE_VERSION}|{lowercase}".encode())
    for p in _check_files(files):
        st = p.stat()
        h.update(f"|{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    h.update(Path(vocab_file).read_bytes())
    return h.hexdigest()[:16]


def tokenize_corpus(
    files: Iterable[str | Path],
    tokenizer,
    out_dir: str | Path,
    batch_sentences: int = 4096,
    progress: bool = True,
) -> Path:
    """Tokenize ``files`` into ``out_dir`` (written to a temporary folder, then renamed: safe to interrupt)."""
    files = _check_files(files)
    out_dir = Path(out_dir)
    if (out_dir / "meta.json").is_file():
        return out_dir
    vocab_size = tokenizer.get_vocab_size()
    dtype = np.uint16 if vocab_size < 2**16 else np.uint32
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=out_dir.name + ".tmp"))
    sentence_offsets = array("q", [0])
    document_offsets = array("q", [0])
    skipped = 0
    total_bytes = sum(p.stat().st_size for p in files)
    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="tokenizing corpus", disable=not progress)
    pending: list[str] = []
    pending_docs: list[int] = []  # number of sentences of each pending document

    with open(tmp / "tokens.bin", "wb") as out:

        def flush() -> None:
            nonlocal skipped
            if not pending:
                return
            encodings = tokenizer.encode_batch(pending, add_special_tokens=False)
            i = 0
            for n in pending_docs:
                kept = 0
                for enc in encodings[i : i + n]:
                    if not enc.ids:
                        skipped += 1
                        continue
                    out.write(np.asarray(enc.ids, dtype=dtype).tobytes())
                    sentence_offsets.append(sentence_offsets[-1] + len(enc.ids))
                    kept += 1
                i += n
                if kept:
                    document_offsets.append(document_offsets[-1] + kept)
            pending.clear()
            pending_docs.clear()

        for document in read_documents(files, progress=bar):
            pending.extend(document)
            pending_docs.append(len(document))
            if len(pending) >= batch_sentences:
                flush()
        flush()
    bar.close()
    if len(sentence_offsets) == 1:
        shutil.rmtree(tmp)
        raise ValueError(f"corpus {[str(p) for p in files]} contains no sentences")
    np.save(tmp / "sentence_offsets.npy", np.frombuffer(sentence_offsets, dtype=np.int64))
    np.save(tmp / "document_offsets.npy", np.frombuffer(document_offsets, dtype=np.int64))
    meta = {
        "files": [str(p) for p in files],
        "dtype": np.dtype(dtype).name,
        "tokens": int(sentence_offsets[-1]),
        "sentences": len(sentence_offsets) - 1,
        "documents": len(document_offsets) - 1,
        "skipped_empty_sentences": skipped,
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    if skipped:
        log.warning("skipped %d sentences that tokenized to nothing", skipped)
    try:
        os.replace(tmp, out_dir)
    except OSError:  # another rank finished first
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("tokenized %s", meta)
    return out_dir


def open_tokenized(directory: str | Path) -> TokenizedCorpus:
    directory = Path(directory)
    meta = json.loads((directory / "meta.json").read_text())
    return TokenizedCorpus(
        np.memmap(directory / "tokens.bin", dtype=meta["dtype"], mode="r"),
        np.load(directory / "sentence_offsets.npy", mmap_mode="r"),
        np.load(directory / "document_offsets.npy", mmap_mode="r"),
    )


def iter_corpus_text(files: Iterable[str | Path]) -> Iterator[str]:
    """Every text line of plain-text or JSONL (``text`` field) corpus files, for vocabulary training."""
    for document in read_documents(files):
        yield from document


def train_vocab(*, corpus: list[str], out: str, vocab_size: int = 30522, lowercase: bool = True, min_frequency: int = 2) -> None:
    """Train a WordPiece vocabulary on a corpus (``multibert vocab``).

    Args:
        corpus: corpus files: plain text (one sentence per line, blank line between documents) or JSONL with a
            ``text`` field.
        out: where to write ``vocab.txt``.
        vocab_size: target vocabulary size (special tokens included).
        lowercase: lower-case and strip accents (uncased BERT).
        min_frequency: minimum count of a merge.
    """
    path = train_wordpiece(iter_corpus_text(corpus), vocab_size, out, lowercase, min_frequency)
    size = sum(1 for _ in open(path, encoding="utf-8"))
    print(f"wrote {size} tokens to {path}")
