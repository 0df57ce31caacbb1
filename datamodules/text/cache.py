"""The memory-mapped token cache of the one-machine text path: tokenization runs once, streaming, into
``<cache>/tokens.bin`` (uint16 or uint32 ids) plus sentence and document offset arrays, and every later run
memory-maps the result, so a corpus larger than RAM works and re-runs skip the work. The cache key covers the
files' paths, sizes and modification times, the vocabulary, the casing and the reading options (reading itself:
:mod:`datamodules.text.corpus`)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules.text.corpus import MAX_SENTENCE_CHARS, Corpus, ReadStats, corpus_files, read_documents
from multibert.core.progress import progress_bar

log = logging.getLogger(__name__)

CACHE_VERSION = 2


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


def file_fingerprint(files: Iterable[Path]) -> list[list]:
    """``[path, size, mtime_ns]`` per file: what decides whether a cache or a prepared dataset is stale."""
    out = []
    for p in files:
        st = p.stat()
        out.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    return out


def cache_key(
    files: Corpus, vocab_file: str | Path, lowercase: bool, encoding: str = "utf-8",
    max_sentence_chars: int = MAX_SENTENCE_CHARS,
) -> str:
    h = hashlib.sha1(f"v{CACHE_VERSION}|{lowercase}|{encoding}|{max_sentence_chars}".encode())
    h.update(json.dumps(file_fingerprint(corpus_files(files))).encode())
    h.update(Path(vocab_file).read_bytes())
    return h.hexdigest()[:16]


def tokenize_corpus(
    files: Corpus,
    tokenizer,
    out_dir: str | Path,
    batch_sentences: int = 4096,
    progress: bool = True,
    encoding: str = "utf-8",
    max_sentence_chars: int = MAX_SENTENCE_CHARS,
) -> Path:
    """Tokenize ``files`` into ``out_dir`` (written to a temporary folder, then renamed: safe to interrupt)."""
    files = corpus_files(files)
    out_dir = Path(out_dir)
    if (out_dir / "meta.json").is_file():
        return out_dir
    vocab_size = tokenizer.get_vocab_size()
    dtype = np.uint16 if vocab_size < 2**16 else np.uint32
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=out_dir.name + ".tmp"))
    sentence_offsets = array("q", [0])
    document_offsets = array("q", [0])
    stats = ReadStats()
    bar = progress_bar(sum(p.stat().st_size for p in files), "tokenizing corpus", enabled=progress)
    pending: list[str] = []
    pending_docs: list[int] = []  # number of sentences of each pending document

    with open(tmp / "tokens.bin", "wb") as out:

        def flush() -> None:
            if not pending:
                return
            encodings = tokenizer.encode_batch(pending, add_special_tokens=False)
            i = 0
            for n in pending_docs:
                kept = 0
                for text, enc in zip(pending[i : i + n], encodings[i : i + n]):
                    if not enc.ids:
                        stats.empty_sentences += 1
                        stats.empty_chars += len(text)
                        continue
                    out.write(np.asarray(enc.ids, dtype=dtype).tobytes())
                    sentence_offsets.append(sentence_offsets[-1] + len(enc.ids))
                    kept += 1
                i += n
                if kept:
                    document_offsets.append(document_offsets[-1] + kept)
            pending.clear()
            pending_docs.clear()

        try:
            for document in read_documents(files, bar, encoding, max_sentence_chars, stats):
                pending.extend(document)
                pending_docs.append(len(document))
                if len(pending) >= batch_sentences:
                    flush()
            flush()
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            bar.close()
    what = ", ".join(str(p) for p in files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    stats.report(f"corpus {what}")
    if len(sentence_offsets) == 1:
        shutil.rmtree(tmp)
        raise ValueError(f"corpus {what} contains no sentences")
    np.save(tmp / "sentence_offsets.npy", np.frombuffer(sentence_offsets, dtype=np.int64))
    np.save(tmp / "document_offsets.npy", np.frombuffer(document_offsets, dtype=np.int64))
    meta = {
        "files": [str(p) for p in files],
        "dtype": np.dtype(dtype).name,
        "tokens": int(sentence_offsets[-1]),
        "sentences": len(sentence_offsets) - 1,
        "documents": len(document_offsets) - 1,
        "skipped_empty_sentences": stats.empty_sentences,
        "cut_sentences": stats.cut_sentences,
        "cut_chars": stats.cut_chars,
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
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
