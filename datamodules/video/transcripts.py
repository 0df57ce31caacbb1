"""Timestamped transcripts of videos: WebVTT, SRT, the YouCook2 annotation JSON and the HowTo100M caption JSON.

Every reader returns :class:`Sentence` objects (start and end in seconds, text) sorted by start time. Formats:

- WebVTT (``.vtt``): cues ``HH:MM:SS.mmm --> HH:MM:SS.mmm`` (hours optional) with cue settings, identifiers,
  ``NOTE`` / ``STYLE`` / ``REGION`` blocks and inline tags (``<c>``, ``<00:00:01.000>``, ``<v Speaker>``) handled.
  YouTube's automatic captions repeat each line in the next cue (rolling captions): a cue whose text only repeats
  the previous cue's last line is dropped and the repeated prefix is stripped.
- SRT (``.srt``): numbered cues ``HH:MM:SS,mmm --> HH:MM:SS,mmm``.
- YouCook2 (Zhou et al., 2018) ``youcookii_annotations_trainval.json`` (human captions, not ASR; its
  ``validation`` videos are evaluation videos: :func:`youcook2_subsets`):
  ``{"database": {video_id: {"annotations": [{"segment": [start, end], "sentence": ...}, ...], ...}}}``.
- HowTo100M (Miech et al., 2019) ``caption.json``: ``{video_id: {"start": [...], "end": [...], "text": [...]}}``.

:func:`load_transcripts` takes a folder of ``<video_id>.vtt`` / ``.srt`` files or one JSON file of either kind. Cues are
returned as they come; :mod:`datamodules.video.sentences` turns ASR cues into sentences.
"""

from __future__ import annotations

import html
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})"
_CUE = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}")
_TAG = re.compile(r"<[^>]*>")


@dataclass(frozen=True)
class Sentence:
    """One transcript sentence: ``[start, end)`` in seconds and its text."""

    start: float
    end: float
    text: str


def _seconds(h: str | None, m: str, s: str, ms: str) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000


def _clean(text: str) -> str:
    return " ".join(html.unescape(_TAG.sub("", text)).split())


def _read_cues(path: Path) -> list[Sentence]:
    """Cues of a WebVTT or SRT file (the two share the cue syntax once headers and indices are skipped)."""
    text = path.read_text(encoding="utf-8-sig")
    blocks = re.split(r"\n\s*\n", text.replace("\r\n", "\n").replace("\r", "\n"))
    cues: list[Sentence] = []
    for block in blocks:
        lines = block.strip().split("\n")
        timing = next((i for i, line in enumerate(lines) if "-->" in line), None)
        if timing is None:
            continue  # WEBVTT header, NOTE, STYLE, REGION
        match = _CUE.match(lines[timing])
        if match is None:
            raise ValueError(
                f"{path}: malformed cue timing {lines[timing]!r}; expected 'HH:MM:SS.mmm --> HH:MM:SS.mmm'"
            )
        g = match.groups()
        start, end = _seconds(*g[:4]), _seconds(*g[4:])
        body = [_clean(line) for line in lines[timing + 1 :]]
        body = [line for line in body if line]
        if body:
            cues.append(Sentence(start, end, "\n".join(body)))
    return _merge_rolling(sorted(cues, key=lambda c: c.start))


def _merge_rolling(cues: list[Sentence]) -> list[Sentence]:
    """Drop the repeated line of rolling (YouTube auto-caption) cues; join remaining lines with spaces."""
    out: list[Sentence] = []
    previous_last = None
    for cue in cues:
        lines = cue.text.split("\n")
        if previous_last is not None and lines[0] == previous_last:
            lines = lines[1:]
        previous_last = cue.text.split("\n")[-1]
        text = " ".join(lines).strip()
        if text:
            out.append(Sentence(cue.start, cue.end, text))
    return out


def read_webvtt(path: str | Path) -> list[Sentence]:
    """Sentences of a WebVTT file."""
    path = Path(path)
    if not path.read_text(encoding="utf-8-sig").lstrip().startswith("WEBVTT"):
        raise ValueError(f"{path}: a WebVTT file must start with 'WEBVTT'")
    return _read_cues(path)


def read_srt(path: str | Path) -> list[Sentence]:
    """Sentences of an SRT file."""
    return _read_cues(Path(path))


def _youcook2(path: Path, data: dict) -> dict[str, list[Sentence]]:
    out: dict[str, list[Sentence]] = {}
    for vid, entry in data["database"].items():
        sentences = []
        for i, ann in enumerate(entry.get("annotations", [])):
            if "segment" not in ann or "sentence" not in ann:
                raise KeyError(f"{path}: database[{vid!r}].annotations[{i}] needs 'segment' and 'sentence'")
            start, end = ann["segment"]
            sentences.append(Sentence(float(start), float(end), _clean(ann["sentence"])))
        out[vid] = sorted(sentences, key=lambda s: s.start)
    return out


def _howto100m(path: Path, data: dict) -> dict[str, list[Sentence]]:
    out: dict[str, list[Sentence]] = {}
    for vid, entry in data.items():
        if not isinstance(entry, dict) or not {"start", "end", "text"} <= set(entry):
            raise KeyError(f"{path}: entry {vid!r} needs 'start', 'end' and 'text' lists (HowTo100M caption format)")
        starts, ends, texts = entry["start"], entry["end"], entry["text"]
        if not len(starts) == len(ends) == len(texts):
            raise ValueError(f"{path}: entry {vid!r} has {len(starts)} starts, {len(ends)} ends, {len(texts)} texts")
        sentences = [Sentence(float(s), float(e), _clean(str(t))) for s, e, t in zip(starts, ends, texts)]
        out[vid] = sorted((s for s in sentences if s.text), key=lambda s: s.start)
    return out


def youcook2_subsets(path: str | Path) -> dict[str, str]:
    """Video id → split (``training``, ``validation``, ``testing``) of a YouCook2 annotation file."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "database" not in data:
        raise ValueError(f"{path} is not a YouCook2 annotation file (no 'database' key)")
    return {vid: str(entry.get("subset", "unknown")) for vid, entry in data["database"].items()}


def read_transcript_json(path: str | Path) -> dict[str, list[Sentence]]:
    """A YouCook2 annotation file or a HowTo100M caption file, told apart by the ``database`` key."""
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object (YouCook2 annotations or HowTo100M captions)")
    return _youcook2(path, data) if "database" in data else _howto100m(path, data)


def load_transcripts(source: str | Path) -> dict[str, list[Sentence]]:
    """Transcripts by video id from a folder of ``<video_id>.vtt`` / ``.srt`` files or a JSON file."""
    source = Path(source)
    if source.is_file():
        return read_transcript_json(source)
    if not source.is_dir():
        raise FileNotFoundError(f"transcripts {source} is neither a folder of .vtt/.srt files nor a JSON file")
    out: dict[str, list[Sentence]] = {}
    for path in sorted(source.rglob("*")):
        suffix = path.suffix.lower()
        if suffix not in (".vtt", ".srt"):
            continue
        if path.stem in out:
            raise ValueError(f"two transcripts for video {path.stem!r} under {source}")
        out[path.stem] = read_webvtt(path) if suffix == ".vtt" else read_srt(path)
    if not out:
        raise ValueError(f"no .vtt or .srt transcript under {source}")
    return out
