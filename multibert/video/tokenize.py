"""Tokenize videos into VideoBERT visual words: decode → clip features → hierarchical k-means words (Sun et al.,
ICCV 2019, arXiv 1904.01766, Sec. 4.2), over a folder, sharded over processes, resumable.

Output folder (the ``tokens_dir`` the video datamodule reads)::

    features/<video_id>.safetensors   "features" (n, D) float32, "starts" (n,) float64 clip start times;
                                      header: extractor settings, source file, rank, decoding problem if any
    skipped/<video_id>.json           a video that yielded no clip, and why
    codebook.safetensors              the hierarchical k-means tree (multibert.video.quantize)
    words/<video_id>.safetensors      "words" (n,) int64 visual word ids, "starts" (n,) float64
    manifest.json                     settings, clip length, videos, skipped and partial files and why

1. Features (:mod:`multibert.video.extract`): ``Trainer.predict`` over the video list, one shard per rank, decoding
   in DataLoader workers; the ``trainer`` argument takes Lightning Trainer flags (``--trainer.accelerator gpu
   --trainer.devices 8 --trainer.num_nodes 4 --trainer.strategy ddp``) or a trainer preset (``--config
   configs/trainer/ddp.yaml``; its logger and checkpoint callbacks are not used). A rerun skips every video whose
   feature file exists with the same settings, so a killed run resumes where it stopped.
2. Codebook: reused if one exists (or the one given with ``codebook``), else fitted on a uniform sample of at most
   ``max_fit_features`` clips (and at most ``max_memory_mb`` of them) read video by video from ``features/``
   (:class:`~multibert.video.store.FeatureStore`), on ``kmeans_device`` (CUDA when present).
3. Words: one video at a time, assigned on ``kmeans_device`` in chunks (rewritten on every run: cheap).

Steps 2-3 run on rank 0 after every rank has finished step 1. Features the user computed elsewhere are accepted
from ``features_dir`` (one ``<video_id>.npy`` (n, D) or ``.safetensors`` with ``features`` [+ ``starts``] per
video): step 1 is skipped.

Partial videos (a decode error late in the file, or a file that ends before its declared duration) keep the clips
decoded before the problem; they are counted in the summary and listed in the manifest with the loss in seconds.
"""

from __future__ import annotations

import inspect
import json
import logging
import shutil
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from multibert.core.progress import progress_bar
from multibert.video.decode import list_videos
from multibert.video.features import KINETICS400, build_extractor
from multibert.video.quantize import HierarchicalKMeans
from multibert.video.store import FeatureStore, read_features

log = logging.getLogger(__name__)

#: Trainer arguments that matter for feature extraction; other keys of a trainer preset (loggers, checkpointing,
#: step counts) are ignored.
TRAINER_KEYS = (
    "accelerator", "devices", "num_nodes", "strategy", "precision", "plugins", "default_root_dir",
    "enable_progress_bar", "inference_mode", "deterministic", "benchmark",
)

__all__ = ["TokenizeSummary", "read_features", "read_words", "tokenize_video_command", "tokenize_videos"]


@dataclass
class TokenizeSummary:
    """What a tokenization run did (on rank 0, over every rank)."""

    videos: int = 0
    extracted: int = 0
    cached: int = 0
    clips: int = 0
    seconds_of_video: float = 0.0
    wall_seconds: float = 0.0
    num_words: int = 0
    used_words: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    partial: list[tuple[str, str]] = field(default_factory=list)

    @property
    def realtime_factor(self) -> float:
        """Seconds of video extracted per wall-clock second."""
        return self.seconds_of_video / max(self.wall_seconds, 1e-9)


def read_words(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(words (n,) int64, starts (n,) float64)`` of one tokenized video."""
    state = load_file(str(path))
    if "words" not in state or "starts" not in state:
        raise KeyError(f"{path} is not a visual-word file (needs 'words' and 'starts', has {sorted(state)})")
    return state["words"].numpy(), state["starts"].numpy()


def _trainer_kwargs(trainer: dict[str, Any] | None, progress: bool) -> dict[str, Any]:
    given = dict(trainer or {})
    ignored = sorted(set(given) - set(TRAINER_KEYS))
    if ignored:
        log.info("tokenize-video ignores trainer settings that do not apply to feature extraction: %s", ignored)
    kwargs = dict(accelerator="auto", devices=1, enable_progress_bar=progress)
    kwargs.update({k: v for k, v in given.items() if k in TRAINER_KEYS})
    return dict(kwargs, logger=False, enable_checkpointing=False, enable_model_summary=False)


def _extract(
    root: Path, videos: str, extractor: str, weights: str | None, random_weights: bool, fps: float,
    clip_frames: int, size: int | None, batch_size: int, num_workers: int, trainer: dict[str, Any] | None,
    progress: bool, seed: int,
) -> tuple[dict[str, Path], bool, dict[str, Any]]:
    """Step 1 through ``Trainer.predict``. Returns the feature files, whether this is rank 0, and the merged counts."""
    import lightning.pytorch as pl

    from multibert.video.extract import ExtractionTask, FeatureWriter

    paths = list_videos(videos)
    ids = _video_ids(paths)
    torch.manual_seed(seed)  # random weights (random_weights=True) are the same in every process and every rerun
    model = build_extractor(extractor, weights, random_weights, size)
    if extractor == "light":
        weight_name = "none"
    elif random_weights:
        weight_name = "random"
    else:
        weight_name = KINETICS400 if weights in (None, KINETICS400) else Path(weights).name
    settings = dict(
        extractor=extractor, fps=str(fps), clip_frames=str(clip_frames), input=_input_key(model), weights=weight_name
    )
    pl_trainer = pl.Trainer(**_trainer_kwargs(trainer, progress), callbacks=[FeatureWriter(root, settings)])
    if pl_trainer.is_global_zero:
        shutil.rmtree(root / "extract", ignore_errors=True)  # counts of an earlier run
    dataset_args = dict(
        videos=[(vid, str(p)) for vid, p in zip(ids, paths)], out=root, settings=settings, fps=fps,
        clip_frames=clip_frames, size=model.decode_size, chunk_clips=batch_size,
    )
    pl_trainer.predict(ExtractionTask(model, dataset_args, num_workers), return_predictions=False)
    pl_trainer.strategy.barrier()  # every rank's files are written
    if not pl_trainer.is_global_zero:
        return {}, False, {}
    merged: dict[str, Any] = dict(extracted=[], cached=[], skipped=[], partial=[], clips=0)
    for r in range(pl_trainer.world_size):
        stats = json.loads((root / "extract" / f"rank{r}.json").read_text(encoding="utf-8"))
        for key in merged:
            merged[key] += stats[key]
    files = {vid: root / "features" / f"{vid}.safetensors" for vid in ids}
    files = {vid: p for vid, p in files.items() if vid in set(merged["extracted"]) | set(merged["cached"])}
    # the partial videos of earlier runs stay partial: their loss is in their file's header
    merged["partial_all"] = _partial_from_headers([files[v] for v in merged["cached"]]) + merged["partial"]
    return files, True, merged


def _input_key(model) -> str:
    crop = getattr(model, "crop_size", None)
    return f"{model.decode_size}" + (f" crop {tuple(crop)}" if crop is not None else "")


def _partial_from_headers(paths: list[Path]) -> list[list[str]]:
    from safetensors import safe_open

    out = []
    for p in paths:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("problem"):
            out.append([meta.get("source", str(p)), meta["problem"]])
    return out


def tokenize_videos(
    out: str,
    videos: str | None = None,
    features_dir: str | None = None,
    transcripts: str | None = None,
    extractor: str = "s3d",
    weights: str | None = None,
    random_weights: bool = False,
    fps: float = 20.0,
    clip_frames: int = 30,
    size: int | None = None,
    batch_size: int = 8,
    num_workers: int = 2,
    trainer: dict[str, Any] | None = None,
    depth: int = 4,
    branching: int = 12,
    codebook: str | None = None,
    kmeans_iters: int = 20,
    max_fit_features: int = 1_000_000,
    max_memory_mb: float = 8192.0,
    kmeans_device: str = "auto",
    seed: int = 0,
    progress: bool = True,
) -> TokenizeSummary | None:
    """Turn a folder of videos (or of precomputed clip features) into visual words (``multibert tokenize-video``).

    Args:
        out: output folder (features, codebook, words, manifest); a re-run resumes.
        videos: folder of videos (any container FFmpeg reads; searched recursively).
        features_dir: instead of ``videos``: one precomputed ``<video_id>.npy`` / ``.safetensors`` per video.
        transcripts: recorded in the manifest so the datamodule finds them (a folder of .vtt / .srt or a JSON file).
        extractor: ``s3d`` (paper), ``r3d_18`` or ``light`` (weight-free, fast on CPU).
        weights: s3d / r3d_18 weights: ``None`` or ``kinetics400`` for torchvision's Kinetics-400 checkpoint (torch
            hub's cache, downloaded once when online), or a local state-dict file.
        random_weights: run s3d / r3d_18 with random weights (a warning is logged).
        fps: frame rate clips are cut at (paper: 20).
        clip_frames: frames per clip (paper: 30, i.e. 1.5 s).
        size: ``None``: the extractor's own input (S3D: frames resized to 256 × 256, centre crop 224, as
            torchvision's Kinetics transform); an int: the crop side (networks) or the frame side (``light``).
        batch_size: clips per forward pass.
        num_workers: DataLoader workers per process that decode while the extractor runs.
        trainer: Lightning Trainer settings for the extraction (accelerator, devices, num_nodes, strategy,
            precision, ...), e.g. ``--trainer.devices 2 --trainer.strategy ddp``, or a preset with ``--config``.
        depth: tree depth d (paper: 4).
        branching: children per node k (paper: 12).
        codebook: an existing codebook to assign with instead of fitting one (for held-out videos).
        kmeans_iters: Lloyd iterations per node.
        max_fit_features: fit the tree on a uniform random sample of at most this many clips (paper: ≈ 1M).
        max_memory_mb: and at most as many as fit in this much memory (float32); features are read from disk one
            video at a time.
        kmeans_device: where the k-means fit and the assignment run: ``auto`` (CUDA when present), ``cpu``, ``cuda``.
        seed: seed of the k-means, of its sample and of random extractor weights.
        progress: show progress bars (log lines when stderr is not a terminal).

    Returns:
        the summary on rank 0; ``None`` on the other ranks of a multi-process run.
    """
    if (videos is None) == (features_dir is None):
        raise ValueError("give exactly one of videos=<folder of videos> or features_dir=<folder of features>")
    root = Path(out)
    for sub in ("features", "words", "skipped"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    summary = TokenizeSummary()
    clip_seconds = clip_frames / fps
    t0 = time.perf_counter()

    # 1. features: one file per video, sharded over the trainer's processes
    if features_dir is not None:
        sources = sorted(p for p in Path(features_dir).iterdir() if p.suffix in (".npy", ".safetensors"))
        if not sources:
            raise ValueError(f"no .npy or .safetensors feature file in {features_dir}")
        feature_files = {p.stem: p for p in sources}
        summary.videos = len(sources)
        skipped: list = []
        partial: list = []
    else:
        feature_files, is_zero, stats = _extract(
            root, videos, extractor, weights, random_weights, fps, clip_frames, size, batch_size, num_workers,
            trainer, progress, seed,
        )
        if not is_zero:
            return None
        summary.videos = len(list_videos(videos))
        summary.extracted, summary.cached = len(stats["extracted"]), len(stats["cached"])
        summary.seconds_of_video = stats["clips"] * clip_seconds
        skipped, partial = stats["skipped"], stats["partial_all"]
    if not feature_files:
        raise ValueError(f"no video could be read ({len(skipped)} skipped): {skipped[:3]}")
    store = FeatureStore(feature_files, clip_seconds)

    # 2. the codebook: given, resumed, or fitted on a sample streamed from disk
    book_path = root / "codebook.safetensors"
    if codebook is not None:
        tree = HierarchicalKMeans.load(codebook)
        if Path(codebook).resolve() != book_path.resolve():  # keep a copy so the folder is self-contained
            tree.save(book_path, {"source": str(codebook)})
    elif book_path.is_file():
        tree = HierarchicalKMeans.load(book_path)
        log.info("reusing the codebook %s (delete it to refit)", book_path)
    else:
        sample = store.sample(max_fit_features, max_memory_mb, seed)
        tree = HierarchicalKMeans(depth, branching).fit(
            sample, iters=kmeans_iters, seed=seed, device=kmeans_device, progress=progress
        )
        tree.save(book_path, {"fitted_on_clips": str(sample.size(0)), "clips": str(store.num_rows)})
        del sample
    if tree.feature_size != store.dim:
        raise ValueError(f"codebook {book_path} has feature size {tree.feature_size}, the features have {store.dim}")

    # 3. words, one video at a time
    used = torch.zeros(tree.num_words, dtype=torch.bool)
    with progress_bar(len(store.files), "assigning visual words", unit="videos", enabled=progress) as bar:
        for vid, feats, starts in store.iter_videos():
            words = tree.assign(feats, device=kmeans_device)
            used[words] = True
            save_file({"words": words, "starts": starts}, str(root / "words" / f"{vid}.safetensors"))
            summary.clips += feats.size(0)
            bar.update()
    summary.wall_seconds = time.perf_counter() - t0
    summary.num_words, summary.used_words = tree.num_words, int(used.sum())
    summary.skipped = [tuple(x) for x in skipped]
    summary.partial = [tuple(x) for x in partial]
    if transcripts is None and (root / "manifest.json").is_file():  # a resumed run keeps the recorded transcripts
        transcripts = json.loads((root / "manifest.json").read_text(encoding="utf-8")).get("transcripts")
    manifest = dict(
        clip_seconds=clip_seconds, fps=fps, clip_frames=clip_frames, size=size, extractor=extractor,
        depth=tree.depth, branching=tree.branching, num_words=tree.num_words, feature_size=store.dim,
        transcripts=str(Path(transcripts).resolve()) if transcripts else None,
        videos=sorted(store.files), skipped=[{"path": p, "reason": r} for p, r in summary.skipped],
        partial=[{"path": p, "problem": r} for p, r in summary.partial],
    )
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    log.info(
        "tokenized %d videos (%d extracted, %d cached, %d skipped, %d partial) into %d clips; %d of %d words used",
        len(store.files), summary.extracted, summary.cached, len(summary.skipped), len(summary.partial),
        summary.clips, summary.used_words, tree.num_words,
    )
    return summary


def _video_ids(paths: list[Path]) -> list[str]:
    seen: dict[str, Path] = {}
    for p in paths:
        if p.stem in seen:
            raise ValueError(f"two videos share the id {p.stem!r}: {seen[p.stem]} and {p}; video ids are file stems")
        seen[p.stem] = p
    return list(seen)


def tokenize_video_command(**kwargs) -> None:
    s = tokenize_videos(**kwargs)
    if s is None:  # not rank 0
        return
    print(
        f"{s.videos} videos: {s.extracted} extracted, {s.cached} cached, {len(s.skipped)} skipped, "
        f"{len(s.partial)} partial; {s.clips} clips; {s.used_words}/{s.num_words} visual words used; "
        f"{s.realtime_factor:.1f}x real time → {kwargs['out']}"
    )
    for path, reason in s.skipped:
        print(f"skipped {path}: {reason}")
    for path, reason in s.partial:
        print(f"partial {path}: {reason}")


# `multibert tokenize-video`: tokenize_videos' parameters and docstring (jsonargparse reads both), plus a printout
_hints = typing.get_type_hints(tokenize_videos)
tokenize_video_command.__signature__ = inspect.Signature(
    [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=_hints[name])
        for name, p in inspect.signature(tokenize_videos).parameters.items()
    ],
    return_annotation=None,
)
tokenize_video_command.__doc__ = tokenize_videos.__doc__
