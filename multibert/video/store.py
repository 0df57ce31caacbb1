"""Per-video clip features on disk, read without loading them all (the paper's scale: ≈ 55M clips × 1024 floats,
about 225 GB, far more than memory).

:class:`FeatureStore` indexes one feature file per video (``<video_id>.safetensors`` with ``features`` (n, D) and
optional ``starts`` (n,), as ``multibert tokenize-video`` writes them, or ``<video_id>.npy`` (n, D)) by reading only
the headers, then either draws a uniform sample of rows for fitting the k-means (:meth:`FeatureStore.sample`: at
most ``max_rows``, and at most what ``max_memory_mb`` holds; one video's file in memory at a time besides the
sample) or walks the videos one at a time (:meth:`FeatureStore.iter_videos`) for assignment.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

log = logging.getLogger(__name__)


def read_features(path: str | Path, clip_seconds: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of one video: ``.npy`` (n, D) or ``.safetensors`` with ``features`` [+ ``starts``].

    Without ``starts``, clip i starts at ``i · clip_seconds``.

    Shapes:
        → features (n, D) float32, starts (n,) float64.
    """
    path = Path(path)
    if path.suffix == ".npy":
        feats = torch.from_numpy(np.load(path, allow_pickle=False)).float()
        starts = None
    elif path.suffix == ".safetensors":
        state = load_file(str(path))
        if "features" not in state:
            raise KeyError(f"{path} has no 'features' tensor (keys: {sorted(state)})")
        feats, starts = state["features"].float(), state.get("starts")
    else:
        raise ValueError(f"{path}: precomputed features must be .npy or .safetensors")
    if feats.ndim != 2:
        raise ValueError(f"{path}: features must be (clips, D), got shape {tuple(feats.shape)}")
    if starts is None:
        starts = torch.arange(feats.size(0), dtype=torch.float64) * clip_seconds
    if starts.shape != (feats.size(0),):
        raise ValueError(f"{path}: 'starts' has shape {tuple(starts.shape)}, expected ({feats.size(0)},)")
    return feats, starts.double()


def feature_shape(path: str | Path) -> tuple[int, int]:
    """``(n, D)`` of a feature file, from its header only."""
    path = Path(path)
    if path.suffix == ".npy":
        shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
    else:
        with safe_open(str(path), framework="pt") as f:
            if "features" not in f.keys():
                raise KeyError(f"{path} has no 'features' tensor (keys: {sorted(f.keys())})")
            shape = tuple(f.get_slice("features").get_shape())
    if len(shape) != 2:
        raise ValueError(f"{path}: features must be (clips, D), got shape {tuple(shape)}")
    return int(shape[0]), int(shape[1])


class FeatureStore:
    """Feature files of many videos, indexed by their headers.

    Args:
        files: video id → its feature file.
        clip_seconds: clip length, for files without ``starts``.
    """

    def __init__(self, files: dict[str, Path], clip_seconds: float) -> None:
        if not files:
            raise ValueError("no feature file to read")
        self.files = dict(files)
        self.clip_seconds = clip_seconds
        shapes = {vid: feature_shape(p) for vid, p in self.files.items()}
        dims = {d for _, d in shapes.values()}
        if len(dims) != 1:
            raise ValueError(f"feature files disagree on the feature size: {sorted(dims)}")
        self.dim = dims.pop()
        self.counts = {vid: n for vid, (n, _) in shapes.items()}

    @property
    def num_rows(self) -> int:
        return sum(self.counts.values())

    def read(self, vid: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and start times of one video. Shapes: → (n, D), (n,)."""
        return read_features(self.files[vid], self.clip_seconds)

    def iter_videos(self) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        """``(video id, features (n, D), starts (n,))``, one video in memory at a time, in id order."""
        for vid in sorted(self.files):
            feats, starts = self.read(vid)
            yield vid, feats, starts

    def sample(self, max_rows: int, max_memory_mb: float | None = None, seed: int = 0) -> torch.Tensor:
        """A uniform random sample of rows without replacement, read video by video.

        Args:
            max_rows: at most this many rows (all rows when there are fewer).
            max_memory_mb: at most as many rows as fit in this many MB of float32; a sample cut by it is logged.
            seed: seed of the draw.

        Shapes:
            → (n, D) float32 with n = min(total rows, max_rows, max_memory_mb · 2^20 / (4 D)).
        """
        total = self.num_rows
        n = min(total, max_rows)
        if max_memory_mb is not None:
            cap = int(max_memory_mb * 2**20 // (4 * self.dim))
            if cap < 1:
                raise ValueError(f"max_memory_mb={max_memory_mb} holds no {self.dim}-d feature row")
            if cap < n:
                log.warning(
                    "k-means sample cut from %d to %d rows by the memory cap of %g MB (raise it to fit on more)",
                    n, cap, max_memory_mb,
                )
                n = cap
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(total, size=n, replace=False)) if n < total else np.arange(total)
        out = torch.empty(n, self.dim)
        offset, filled = 0, 0
        for vid in sorted(self.files):
            count = self.counts[vid]
            lo, hi = np.searchsorted(chosen, [offset, offset + count])
            if hi > lo:
                rows = torch.from_numpy(chosen[lo:hi] - offset)
                feats, _ = self.read(vid)  # one video's features in memory besides the sample
                out[filled : filled + rows.numel()] = feats[rows]
                filled += rows.numel()
            offset += count
        return out
