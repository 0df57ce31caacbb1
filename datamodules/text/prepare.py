"""``multibert text-prep``: tokenize a corpus once, for all nodes, into Lightning's ``litdata`` streaming format.

The corpus files are cut into byte ranges aligned to document boundaries (:func:`~datamodules.text.corpus.shards`)
and ``litdata.optimize``'s worker pool tokenizes them. Each document is planned into chunks of sentences exactly as
the memory-mapped path plans it (:func:`~datamodules.text.examples.plan_document`; the target lengths depend on
``max_seq_length`` and ``short_seq_prob``, so these are fixed at preparation, as in Google's
``create_pretraining_data.py``), and each chunk becomes one item::

    {"tokens": (n,) uint16/uint32, "sentences": (s,) int32 sentence lengths, "next": (m,) the document's next
     sentences (only for a one-sentence chunk: its true continuation), "doc": int64 document key, "target": int}

Documents go to ``train/`` or ``val/`` by a seeded draw on their key (a hash of the document's text, so the split
does not change when the corpus moves; the validation share is
``val_fraction`` in expectation; each split is one pass of the workers over the text, tokenizing only its own
documents). ``multibert.json`` beside them records the vocabulary, the casing, the settings, the input files'
fingerprint and what was cut; it is written last, so a rerun of the same inputs and settings is skipped, a changed
input is reported, and an interrupted preparation is redone. The output may be a local folder or an object-store
URL (``s3://bucket/corpus``; litdata uploads the chunks; tested with local folders only).

The streaming datamodule that reads the result is :class:`datamodules.text.streaming.TextStreamingDataModule`.
This module is longer than most (~440 lines) on purpose: the preparation is one pipeline (settings → shards →
workers → items → record and rerun check) that reads best in one place; the reading and the chunk plan it shares
with the memory-mapped path live in :mod:`~datamodules.text.corpus` and :mod:`~datamodules.text.examples`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from litdata import optimize

from datamodules import resolve_path
from datamodules.text.cache import file_fingerprint
from datamodules.text.corpus import (
    MAX_SENTENCE_CHARS,
    CorpusError,
    ReadStats,
    Shard,
    check_encoding,
    corpus_files,
    read_shard,
    shards,
)
from datamodules.text.examples import plan_document, take_sentences
from datamodules.text.vocab import cached_vocabulary
from datamodules.tokenizer import Vocabulary, load_wordpiece
from multibert.core.progress import progress_bar

log = logging.getLogger(__name__)

#: The record written beside ``train/`` and ``val/``.
PREPARED = "multibert.json"
FORMAT_VERSION = 1


def _is_url(path: str) -> bool:
    return "://" in str(path)


def _join(base: str, name: str) -> str:
    return f"{str(base).rstrip('/')}/{name}" if _is_url(base) else str(Path(base) / name)


def read_record(data_dir: str, storage_options: dict | None = None) -> dict | None:
    """The preparation record of ``data_dir`` (a folder or an object-store URL), or None if there is none."""
    if not _is_url(data_dir):
        path = Path(data_dir) / PREPARED
        return json.loads(path.read_text()) if path.is_file() else None
    from litdata.streaming.fs_provider import _get_fs_provider

    fs = _get_fs_provider(data_dir, storage_options or {})
    remote = _join(data_dir, PREPARED)
    if not fs.exists(remote):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        fs.download_file(remote, str(Path(tmp) / PREPARED))
        return json.loads((Path(tmp) / PREPARED).read_text())


def _write_record(data_dir: str, record: dict | None, storage_options: dict | None = None) -> None:
    """Write (or, with None, delete) the preparation record."""
    if not _is_url(data_dir):
        path = Path(data_dir) / PREPARED
        if record is None:
            path.unlink(missing_ok=True)
            return
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path)
        return
    from litdata.streaming.fs_provider import _get_fs_provider

    fs = _get_fs_provider(data_dir, storage_options or {})
    remote = _join(data_dir, PREPARED)
    if record is None:
        if fs.exists(remote):
            fs.delete_file_or_directory(remote)
        return
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / PREPARED).write_text(json.dumps(record, indent=1))
        fs.upload_file(str(Path(tmp) / PREPARED), remote)


def document_key(sentences: list[str]) -> int:
    """A 63-bit key of a document from its text alone: the split and the chunk plan do not change when the corpus
    moves to another folder or machine (a key from the file's path would)."""
    return int.from_bytes(hashlib.sha1("\n".join(sentences).encode()).digest()[:8], "little") >> 1


def in_validation(key: int, seed: int, val_fraction: float) -> bool:
    return val_fraction > 0 and np.random.default_rng([seed, 11, key]).random() < val_fraction


@dataclasses.dataclass(frozen=True)
class PrepSettings:
    """What a prepared dataset is fixed to; recorded in ``multibert.json``."""

    lowercase: bool = True
    max_seq_length: int = 128
    short_seq_prob: float = 0.1
    val_fraction: float = 0.01
    seed: int = 42
    encoding: str = "utf-8"
    max_sentence_chars: int = MAX_SENTENCE_CHARS

    @property
    def max_tokens(self) -> int:
        return self.max_seq_length - 3


class _ShardWriter:
    """``litdata.optimize``'s function: the items of one corpus shard and split. Runs in the worker processes."""

    def __init__(self, vocab_file: str, settings: PrepSettings, split: str, report_dir: str, batch: int = 2048) -> None:
        self.vocab_file, self.settings, self.split, self.report_dir, self.batch = vocab_file, settings, split, report_dir, batch
        self._tokenizer = None

    def _tokenizer_once(self):
        if self._tokenizer is None:
            # one tokenizer thread per worker: the workers are the parallelism
            os.environ.setdefault("RAYON_NUM_THREADS", "1")
            self._tokenizer = load_wordpiece(self.vocab_file, lowercase=self.settings.lowercase)
        return self._tokenizer

    def __call__(self, shard: Shard) -> Iterator[dict]:
        stats, counts = ReadStats(), {"items": 0, "documents": 0, "tokens": 0}
        name = hashlib.sha1(f"{shard.path}|{shard.start}".encode()).hexdigest()[:16]
        try:
            yield from self._items(shard, stats, counts)
        except CorpusError as e:  # named for the user: the main process raises it without litdata's traceback
            Path(self.report_dir, f"error-{name}.txt").write_text(str(e))
            raise
        report = {"bytes": shard.end - shard.start, **counts, "stats": dataclasses.asdict(stats)}
        Path(self.report_dir, f"{self.split}-{name}.json").write_text(json.dumps(report))

    def _items(self, shard: Shard, stats: ReadStats, counts: dict) -> Iterator[dict]:
        """Items of the documents of this split; ``stats`` counts all text read and what tokenized to nothing."""
        s = self.settings
        tokenizer = self._tokenizer_once()
        dtype = np.uint16 if tokenizer.get_vocab_size() < 2**16 else np.uint32
        pending: list[tuple[int, list[str]]] = []
        n_pending = 0
        for _, sentences in read_shard(shard, s.encoding, s.max_sentence_chars, stats):
            key = document_key(sentences)
            if in_validation(key, s.seed, s.val_fraction) != (self.split == "val"):
                continue
            pending.append((key, sentences))
            n_pending += len(sentences)
            if n_pending >= self.batch:
                yield from self._encode(pending, tokenizer, dtype, stats, counts)
                pending, n_pending = [], 0
        yield from self._encode(pending, tokenizer, dtype, stats, counts)

    def _encode(self, pending, tokenizer, dtype, stats: ReadStats, counts: dict) -> Iterator[dict]:
        s = self.settings
        texts = [t for _, sentences in pending for t in sentences]
        if not texts:
            return
        encodings = iter(tokenizer.encode_batch(texts, add_special_tokens=False))
        for key, sentences in pending:
            kept = []
            for text in sentences:
                ids = next(encodings).ids
                if ids:
                    kept.append(np.asarray(ids, dtype=dtype))
                else:
                    stats.empty_sentences += 1
                    stats.empty_chars += len(text)
            if not kept:
                continue
            counts["documents"] += 1
            lengths = np.array([len(k) for k in kept], dtype=np.int32)
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            tokens = np.concatenate(kept)
            rng = np.random.default_rng([s.seed, 7, key])
            chunks, _ = plan_document(lengths, s.max_tokens, s.short_seq_prob, rng)
            for first, end, target in chunks:
                nxt = tokens[:0]
                if end - first == 1:  # the true continuation of a one-sentence chunk, as the builder will ask for it
                    stop = take_sentences(offsets, end, len(lengths), max(1, target - int(lengths[first])))
                    nxt = tokens[offsets[end] : offsets[stop]]
                counts["items"] += 1
                counts["tokens"] += int(offsets[end] - offsets[first])
                yield {
                    "tokens": tokens[offsets[first] : offsets[end]],
                    "sentences": lengths[first:end],
                    "next": nxt,
                    "doc": key,
                    "target": int(target),
                }


def _fingerprint(files: list[Path], vocab_text: str, settings: PrepSettings) -> dict:
    return {
        "format": FORMAT_VERSION,
        "files": file_fingerprint(files),
        "vocab_sha1": hashlib.sha1(vocab_text.encode()).hexdigest(),
        "settings": dataclasses.asdict(settings),
    }


def _differences(old: dict, new: dict) -> list[str]:
    out = []
    if old.get("format") != new["format"]:
        out.append(f"format version {old.get('format')} → {new['format']}")
    before = {f[0]: f[1:] for f in old.get("files", [])}
    after = {f[0]: f[1:] for f in new["files"]}
    out += [f"added {p}" for p in after if p not in before][:5]
    out += [f"removed {p}" for p in before if p not in after][:5]
    out += [f"changed {p} (size or modification time)" for p in after if p in before and before[p] != after[p]][:5]
    if old.get("vocab_sha1") != new["vocab_sha1"]:
        out.append("another vocabulary")
    for k, v in new["settings"].items():
        if old.get("settings", {}).get(k) != v:
            out.append(f"{k}: {old.get('settings', {}).get(k)} → {v}")
    return out


class _ReportProgress(threading.Thread):
    """Advances a progress bar as the workers finish shards (each leaves a report file)."""

    def __init__(self, report_dir: str, split: str, total: int) -> None:
        super().__init__(daemon=True)
        self.report_dir, self.split = Path(report_dir), split
        self.bar = progress_bar(total, f"preparing the {split} split")
        self.stop = threading.Event()

    def run(self) -> None:
        seen: set[str] = set()
        while True:
            stopping = self.stop.wait(1.0)
            for p in self.report_dir.glob(f"{self.split}-*.json"):
                if p.name not in seen:
                    seen.add(p.name)
                    self.bar.update(json.loads(p.read_text())["bytes"])
            if stopping:
                self.bar.close()
                return


def prepare_corpus(
    *,
    corpus: str | list[str],
    out: str,
    vocab_file: str | None = None,
    train_vocab_size: int = 30522,
    lowercase: bool = True,
    max_seq_length: int = 128,
    short_seq_prob: float = 0.1,
    val_fraction: float = 0.01,
    seed: int = 42,
    encoding: str = "utf-8",
    max_sentence_chars: int = MAX_SENTENCE_CHARS,
    num_workers: int | None = None,
    chunk_bytes: str = "64MB",
    shard_bytes: int = 256 * 2**20,
    overwrite: bool = False,
    cache_dir: str | None = None,
    storage_options: dict | None = None,
) -> str:
    """Tokenize a corpus once into litdata's streaming format for many nodes (``multibert text-prep``).

    Writes ``OUT/train/``, ``OUT/val/`` (litdata chunks) and ``OUT/multibert.json`` (vocabulary, casing, settings,
    input fingerprint, counts). A rerun with the same inputs and settings does nothing; a changed input is reported
    (pass ``overwrite`` to prepare again).

    Args:
        corpus: files, directories or glob patterns: BERT's format (one sentence per line, blank line between
            documents) or JSONL with a ``text`` field.
        out: a local folder or an object-store URL (``s3://bucket/prefix``; credentials as litdata / boto3 read them,
            or ``storage_options``).
        vocab_file: a WordPiece ``vocab.txt``; if not given, one of ``train_vocab_size`` tokens is trained on the
            corpus (cached).
        train_vocab_size: size of the vocabulary to train when ``vocab_file`` is not given.
        lowercase: lower-case and strip accents (uncased BERT).
        max_seq_length: the sequence length the data is planned for (train with the same ``data.max_seq_length``;
            prepare again for BERT's final phase at 512).
        short_seq_prob: probability of a shorter target length per document (BERT: 0.1).
        val_fraction: share of documents held out for validation (a seeded draw per document).
        seed: seeds the chunk plan and the split.
        encoding: the corpus files' text encoding (utf-8, latin-1, cp1252, ...).
        max_sentence_chars: a longer line is split at sentence punctuation, a longer sentence cut (and reported).
        num_workers: tokenizing processes (default: the CPU count).
        chunk_bytes: size of a litdata chunk ("64MB"); a worker streams whole chunks.
        shard_bytes: input files are cut into ranges of this many bytes for the workers.
        overwrite: prepare again over an existing dataset prepared from other inputs or settings.
        cache_dir: where a trained vocabulary is cached (default ``$MULTIBERT_CACHE`` or ``~/.cache/multibert``).
        storage_options: passed to litdata for an object-store ``out``.

    Returns:
        ``out``.
    """
    from datamodules import default_cache_dir

    files = corpus_files(corpus)
    settings = PrepSettings(lowercase, max_seq_length, short_seq_prob, val_fraction, seed, check_encoding(encoding),
                            max_sentence_chars)
    if vocab_file:
        vocab_path = resolve_path(vocab_file)
        if not vocab_path.is_file():
            raise FileNotFoundError(f"vocab_file {vocab_file} does not exist")
    else:
        vocab_path = cached_vocabulary(files, train_vocab_size, lowercase, Path(cache_dir or default_cache_dir()),
                                       encoding, max_sentence_chars)
    record = prepare(files, out, vocab_path, settings, num_workers=num_workers, chunk_bytes=chunk_bytes,
                     shard_bytes=shard_bytes, overwrite=overwrite, storage_options=storage_options)
    print(f"{out}: " + ", ".join(f"{s} {v['items']} examples ({v['documents']} documents, {v['tokens']} tokens)"
                                 for s, v in record["splits"].items()))
    return out


def prepare(
    files: list[Path],
    out: str,
    vocab_path: Path,
    settings: PrepSettings,
    *,
    num_workers: int | None = None,
    chunk_bytes: str = "64MB",
    shard_bytes: int = 256 * 2**20,
    overwrite: bool = False,
    storage_options: dict | None = None,
) -> dict:
    """What :func:`prepare_corpus` does, for library use (the streaming datamodule's ``prepare_data``).

    Returns:
        the preparation record written to ``OUT/multibert.json`` (the existing one when nothing had to be done).
    """
    if settings.max_seq_length < 8:
        raise ValueError(f"max_seq_length={settings.max_seq_length} is too short for [CLS] A [SEP] B [SEP]")
    vocab = Vocabulary(vocab_path, settings.lowercase)
    fingerprint = _fingerprint(files, vocab.text, settings)
    previous = read_record(out, storage_options)
    if previous is not None:
        changes = _differences(previous.get("fingerprint", {}), fingerprint)
        if not changes:
            log.info("%s is already prepared from these inputs and settings: nothing to do", out)
            return previous
        if not overwrite:
            raise ValueError(
                f"{out} was prepared from other inputs or settings ({'; '.join(changes)}); pass --overwrite true to "
                "prepare it again (nodes reading it must not be running), or write to a new folder"
            )
        log.warning("preparing %s again: %s", out, "; ".join(changes))
    _write_record(out, None, storage_options)  # until the new record is written, the folder reads as unprepared

    parts = shards(files, shard_bytes)
    workers = max(1, min(num_workers or os.cpu_count() or 1, len(parts)))
    totals: dict[str, dict] = {}
    start_method = multiprocessing.get_start_method(allow_none=True)
    report_dir = tempfile.mkdtemp(prefix="multibert-prep-")
    try:
        vocab_copy = str(Path(report_dir) / "vocab.txt")
        shutil.copyfile(vocab_path, vocab_copy)
        for split in ("train", "val") if settings.val_fraction > 0 else ("train",):
            totals[split] = _optimize_split(parts, split, vocab_copy, settings, report_dir, _join(out, split),
                                            workers, chunk_bytes, storage_options)
    finally:
        shutil.rmtree(report_dir, ignore_errors=True)
        if start_method is not None:  # litdata sets the process-wide start method to spawn; put it back
            multiprocessing.set_start_method(start_method, force=True)
    stats = totals["train"]["stats"]  # both passes read all the text: count what was read and cut once
    if "val" in totals:
        stats.empty_sentences += totals["val"]["stats"].empty_sentences
        stats.empty_chars += totals["val"]["stats"].empty_chars
    stats.report(f"corpus of {len(files)} files")
    if totals["train"]["items"] == 0:
        raise ValueError(f"corpus {files[0]} ... yields no training example (no text after reading and tokenizing)")
    record = {
        "fingerprint": fingerprint,
        "vocab": vocab.text,
        "splits": {split: {k: totals[split][k] for k in ("items", "documents", "tokens")} for split in totals},
        "cut_sentences": stats.cut_sentences,
        "cut_chars": stats.cut_chars,
        "empty_sentences": stats.empty_sentences,
    }
    _write_record(out, record, storage_options)
    log.info("prepared %s: %s", out, record["splits"])
    if settings.val_fraction > 0 and not totals.get("val", {}).get("items", 0):
        log.warning("%s: no validation split remains (val_fraction=%s drew no document)", out, settings.val_fraction)
    return record


def _optimize_split(parts, split, vocab_file, settings, report_dir, output_dir, workers, chunk_bytes, storage_options):
    """Run ``litdata.optimize`` for one split; return the summed worker reports."""
    progress = _ReportProgress(report_dir, split, sum(p.end - p.start for p in parts))
    progress.start()
    try:
        optimize(
            fn=_ShardWriter(vocab_file, settings, split, report_dir),
            inputs=parts,
            output_dir=output_dir,
            chunk_bytes=chunk_bytes,
            num_workers=workers,
            mode="overwrite",
            verbose=False,
            reorder_files=False,
            storage_options=storage_options or {},
        )
    except RuntimeError:
        errors = sorted(Path(report_dir).glob("error-*.txt"))
        if errors:
            raise CorpusError(errors[0].read_text()) from None
        raise
    finally:
        progress.stop.set()
        progress.join()
    reports = [json.loads(p.read_text()) for p in Path(report_dir).glob(f"{split}-*.json")]
    if len(reports) != len(parts):
        raise RuntimeError(f"litdata.optimize finished {output_dir} with reports from {len(reports)} of {len(parts)} shards")
    totals: dict[str, Any] = {k: sum(r[k] for r in reports) for k in ("items", "documents", "tokens")}
    totals["stats"] = ReadStats()
    for r in sorted(reports, key=lambda r: r["stats"]["first_cut"] == ""):  # a shard with a cut first
        totals["stats"].add(ReadStats(**r["stats"]))
    return totals
