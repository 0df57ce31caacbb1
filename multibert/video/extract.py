"""Sharded, resumable clip-feature extraction through Lightning (``Trainer.predict``), for the paper's scale
(312K videos, ≈ 55M clips): every rank of every node takes its own shard of the video list, DataLoader workers
decode while the network runs, and each video's features land in their own file the moment it is done.

- :class:`ClipChunks` (an ``IterableDataset``): video ``i`` of the sorted list belongs to rank ``i mod world``; a
  rank's DataLoader workers split its videos again. A video whose feature file already exists with the same
  settings is skipped (a rerun after a kill redoes only what was not finished: files are written to a temporary
  name and renamed, so a killed write leaves nothing). Each video is decoded in chunks of ``chunk_clips`` clips
  (one chunk = one forward pass), so memory does not grow with its length.
- :class:`ExtractionTask` runs the extractor in ``predict_step`` (device, precision and strategy come from the
  Trainer: ``--trainer.devices 8 --trainer.num_nodes 4 --trainer.strategy ddp``).
- :class:`FeatureWriter` (a callback) gathers a video's chunks and writes ``features/<video_id>.safetensors``
  (``features`` (n, D), ``starts`` (n,); the settings, the source file, the rank and any decoding problem in the
  header), or ``skipped/<video_id>.json`` when the video yields no clip, and at the end each rank's counts in
  ``extract/rank<r>.json``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from multibert.video.decode import DecodeReport, VideoDecodeError, iter_clips
from multibert.video.features import ClipFeatureExtractor

log = logging.getLogger(__name__)


@dataclass
class ClipChunk:
    """Up to ``chunk_clips`` consecutive clips of one video (the unit of one forward pass).

    Attributes:
        video_id, source: the video.
        frames: (n, F, h, w, 3) uint8; n may be 0 for the closing chunk of a video.
        starts: (n,) float64 clip start times.
        last: the video's final chunk (its file can be written).
        status: ``"ok"``, ``"cached"`` (already extracted; no frames) or ``"skipped"`` (no clip; see ``reason``).
        reason: why a video was skipped, or the loss of a partial video (a late decode error, a truncation).
        decoded_seconds: playback time decoded (set on the last chunk).
    """

    video_id: str
    source: str
    frames: torch.Tensor
    starts: torch.Tensor
    last: bool
    status: str = "ok"
    reason: str = ""
    decoded_seconds: float = 0.0


def atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Write safetensors under a temporary name, then rename: a killed process leaves no half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def cache_matches(path: Path, settings: dict[str, str]) -> bool:
    """Whether ``path`` is a complete feature file made with ``settings``."""
    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # an unreadable file: redo it
        return False
    return all(meta.get(k) == v for k, v in settings.items())


class ClipChunks(IterableDataset):
    """This rank's (and this worker's) videos as chunks of clips (see the module docstring).

    Args:
        videos: ``(video id, path)`` of every video, in a fixed order shared by all ranks.
        out: the folder holding ``features/``.
        settings: extractor settings; a feature file with the same ones is reused.
        fps, clip_frames, size: decoding (:func:`multibert.video.decode.iter_clips`).
        chunk_clips: clips per chunk.
        rank, world_size: this process's shard.
    """

    def __init__(
        self,
        videos: list[tuple[str, str]],
        out: Path,
        settings: dict[str, str],
        fps: float,
        clip_frames: int,
        size: Any,
        chunk_clips: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.videos = videos
        self.out = Path(out)
        self.settings = settings
        self.fps, self.clip_frames, self.size = fps, clip_frames, size
        self.chunk_clips = chunk_clips
        self.rank, self.world_size = rank, world_size

    def shard(self) -> list[tuple[str, str]]:
        """The videos of this rank and DataLoader worker."""
        mine = self.videos[self.rank :: self.world_size]
        worker = get_worker_info()
        return mine if worker is None else mine[worker.id :: worker.num_workers]

    def __iter__(self):
        for vid, path in self.shard():
            yield from self._video(vid, path)

    def _empty(self, vid: str, path: str, status: str, reason: str = "", seconds: float = 0.0) -> ClipChunk:
        frames = torch.zeros((0, self.clip_frames, 1, 1, 3), dtype=torch.uint8)
        return ClipChunk(vid, path, frames, torch.zeros(0, dtype=torch.float64), True, status, reason, seconds)

    def _video(self, vid: str, path: str):
        if cache_matches(self.out / "features" / f"{vid}.safetensors", self.settings):
            yield self._empty(vid, path, "cached")
            return
        report = DecodeReport()
        frames: list[np.ndarray] = []
        starts: list[float] = []
        sent = 0
        try:
            for clip in iter_clips(path, self.fps, self.clip_frames, self.size, report):
                frames.append(clip.frames)
                starts.append(clip.start)
                if len(frames) == self.chunk_clips:
                    yield ClipChunk(vid, path, torch.from_numpy(np.stack(frames)), torch.tensor(starts, dtype=torch.float64), False)
                    sent += len(frames)
                    frames, starts = [], []
        except VideoDecodeError as err:
            yield self._empty(vid, path, "skipped", str(err))
            return
        if sent + len(frames) == 0:
            reason = report.problem() or f"shorter than one clip ({self.clip_frames} frames at {self.fps:g} fps)"
            yield self._empty(vid, path, "skipped", reason, report.decoded_seconds)
            return
        batch = torch.from_numpy(np.stack(frames)) if frames else self._empty(vid, path, "ok").frames
        yield ClipChunk(
            vid, path, batch, torch.tensor(starts, dtype=torch.float64), True, "ok", report.problem() or "",
            report.decoded_seconds,
        )


class ExtractionTask(pl.LightningModule):
    """Runs a clip feature extractor in ``Trainer.predict`` over :class:`ClipChunks`.

    Args:
        extractor: the network (or the light descriptor).
        dataset_args: :class:`ClipChunks` arguments except the shard, which comes from the trainer.
        num_workers: DataLoader workers that decode while the extractor runs.
    """

    def __init__(self, extractor: ClipFeatureExtractor, dataset_args: dict[str, Any], num_workers: int = 0) -> None:
        super().__init__()
        self.extractor = extractor
        self.dataset_args = dataset_args
        self.num_workers = num_workers

    def predict_dataloader(self) -> DataLoader:
        # built here, after the process group exists, so that every rank knows its shard
        dataset = ClipChunks(**self.dataset_args, rank=self.trainer.global_rank, world_size=self.trainer.world_size)
        return DataLoader(
            dataset, batch_size=None, num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
            prefetch_factor=2 if self.num_workers else None,
        )

    def predict_step(self, chunk: ClipChunk, batch_idx: int) -> torch.Tensor:
        if chunk.frames.size(0) == 0:
            return torch.zeros(0, self.extractor.feature_size)
        return self.extractor(chunk.frames).float().cpu()  # (n, D)


class FeatureWriter(pl.Callback):
    """Collects each video's chunks and writes its feature file (see the module docstring).

    Args:
        out: the tokenization folder.
        settings: written into every feature file's header (the cache key).
    """

    def __init__(self, out: Path, settings: dict[str, str]) -> None:
        self.out = Path(out)
        self.settings = settings
        self.pending: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        self.stats: dict[str, Any] = dict(extracted=[], cached=[], skipped=[], partial=[], clips=0, seconds=0.0)
        self.start = time.perf_counter()
        self.first_batch_end: float | None = None  # steady-state throughput: from the first batch's end on
        self.steady_clips = 0

    def on_predict_batch_end(self, trainer, pl_module, outputs: torch.Tensor, batch: ClipChunk, batch_idx: int,
                             dataloader_idx: int = 0) -> None:
        now = time.perf_counter()
        if self.first_batch_end is None:
            self.first_batch_end = now
        else:
            self.steady_clips += batch.frames.size(0)
        self.stats["steady_seconds"] = now - self.first_batch_end
        self.stats["steady_clips"] = self.steady_clips
        vid = batch.video_id
        if batch.status == "cached":
            self.stats["cached"].append(vid)
            return
        if batch.status == "skipped":
            self.pending.pop(vid, None)
            self._skip(vid, batch.source, batch.reason)
            return
        feats, starts = self.pending.setdefault(vid, ([], []))
        feats.append(outputs.cpu())
        starts.append(batch.starts.cpu())
        if not batch.last:
            return
        feats, starts = self.pending.pop(vid)
        features, clip_starts = torch.cat(feats), torch.cat(starts)
        meta = {**self.settings, "source": batch.source, "rank": str(trainer.global_rank)}
        if batch.reason:
            meta["problem"] = batch.reason
            self.stats["partial"].append([batch.source, batch.reason])
            log.warning("video %s is partial: %s", batch.source, batch.reason)
        atomic_save({"features": features.contiguous(), "starts": clip_starts.contiguous()},
                    self.out / "features" / f"{vid}.safetensors", meta)
        (self.out / "skipped" / f"{vid}.json").unlink(missing_ok=True)  # an earlier failure is resolved
        self.stats["extracted"].append(vid)
        self.stats["clips"] += features.size(0)
        self.stats["seconds"] += batch.decoded_seconds

    def _skip(self, vid: str, source: str, reason: str) -> None:
        log.warning("skipping video %s: %s", source, reason)
        record = {"path": source, "reason": reason, **{k: self.settings[k] for k in ("extractor",)}}
        path = self.out / "skipped" / f"{vid}.json"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(record) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        self.stats["skipped"].append([source, reason])

    def on_predict_end(self, trainer, pl_module) -> None:
        if self.pending:  # cannot happen unless a chunk stream was cut: say so rather than drop it silently
            log.warning("%d videos ended without their last chunk and were not written: %s", len(self.pending),
                        sorted(self.pending)[:5])
        self.stats["wall_seconds"] = time.perf_counter() - self.start
        path = self.out / "extract" / f"rank{trainer.global_rank}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.stats) + "\n", encoding="utf-8")
