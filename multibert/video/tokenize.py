"""Tokenize videos into VideoBERT visual words: decode → clip features → hierarchical k-means words (Sun et al.,
ICCV 2019, arXiv 1904.01766, Sec. 4.2), over a folder, resumable.

Output folder (the ``tokens_dir`` the video datamodule reads)::

    features/<video_id>.safetensors   "features" (n, D) float32, "starts" (n,) float64 clip start times;
                                      header: extractor, fps, clip_frames, size, source file
    codebook.safetensors              the hierarchical k-means tree (multibert.video.quantize)
    words/<video_id>.safetensors      "words" (n,) int64 visual word ids, "starts" (n,) float64
    manifest.json                     settings, clip length, videos, skipped files and why

A re-run skips every video whose feature file exists with the same extractor settings, reuses the codebook if
one exists (or the one passed with ``codebook``), and rewrites the word files (cheap). Features the user computed
elsewhere are accepted from ``features_dir``: one ``<video_id>.npy`` (n, D) or ``.safetensors`` (``features``
and optionally ``starts``) per video.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from multibert.video.decode import SkipLog, VideoDecodeError, iter_clips, list_videos
from multibert.video.features import ClipFeatureExtractor, build_extractor
from multibert.video.quantize import HierarchicalKMeans

log = logging.getLogger(__name__)


@dataclass
class TokenizeSummary:
    """What a tokenization run did."""

    videos: int = 0
    extracted: int = 0
    cached: int = 0
    clips: int = 0
    seconds_of_video: float = 0.0
    wall_seconds: float = 0.0
    num_words: int = 0
    used_words: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def realtime_factor(self) -> float:
        """Seconds of video tokenized per wall-clock second."""
        return self.seconds_of_video / max(self.wall_seconds, 1e-9)


def _batches(clips: Iterator, batch_size: int) -> Iterator[list]:
    batch = []
    for clip in clips:
        batch.append(clip)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.inference_mode()
def video_features(
    path: str | Path,
    extractor: ClipFeatureExtractor,
    fps: float,
    clip_frames: int,
    size: int,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and start times of every clip of one video, decoding and embedding ``batch_size`` clips at a time.

    Shapes:
        → features (n, D) float32, starts (n,) float64.
    """
    feats, starts = [], []
    for batch in _batches(iter_clips(path, fps, clip_frames, size), batch_size):
        frames = torch.from_numpy(np.stack([c.frames for c in batch])).to(device)  # (n, F, S, S, 3)
        feats.append(extractor(frames).float().cpu())
        starts += [c.start for c in batch]
    if not feats:
        return torch.zeros(0, extractor.feature_size), torch.zeros(0, dtype=torch.float64)
    return torch.cat(feats), torch.tensor(starts, dtype=torch.float64)


def read_features(path: str | Path, clip_seconds: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Precomputed features of one video: ``.npy`` (n, D) or ``.safetensors`` with ``features`` [+ ``starts``].

    Without ``starts``, clip i starts at ``i · clip_seconds``.
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


def read_words(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(words (n,) int64, starts (n,) float64)`` of one tokenized video."""
    state = load_file(str(path))
    if "words" not in state or "starts" not in state:
        raise KeyError(f"{path} is not a visual-word file (needs 'words' and 'starts', has {sorted(state)})")
    return state["words"].numpy(), state["starts"].numpy()


def _cache_matches(path: Path, settings: dict[str, str]) -> bool:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # an interrupted write: redo it
        return False
    return all(meta.get(k) == v for k, v in settings.items())


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
    size: int = 224,
    batch_size: int = 8,
    depth: int = 4,
    branching: int = 12,
    codebook: str | None = None,
    kmeans_iters: int = 20,
    max_fit_features: int = 1_000_000,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> TokenizeSummary:
    """Turn a folder of videos (or of precomputed clip features) into visual words (``multibert tokenize-video``).

    Args:
        out: output folder (features, codebook, words, manifest); a re-run resumes.
        videos: folder of videos (any container FFmpeg reads; searched recursively).
        features_dir: instead of ``videos``: one precomputed ``<video_id>.npy`` / ``.safetensors`` per video.
        transcripts: recorded in the manifest so the datamodule finds them (a folder of .vtt / .srt or a JSON file).
        extractor: ``s3d`` (paper), ``r3d_18`` or ``light`` (weight-free, fast on CPU).
        weights: local weight file of the s3d / r3d_18 network.
        random_weights: run s3d / r3d_18 with random weights (a warning is logged).
        fps: frame rate clips are cut at (paper: 20).
        clip_frames: frames per clip (paper: 30, i.e. 1.5 s).
        size: side of the centre-cropped frames.
        batch_size: clips per forward pass.
        depth: tree depth d (paper: 4).
        branching: children per node k (paper: 12).
        codebook: an existing codebook to assign with instead of fitting one (for held-out videos).
        kmeans_iters: Lloyd iterations per node.
        max_fit_features: fit the tree on a random subset of at most this many clips.
        device: torch device of the feature extractor.
        seed: seed of the k-means.
        progress: show a progress bar.
    """
    if (videos is None) == (features_dir is None):
        raise ValueError("give exactly one of videos=<folder of videos> or features_dir=<folder of features>")
    root = Path(out)
    (root / "features").mkdir(parents=True, exist_ok=True)
    (root / "words").mkdir(parents=True, exist_ok=True)
    summary = TokenizeSummary()
    skips = SkipLog()
    clip_seconds = clip_frames / fps
    t0 = time.perf_counter()

    # 1. features, cached per video
    feature_files: dict[str, Path] = {}
    if features_dir is not None:
        sources = sorted(p for p in Path(features_dir).iterdir() if p.suffix in (".npy", ".safetensors"))
        if not sources:
            raise ValueError(f"no .npy or .safetensors feature file in {features_dir}")
        for p in sources:
            feature_files[p.stem] = p
        summary.videos = len(sources)
    else:
        paths = list_videos(videos)
        ids = _video_ids(paths)
        summary.videos = len(paths)
        settings = dict(extractor=extractor, fps=str(fps), clip_frames=str(clip_frames), size=str(size))
        if weights:
            settings["weights"] = str(Path(weights).name)
        model: ClipFeatureExtractor | None = None
        for vid, path in tqdm(list(zip(ids, paths)), desc="clip features", unit="video", disable=not progress):
            target = root / "features" / f"{vid}.safetensors"
            if target.is_file() and _cache_matches(target, settings):
                summary.cached += 1
                feature_files[vid] = target
                continue
            if model is None:
                model = build_extractor(extractor, weights, random_weights).to(device).eval()
            try:
                feats, starts = video_features(path, model, fps, clip_frames, size, batch_size, device)
            except VideoDecodeError as err:
                skips.add(path, str(err))
                continue
            if feats.size(0) == 0:
                skips.add(path, f"shorter than one clip ({clip_frames} frames at {fps} fps)")
                continue
            save_file({"features": feats, "starts": starts}, str(target), metadata={**settings, "source": str(path)})
            feature_files[vid] = target
            summary.extracted += 1
            summary.seconds_of_video += feats.size(0) * clip_seconds

    loaded = {vid: read_features(p, clip_seconds) for vid, p in feature_files.items()}
    if not loaded:
        raise ValueError(f"no video could be read ({len(skips)} skipped): {skips.skipped[:3]}")

    # 2. the codebook: given, resumed, or fitted
    book_path = root / "codebook.safetensors"
    if codebook is not None:
        tree = HierarchicalKMeans.load(codebook)
        if Path(codebook).resolve() != book_path.resolve():  # keep a copy so the folder is self-contained
            tree.save(book_path, {"source": str(codebook)})
    elif book_path.is_file():
        tree = HierarchicalKMeans.load(book_path)
        log.info("reusing the codebook %s (delete it to refit)", book_path)
    else:
        all_feats = torch.cat([f for f, _ in loaded.values()])
        if all_feats.size(0) > max_fit_features:
            g = torch.Generator().manual_seed(seed)
            all_feats = all_feats[torch.randperm(all_feats.size(0), generator=g)[:max_fit_features]]
        tree = HierarchicalKMeans(depth, branching).fit(all_feats, iters=kmeans_iters, seed=seed)
        tree.save(book_path, {"fitted_on_clips": str(all_feats.size(0))})
    dim = next(iter(loaded.values()))[0].size(1)
    if tree.feature_size != dim:
        raise ValueError(f"codebook {book_path} has feature size {tree.feature_size}, the features have {dim}")

    # 3. words
    used = torch.zeros(tree.num_words, dtype=torch.bool)
    for vid, (feats, starts) in loaded.items():
        words = tree.assign(feats)
        used[words] = True
        save_file({"words": words, "starts": starts}, str(root / "words" / f"{vid}.safetensors"))
        summary.clips += feats.size(0)
    summary.wall_seconds = time.perf_counter() - t0
    summary.num_words, summary.used_words = tree.num_words, int(used.sum())
    summary.skipped = skips.skipped
    if transcripts is None and (root / "manifest.json").is_file():  # a resumed run keeps the recorded transcripts
        transcripts = json.loads((root / "manifest.json").read_text(encoding="utf-8")).get("transcripts")
    manifest = dict(
        clip_seconds=clip_seconds, fps=fps, clip_frames=clip_frames, size=size, extractor=extractor,
        depth=tree.depth, branching=tree.branching, num_words=tree.num_words, feature_size=dim,
        transcripts=str(Path(transcripts).resolve()) if transcripts else None,
        videos=sorted(loaded), skipped=[{"path": p, "reason": r} for p, r in skips.skipped],
    )
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    log.info(
        "tokenized %d videos (%d extracted, %d cached, %d skipped) into %d clips; %d of %d words used",
        len(loaded), summary.extracted, summary.cached, len(skips), summary.clips, summary.used_words, tree.num_words,
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
    print(
        f"{s.videos} videos: {s.extracted} extracted, {s.cached} cached, {len(s.skipped)} skipped; {s.clips} clips; "
        f"{s.used_words}/{s.num_words} visual words used; {s.realtime_factor:.1f}x real time → {kwargs['out']}"
    )
    for path, reason in s.skipped:
        print(f"skipped {path}: {reason}")


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
