"""Text corpora: finding the files and reading BERT's document format or JSONL safely.

Formats:

- plain text (BERT's pretraining format): one sentence per line, a blank line between documents;
- JSONL: one JSON object per line with a ``text`` field; each object is a document, split into sentences at line
  breaks and at sentence-final punctuation.

A corpus is a list of files, directories (every ``.txt`` / ``.jsonl`` / ``.json`` file below it, and files
without a suffix such as WikiExtractor's ``wiki_00``) and glob patterns (``data/*.txt``).

Bad input is named, never hung on: a line longer than ``max_sentence_chars`` is split at sentence punctuation and
what remains too long is cut (counted and reported, with the first place it happened); a file that does not
decode names the file, the line, the bytes and the ``encoding`` option; a NUL byte says "binary file".

Files are read in byte ranges aligned to document boundaries (:func:`shards`), so the preparation command can
hand one large file to many workers; every document belongs to exactly one range (the one holding its first
line). The memory-mapped token cache is :mod:`datamodules.text.cache`;
vocabulary training on a corpus is :mod:`datamodules.text.vocab`.
"""

from __future__ import annotations

import codecs
import glob
import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from datamodules import resolve_path

log = logging.getLogger(__name__)
log = logging.getLogger(__name__)

#: Suffixes of the files a corpus directory contributes ("" for files without one, e.g. ``wiki_00``).
CORPUS_SUFFIXES = (".txt", ".jsonl", ".json", "")
#: Default cap on one sentence (characters): ~2,000 WordPiece tokens, four times BERT's longest sequence.
MAX_SENTENCE_CHARS = 10_000
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
_GLOB = re.compile(r"[*?\[]")

Corpus = str | Path | Iterable[str | Path]


class CorpusError(ValueError):
    """A corpus file that cannot be read as text; the message names the file, the line and what to do."""


def corpus_files(corpus: Corpus) -> list[Path]:
    """The files of a corpus given as files, directories and glob patterns, in a stable order.

    Raises:
        FileNotFoundError: a file does not exist, a pattern matches nothing, a directory holds no corpus file.
        ValueError: nothing given, or a file named explicitly is empty.
    """
    entries = [corpus] if isinstance(corpus, (str, Path)) else list(corpus)
    if not entries:
        raise ValueError("no corpus file given (data.corpus is empty)")
    files: list[Path] = []
    for entry in entries:
        if _GLOB.search(str(entry)) and not Path(entry).exists():
            matches = sorted(Path(p) for p in glob.glob(str(entry), recursive=True) if Path(p).is_file())
            if not matches:
                raise FileNotFoundError(f"corpus pattern {entry} matches no file")
            files.extend(matches)
            continue
        path = resolve_path(entry)
        if path.is_dir():
            files.extend(_directory_files(path))
        elif not path.exists():
            raise FileNotFoundError(f"corpus file {path} does not exist")
        elif not path.is_file():
            raise ValueError(f"corpus path {path} is neither a file nor a directory")
        elif path.stat().st_size == 0:
            raise ValueError(f"corpus file {path} is empty")
        else:
            files.append(path)
    return list(dict.fromkeys(files))  # a file named twice (a directory and a pattern) is read once


def _directory_files(directory: Path) -> list[Path]:
    found, other = [], []
    for p in sorted(directory.rglob("*")):
        if not p.is_file() or any(part.startswith(".") for part in p.relative_to(directory).parts):
            continue
        (found if p.suffix in CORPUS_SUFFIXES and p.stat().st_size > 0 else other).append(p)
    if other:
        log.warning(
            "corpus directory %s: skipped %d empty files or files with other suffixes (e.g. %s); a corpus directory "
            "contributes non-empty %s files and files without a suffix",
            directory, len(other), other[0].name, "/".join(s for s in CORPUS_SUFFIXES if s),
        )
    if not found:
        raise FileNotFoundError(
            f"corpus directory {directory} holds no non-empty .txt, .jsonl or .json file (nor a file without suffix)"
        )
    return found


def check_encoding(encoding: str) -> str:
    """``encoding`` if Python knows it and it keeps ``\\n`` a single byte (UTF-8, Latin-1, cp1252, ...)."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r}; give a Python codec name such as utf-8 or latin-1") from None
    if "\n".encode(encoding) != b"\n":
        raise ValueError(
            f"encoding {encoding!r} is not supported (its line breaks are not single bytes); convert the corpus to "
            f"UTF-8 first: iconv -f {encoding} -t UTF-8 FILE > FILE.utf8.txt"
        )
    return encoding


@dataclass
class ReadStats:
    """What reading a corpus kept and cut; summed over files (and over preparation workers)."""

    documents: int = 0
    sentences: int = 0
    chars: int = 0
    cut_sentences: int = 0
    cut_chars: int = 0
    first_cut: str = ""
    empty_sentences: int = 0  # sentences that tokenized to nothing (counted by the tokenizing step)
    empty_chars: int = 0

    def add(self, other: ReadStats) -> None:
        for name in ("documents", "sentences", "chars", "cut_sentences", "cut_chars", "empty_sentences", "empty_chars"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.first_cut = self.first_cut or other.first_cut

    @property
    def discarded_share(self) -> float:
        return (self.cut_chars + self.empty_chars) / max(1, self.chars + self.cut_chars)

    def report(self, what: str) -> None:
        """Warn about what was cut or dropped; warn loudly when most of the corpus is gone."""
        if self.cut_sentences:
            log.warning(
                "%s: %d sentences longer than the cap were cut (%d characters dropped, %.1f %% of the text; first at "
                "%s); raise max_sentence_chars if they are real sentences",
                what, self.cut_sentences, self.cut_chars, 100 * self.cut_chars / max(1, self.chars + self.cut_chars),
                self.first_cut,
            )
        if self.empty_sentences:
            log.warning("%s: skipped %d sentences that tokenized to nothing", what, self.empty_sentences)
        if self.discarded_share > 0.5:
            log.warning(
                "%s: %.0f %% of the corpus text was discarded (cut or untokenizable): check that the files are "
                "text in BERT's format (one sentence per line) or JSONL with a 'text' field",
                what, 100 * self.discarded_share,
            )


@dataclass(frozen=True)
class Shard:
    """Bytes ``[start, end)`` of one corpus file; it owns the documents whose first line starts in that range."""

    path: Path
    start: int
    end: int

    @property
    def jsonl(self) -> bool:
        return self.path.suffix in (".jsonl", ".json")


def shards(files: Iterable[Path], shard_bytes: int | None = None) -> list[Shard]:
    """Cut each file into ranges of about ``shard_bytes`` (whole files when None)."""
    out = []
    for path in files:
        size = path.stat().st_size
        step = size if not shard_bytes else max(1, int(shard_bytes))
        out.extend(Shard(path, s, min(s + step, size)) for s in range(0, size, step))
    return out


def split_sentences(text: str) -> list[str]:
    """Split a JSONL document into sentences: at line breaks, then after ``.``, ``!``, ``?`` before a capital."""
    out = []
    for line in text.splitlines():
        out.extend(s.strip() for s in _SENTENCE_END.split(line) if s.strip())
    return out


class _Reader:
    """Reads the documents of one shard (see :func:`read_shard`)."""

    def __init__(self, shard: Shard, encoding: str, max_sentence_chars: int, stats: ReadStats, progress) -> None:
        self.shard, self.encoding, self.cap, self.stats, self.progress = shard, encoding, max_sentence_chars, stats, progress
        self.start = 0
        self._line_base: int | None = None

    def where(self, offset: int, lines_before: int) -> str:
        """``file:line`` of the line at byte ``offset``; the lines before the shard are counted only when asked."""
        if self._line_base is None:
            self._line_base = 0
            with open(self.shard.path, "rb") as f:
                remaining = self.start
                while remaining > 0:
                    block = f.read(min(remaining, 1 << 20))
                    self._line_base += block.count(b"\n")
                    remaining -= len(block)
        return f"{self.shard.path}:{self._line_base + lines_before + 1}"

    def decode(self, raw: bytes, offset: int, lines_before: int) -> str:
        if b"\x00" in raw:
            raise CorpusError(
                f"{self.where(offset, lines_before)}: contains NUL bytes, so this looks like a binary file, not text; "
                "remove it from the corpus (or, for UTF-16 text, convert it: iconv -f UTF-16 -t UTF-8 FILE > FILE.txt)"
            )
        try:
            return raw.decode(self.encoding)
        except UnicodeDecodeError as e:
            bom = " (the file starts with a UTF-16 byte-order mark)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
            raise CorpusError(
                f"{self.where(offset, lines_before)}: not valid {self.encoding}{bom}: {e.reason} at byte {e.start + 1} "
                f"of the line ({raw[max(0, e.start - 8) : e.start + 8]!r}); give the file's encoding (data.encoding, "
                "or --encoding of multibert text-prep; e.g. latin-1 or cp1252) or convert the file to UTF-8 "
                "(iconv -f ENCODING -t UTF-8 FILE > FILE.utf8.txt)"
            ) from None

    def sentences(self, text: str, split: bool, offset: int, lines_before: int) -> list[str]:
        """Sentences of a JSONL document (``split``) or of one line; long ones split at punctuation, then capped."""
        pieces = split_sentences(text) if split or len(text) > self.cap else [text.strip()]
        for i, piece in enumerate(pieces):
            if len(piece) > self.cap:
                self.stats.cut_sentences += 1
                self.stats.cut_chars += len(piece) - self.cap
                self.stats.first_cut = self.stats.first_cut or self.where(offset, lines_before)
                pieces[i] = piece[: self.cap]
            self.stats.chars += len(pieces[i])
        return pieces

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        shard = self.shard
        size = shard.path.stat().st_size
        with open(shard.path, "rb") as f:
            self.start, prev_blank = _align(f, shard.start, self.encoding)
            end = _align(f, shard.end, self.encoding)[0] if shard.end < size else size
            f.seek(self.start)
            offset, lines = self.start, 0
            document: list[str] = []
            doc_start = -1
            for raw in f:
                line_offset, offset = offset, offset + len(raw)
                if self.progress is not None and line_offset < end:
                    self.progress.update(min(len(raw), end - line_offset))
                if shard.jsonl:
                    if line_offset >= end:
                        break
                    if raw.strip():
                        sentences = self._json_document(raw, line_offset, lines)
                        if sentences:
                            yield line_offset, sentences
                    lines += 1
                    continue
                text = self.decode(raw, line_offset, lines)
                if not text.strip():
                    if document:
                        yield doc_start, document
                        document = []
                    elif line_offset >= end:
                        break
                    prev_blank = True
                elif document:
                    document.extend(self.sentences(text, False, line_offset, lines))
                elif line_offset >= end:
                    break
                elif prev_blank:  # the first line of a document this shard owns
                    doc_start = line_offset
                    document = self.sentences(text, False, line_offset, lines)
                    prev_blank = False
                else:
                    prev_blank = False  # inside a document that the previous shard owns
                lines += 1
            if document:
                yield doc_start, document

    def _json_document(self, raw: bytes, offset: int, lines: int) -> list[str]:
        try:
            record = json.loads(self.decode(raw, offset, lines))
        except json.JSONDecodeError as e:
            raise CorpusError(f"{self.where(offset, lines)}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise CorpusError(f"{self.where(offset, lines)}: expected an object with a string field 'text'")
        return self.sentences(record["text"], True, offset, lines)


def _align(f, position: int, encoding: str) -> tuple[int, bool]:
    """The first line start at or after ``position``, and whether the line before it is blank (True at 0)."""
    if position <= 0:
        return 0, True
    f.seek(position - 1)
    start = position - 1 + len(f.readline())  # past the line that holds byte ``position - 1``
    line, back = b"", start - 1  # the line before ``start`` ends with the newline at ``start - 1``
    while back > 0 and not line.strip():
        step = min(back, 4096)
        f.seek(back - step)
        block = f.read(step)
        cut = block.rfind(b"\n")
        line = block[cut + 1 :] + line
        if cut >= 0:
            break
        back -= step
    return start, not line.decode(encoding, errors="replace").strip()


def read_shard(
    shard: Shard,
    encoding: str = "utf-8",
    max_sentence_chars: int = MAX_SENTENCE_CHARS,
    stats: ReadStats | None = None,
    progress: object | None = None,
) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(byte offset, sentences)`` for every document whose first line starts in ``shard``.

    Raises:
        CorpusError: a line does not decode, holds NUL bytes, or (JSONL) is not an object with a ``text`` string.
    """
    stats = stats if stats is not None else ReadStats()
    for offset, document in _Reader(shard, encoding, max_sentence_chars, stats, progress):
        stats.documents += 1
        stats.sentences += len(document)
        yield offset, document


def read_documents(
    files: Corpus,
    progress: object | None = None,
    encoding: str = "utf-8",
    max_sentence_chars: int = MAX_SENTENCE_CHARS,
    stats: ReadStats | None = None,
) -> Iterator[list[str]]:
    """Yield each document of the corpus as a list of sentences, streaming line by line."""
    check_encoding(encoding)
    for shard in shards(corpus_files(files)):
        for _, document in read_shard(shard, encoding, max_sentence_chars, stats, progress):
            yield document
