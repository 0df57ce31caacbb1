"""Streaming video decoding into fixed-length clips with PyAV (VideoBERT's input, Sun et al., ICCV 2019,
arXiv 1904.01766, Sec. 4.2: frames at 20 fps, non-overlapping 30-frame clips of 1.5 s).

Frames are decoded one at a time, resampled to the target rate by holding the latest decoded frame (a target
instant ``n / fps`` shows the last frame whose timestamp is ``<= n / fps``; this both drops and repeats frames),
scaled by FFmpeg's swscale (shorter side to ``size``) and centre-cropped to ``size × size``. Only one clip's frames
are held at a time, so an hour-long video never sits in memory whole.

A trailing partial clip (fewer than ``clip_frames`` frames) is dropped, as a non-overlapping cut implies. A file
FFmpeg cannot open or that fails while decoding raises :class:`VideoDecodeError`; :func:`safe_clips` turns that
into a logged, counted skip (:class:`SkipLog`) so a folder run never stops on one bad file.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

log = logging.getLogger(__name__)

#: File name endings treated as videos when a folder is scanned.
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mov", ".mpg", ".mpeg", ".ts", ".flv", ".ogv", ".3gp")


class VideoDecodeError(RuntimeError):
    """A video could not be opened or decoded; the message names the file and FFmpeg's reason."""


@dataclass(frozen=True)
class Clip:
    """One non-overlapping clip.

    Attributes:
        index: position of the clip in its video (0, 1, ...).
        start: time of its first frame in seconds; the clip spans ``[start, start + clip_frames / fps)``.
        frames: (F, S, S, 3) uint8 RGB frames.
    """

    index: int
    start: float
    frames: np.ndarray


@dataclass
class SkipLog:
    """Videos that were skipped and why; every skip is also logged as a warning naming the file."""

    skipped: list[tuple[str, str]] = field(default_factory=list)

    def add(self, path: str | Path, reason: str) -> None:
        self.skipped.append((str(path), reason))
        log.warning("skipping video %s: %s", path, reason)

    def __len__(self) -> int:
        return len(self.skipped)


def list_videos(folder: str | Path) -> list[Path]:
    """Video files under ``folder`` (recursively), sorted; raises if there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"video folder {folder} does not exist")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
    if not paths:
        raise ValueError(f"no video file ({', '.join(VIDEO_EXTENSIONS)}) under {folder}")
    return paths


def _scaled_size(width: int, height: int, size: int) -> tuple[int, int]:
    """Output (width, height) with the shorter side equal to ``size`` (even numbers keep swscale exact)."""
    if width <= height:
        return size, max(size, int(round(height * size / width)))
    return max(size, int(round(width * size / height))), size


def iter_frames(path: str | Path, fps: float = 20.0, size: int | None = 224) -> Iterator[tuple[float, np.ndarray]]:
    """Decode ``path`` and yield ``(time in seconds, (S, S, 3) uint8 RGB frame)`` at exactly ``fps``.

    Args:
        path: any file FFmpeg reads.
        fps: target frame rate; frames are dropped or repeated to reach it.
        size: shorter side after scaling and the side of the centre crop; ``None`` keeps the native frame.

    Raises:
        VideoDecodeError: the file cannot be opened, has no video stream, or fails while decoding.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path = Path(path)
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise VideoDecodeError(f"{path}: cannot open ({err})") from err
    with container:
        if not container.streams.video:
            raise VideoDecodeError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        reformatter = VideoReformatter()
        n = 0  # index of the next target instant n / fps
        held: tuple[float, np.ndarray] | None = None  # the latest decoded frame not yet superseded
        last_duration = 0.0
        try:
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                t = float(frame.time)
                if held is not None:
                    last_duration = max(t - held[0], 0.0) or last_duration
                    # every target instant before this frame's time shows the held frame (instants before the
                    # first frame show the first frame)
                    while n / fps < t - 1e-9:
                        yield n / fps, held[1]
                        n += 1
                held = (t, _to_rgb(frame, size, reformatter))
        except av.error.FFmpegError as err:
            raise VideoDecodeError(f"{path}: decoding failed after {n} output frames ({err})") from err
        if held is None:
            return
        if not last_duration:  # a one-frame video: use the stream's nominal rate
            rate = float(stream.average_rate or stream.guessed_rate or fps)
            last_duration = 1.0 / rate
        while n / fps < held[0] + last_duration - 1e-9:
            yield n / fps, held[1]
            n += 1


def _to_rgb(frame: av.VideoFrame, size: int | None, reformatter: VideoReformatter) -> np.ndarray:
    # one reformatter per video keeps swscale's context: about 3x faster than frame.reformat / to_ndarray(format)
    if size is None:
        return reformatter.reformat(frame, format="rgb24").to_ndarray()  # (H, W, 3)
    w, h = _scaled_size(frame.width, frame.height, size)
    rgb = reformatter.reformat(frame, width=w, height=h, format="rgb24").to_ndarray()  # (h, w, 3)
    top, left = (h - size) // 2, (w - size) // 2
    return rgb[top : top + size, left : left + size]  # (S, S, 3)


def iter_clips(
    path: str | Path, fps: float = 20.0, clip_frames: int = 30, size: int | None = 224
) -> Iterator[Clip]:
    """Yield the non-overlapping clips of ``path``; a trailing partial clip is dropped.

    Shapes:
        each ``Clip.frames``: (clip_frames, S, S, 3) uint8.
    """
    if clip_frames < 1:
        raise ValueError(f"clip_frames must be >= 1, got {clip_frames}")
    buffer: list[np.ndarray] = []
    index = 0
    for _, frame in iter_frames(path, fps, size):
        buffer.append(frame)
        if len(buffer) == clip_frames:
            yield Clip(index, index * clip_frames / fps, np.stack(buffer))  # (F, S, S, 3)
            buffer.clear()
            index += 1


def expected_clips(duration: float, fps: float, clip_frames: int) -> int:
    """Clips :func:`iter_clips` yields for a video of ``duration`` seconds: ``floor(ceil(duration·fps) / F)``."""
    return math.ceil(duration * fps - 1e-9) // clip_frames


def safe_clips(
    path: str | Path, skips: SkipLog, fps: float = 20.0, clip_frames: int = 30, size: int | None = 224
) -> list[Clip] | None:
    """All clips of one video, or ``None`` (logged and counted in ``skips``) if it is unreadable or too short.

    Holds every clip of the video: use it for short videos; :func:`iter_clips` streams.
    """
    try:
        clips = list(iter_clips(path, fps, clip_frames, size))
    except VideoDecodeError as err:
        skips.add(path, str(err))
        return None
    if not clips:
        skips.add(path, f"shorter than one clip ({clip_frames} frames at {fps} fps)")
        return None
    return clips
