"""SYNTHETIC instructional videos for VideoBERT's embedded default (Sun et al., ICCV 2019, arXiv 1904.01766).

Everything this module writes is synthetic, and says so: a ``SYNTHETIC.txt`` note in the output folder, a
``NOTE`` block in every WebVTT transcript and a ``synthetic`` field in every label line.

Each video is a sequence of actions. In each action one object (a ``square``, ``circle``, ``triangle``, ``cross`` or
``bar`` in ``red``, ``green``, ``blue`` or ``yellow``) performs one of seven actions: ``rotate``, ``grow``,
``shrink``, ``lift`` (moves up), ``drop`` (moves down), ``push`` (moves right), ``pull`` (moves left), on a noisy
dark background. A circle is never rotated (it would look still). The transcript (WebVTT) names the action and
the object with a sentence drawn from a few prefixes and suffixes, like the narration of a cooking video, and is laid
out like YouTube's automatic captions: no punctuation, each sentence spread over two cues that break it mid-way,
spoken during the first 80 % of its action (a pause follows), so the datamodule has to find the sentences again
(:mod:`datamodules.video.sentences`: at the pauses).

The zero-shot template (:data:`EVAL_TEMPLATE`, the paper's "now let me show you how to [MASK] the [MASK]") is
never a training sentence: evaluation is not a cloze test on memorised text. Its words are in the vocabulary.

Output layout::

    out/SYNTHETIC.txt
    out/vocab.txt              a WordPiece vocabulary covering every transcript word (BERT's special tokens first)
    out/train/<id>.mp4, <id>.vtt
    out/test/<id>.mp4          held-out videos (different seed) for zero-shot classification
    out/test_labels.jsonl      {"video_id", "start", "end", "verb", "noun", "synthetic": true} per action
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

log = logging.getLogger(__name__)

VERBS = ("rotate", "grow", "shrink", "lift", "drop", "push", "pull")
NOUNS = ("square", "circle", "triangle", "cross", "bar")
COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (60, 90, 235), "yellow": (230, 210, 40)}
#: the zero-shot evaluation template (the paper's); no training sentence uses it
EVAL_TEMPLATE = "now let me show you how to [MASK] the [MASK]"
#: training sentences are PREFIX + "{verb} the {noun}": prefixes of 2-8 words (so the verb is seen at every position
#: the evaluation template puts it) that use the template's words in other orders, as real narration does, but
#: never its "now let me show you how to" itself
PREFIXES = (
    "watch me", "next i", "you can", "let me", "now we", "let us now", "it is time to", "you have to",
    "i will show how we", "now you can see how i", "now you can see how we will", "so now it is time for me to",
)
#: no colour or suffix in the sentence: with 64 videos, a rarer context would name its sentence (and so its verb) by
#: itself, and a tiny model memorises that instead of looking at the video
SUFFIXES = ("",)
#: a few full sentence shapes, for the tests and the README
TEMPLATES = tuple(f"{p} {{verb}} the {{noun}}" for p in PREFIXES)
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
NOTE = "SYNTHETIC data drawn by multibert's datamodules/video/synthetic.py; not real video."


@dataclass(frozen=True)
class Action:
    """One labelled action of a synthetic video, in seconds."""

    start: float
    end: float
    verb: str
    noun: str
    colour: str
    sentence: str


def shape_mask(noun: str, u: np.ndarray, v: np.ndarray, s: float) -> np.ndarray:
    """Boolean mask of a shape of half-size ``s`` in object coordinates ``(u, v)`` (pixels, y down)."""
    if noun == "square":
        return (np.abs(u) <= s) & (np.abs(v) <= s)
    if noun == "circle":
        return u**2 + v**2 <= s**2
    if noun == "triangle":  # apex up
        return (v <= s) & (v >= -s) & (np.abs(u) <= (v + s) / 2)
    if noun == "cross":
        t = s / 3
        return ((np.abs(u) <= t) & (np.abs(v) <= s)) | ((np.abs(v) <= t) & (np.abs(u) <= s))
    if noun == "bar":
        return (np.abs(u) <= s) & (np.abs(v) <= s / 3)
    raise ValueError(f"unknown shape {noun!r}; choose one of {NOUNS}")


def draw_action(
    verb: str, noun: str, colour: str, n_frames: int, size: int, rng: np.random.Generator
) -> Iterable[np.ndarray]:
    """Frames (size, size, 3) uint8 of one action."""
    base = size * 0.16
    travel = size * 0.35
    cx, cy = size / 2 + rng.uniform(-0.08, 0.08) * size, size / 2 + rng.uniform(-0.08, 0.08) * size
    angle0 = rng.uniform(0, np.pi / 4)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    rgb = np.array(COLOURS[colour], dtype=np.float32)
    for i in range(n_frames):
        p = i / max(1, n_frames - 1)
        x, y, s, a = cx, cy, base, angle0
        if verb == "rotate":
            a = angle0 + p * np.pi / 2
        elif verb == "grow":
            s = base * (0.55 + 0.9 * p)
        elif verb == "shrink":
            s = base * (1.45 - 0.9 * p)
        elif verb == "lift":
            y = cy + travel / 2 - travel * p
        elif verb == "drop":
            y = cy - travel / 2 + travel * p
        elif verb == "push":
            x = cx - travel / 2 + travel * p
        elif verb == "pull":
            x = cx + travel / 2 - travel * p
        else:
            raise ValueError(f"unknown action {verb!r}; choose one of {VERBS}")
        du, dv = xx - x, yy - y
        u = np.cos(a) * du + np.sin(a) * dv
        v = -np.sin(a) * du + np.cos(a) * dv
        frame = 30 + rng.normal(0, 5, (size, size, 1)).astype(np.float32)  # noisy dark background
        frame = np.repeat(frame, 3, axis=2)  # (S, S, 3)
        frame[shape_mask(noun, u, v, s)] = rgb
        yield np.clip(frame, 0, 255).astype(np.uint8)


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: int, codec: str = "mpeg4") -> Path:
    """Encode RGB frames (H, W, 3) uint8 into ``path`` with PyAV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream(codec, rate=fps)
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.bit_rate = 2_000_000
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        if stream is None:
            raise ValueError(f"no frame to write to {path}")
        for packet in stream.encode():
            container.mux(packet)
    return path


def _timestamp(t: float) -> str:
    h, rem = divmod(t, 3600)
    m, s = divmod(rem, 60)
    return f"{int(h):02d}:{int(m):02d}:{s:06.3f}"


#: share of an action during which its sentence is spoken (a pause follows)
SPEECH_SHARE = 0.8


def write_webvtt(path: Path, actions: list[Action]) -> None:
    """Captions like YouTube's ASR: unpunctuated, each sentence over two cues that split it at its middle word,
    spoken over the first :data:`SPEECH_SHARE` of its action."""
    lines = ["WEBVTT", "", "NOTE", NOTE, ""]
    for a in actions:
        words = a.sentence.split()
        half = len(words) // 2
        said = (a.end - a.start) * SPEECH_SHARE
        cut = a.start + said * half / len(words)
        for start, end, part in ((a.start, cut, words[:half]), (cut, a.start + said, words[half:])):
            lines += [f"{_timestamp(start)} --> {_timestamp(end)}", " ".join(part), ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def make_video(
    path: Path, rng: np.random.Generator, actions: int, action_seconds: float, fps: int, size: int, codec: str
) -> list[Action]:
    """Draw and encode one synthetic video; return its labelled actions."""
    n = int(round(action_seconds * fps))
    plan: list[Action] = []
    for i in range(actions):
        noun = str(rng.choice(NOUNS))
        verbs = [v for v in VERBS if not (noun == "circle" and v == "rotate")]
        verb, colour = str(rng.choice(verbs)), str(rng.choice(list(COLOURS)))
        sentence = f"{rng.choice(PREFIXES)} {verb} the {noun}{rng.choice(SUFFIXES)}"
        plan.append(Action(i * action_seconds, (i + 1) * action_seconds, verb, noun, colour, sentence))
    frames = (f for a in plan for f in draw_action(a.verb, a.noun, a.colour, n, size, rng))
    write_video(path, frames, fps, codec)
    return plan


def synthetic_vocabulary() -> list[str]:
    """BERT's special tokens, then every word the templates can produce, then single characters."""
    words = {w for t in (*PREFIXES, *SUFFIXES, "the") for w in t.split()}
    words |= set(EVAL_TEMPLATE.replace("[MASK]", " ").split())
    words |= set(VERBS) | set(NOUNS) | set(COLOURS)
    chars = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789.,!?'"))
    return [*SPECIAL_TOKENS, *sorted(words), *(c for c in chars if c not in words), *(f"##{c}" for c in chars if c.isalnum())]


def make_synthetic_videos(
    *,
    out: str,
    num_videos: int = 64,
    num_test_videos: int = 16,
    actions_per_video: int = 4,
    action_seconds: float = 3.0,
    fps: int = 10,
    size: int = 64,
    codec: str = "mpeg4",
    seed: int = 0,
) -> dict[str, int]:
    """Draw the SYNTHETIC video set (``multibert make-synthetic-videos``).

    Args:
        out: output folder (created).
        num_videos: training videos, each with a WebVTT transcript.
        num_test_videos: held-out videos with action labels (``test_labels.jsonl``).
        actions_per_video: actions per video, one transcript sentence each.
        action_seconds: length of one action.
        fps: native frame rate of the written files.
        size: frame side in pixels.
        codec: any PyAV encoder (``mpeg4``, ``libx264``, ``libvpx-vp9``, ...).
        seed: random seed (the test set uses ``seed + 1``).

    Returns:
        counts of written training videos, test videos and labelled test actions.
    """
    root = Path(out)
    (root / "train").mkdir(parents=True, exist_ok=True)
    (root / "test").mkdir(parents=True, exist_ok=True)
    (root / "SYNTHETIC.txt").write_text(NOTE + "\n", encoding="utf-8")
    (root / "vocab.txt").write_text("\n".join(synthetic_vocabulary()) + "\n", encoding="utf-8")
    rng = np.random.default_rng(seed)
    for i in range(num_videos):
        vid = f"synth_{i:04d}"
        plan = make_video(root / "train" / f"{vid}.mp4", rng, actions_per_video, action_seconds, fps, size, codec)
        write_webvtt(root / "train" / f"{vid}.vtt", plan)
    rng = np.random.default_rng(seed + 1)
    labels = 0
    with open(root / "test_labels.jsonl", "w", encoding="utf-8") as f:
        for i in range(num_test_videos):
            vid = f"synth_test_{i:04d}"
            plan = make_video(root / "test" / f"{vid}.mp4", rng, actions_per_video, action_seconds, fps, size, codec)
            for a in plan:
                row = dict(video_id=vid, start=a.start, end=a.end, verb=a.verb, noun=a.noun, synthetic=True)
                f.write(json.dumps(row) + "\n")
                labels += 1
    log.info("wrote %d SYNTHETIC training videos and %d test videos to %s", num_videos, num_test_videos, root)
    return {"train_videos": num_videos, "test_videos": num_test_videos, "test_actions": labels}
