"""A picture of visual words: for sample words, the clips nearest each word's centroid (the figure of visual words
in VideoBERT, Sun et al., ICCV 2019, arXiv 1904.01766).

Reads a folder written by ``multibert tokenize-video`` (its cached features, their source videos, the codebook)
and writes one PNG: one row per word (the most used words first), ``clips_per_word`` clips per row, nearest
first, each row labelled with its word id and clip count. A clip is shown as a strip of ``frames_per_clip`` frames
spread over it (first … last), so motion — what tells the verbs apart — is visible, not one still frame.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from multibert.core.progress import progress_bar
from multibert.video.decode import VideoDecodeError, iter_clips
from multibert.video.quantize import HierarchicalKMeans
from multibert.video.store import read_features

log = logging.getLogger(__name__)


def nearest_clips(
    features: torch.Tensor, words: torch.Tensor, leaves: torch.Tensor, chosen: list[int], k: int
) -> dict[int, list[int]]:
    """For each chosen word, the indices of the (at most k) clips assigned to it, nearest its centroid first.

    Shapes:
        features: (N, D); words: (N,); leaves: (K, D).
    """
    out = {}
    for w in chosen:
        idx = torch.nonzero(words == w).squeeze(1)  # (n,)
        d = (features[idx] - leaves[w]).pow(2).sum(1)  # (n,)
        out[w] = idx[d.argsort()[:k]].tolist()
    return out


def clip_strip(frames: np.ndarray, count: int) -> np.ndarray:
    """``count`` frames spread evenly over a clip (first, …, last), side by side.

    Shapes:
        frames: (F, S, S, 3) → (S, count · S, 3).
    """
    picks = np.floor(np.linspace(0, len(frames) - 1, num=min(count, len(frames))) + 0.5).astype(int)
    return np.concatenate([frames[i] for i in picks], axis=1)  # (S, count·S, 3)


def visual_word_montage(
    *,
    tokens_dir: str,
    out: str,
    words: int = 8,
    clips_per_word: int = 4,
    frames_per_clip: int = 3,
    frame_size: int = 64,
    progress: bool = True,
) -> Path:
    """Write a PNG montage of sample visual words (``multibert video-montage``).

    Args:
        tokens_dir: a ``multibert tokenize-video`` output folder (with ``features/``; the videos named in the
            feature files must still exist).
        out: the PNG file to write.
        words: how many words (rows), the most used first.
        clips_per_word: clips per row, the clips nearest the word's centroid first.
        frames_per_clip: frames shown per clip, spread from its first to its last (3: first / middle / last).
        frame_size: side of each frame in pixels.
        progress: show a progress bar over the videos decoded (log lines when stderr is not a terminal).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(tokens_dir)
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    tree = HierarchicalKMeans.load(root / "codebook.safetensors")
    feats, owners, sources = [], [], {}
    for vid in manifest["videos"]:
        path = root / "features" / f"{vid}.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the montage needs the cached features of {root}")
        with safe_open(str(path), framework="pt") as f:
            sources[vid] = (f.metadata() or {}).get("source")
        f_, s_ = read_features(path, float(manifest["clip_seconds"]))
        feats.append(f_)
        owners += [(vid, i) for i in range(f_.size(0))]
    features = torch.cat(feats)
    assigned = tree.assign(features)
    counts = torch.bincount(assigned, minlength=tree.num_words)
    chosen = [int(w) for w in counts.argsort(descending=True)[:words] if counts[w] > 0]
    picks = nearest_clips(features, assigned, tree.leaves, chosen, clips_per_word)

    wanted: dict[str, set[int]] = {}
    for w in chosen:
        for j in picks[w]:
            vid, i = owners[j]
            wanted.setdefault(vid, set()).add(i)
    frames: dict[tuple[str, int], np.ndarray] = {}
    with progress_bar(len(wanted), "montage: decoding clips", unit="videos", enabled=progress) as bar:
        for vid, clip_ids in wanted.items():
            bar.update()
            source = sources.get(vid)
            if not source or not Path(source).is_file():
                log.warning("montage: source video of %s (%s) not found; its frames are left blank", vid, source)
                continue
            try:
                for clip in iter_clips(source, float(manifest["fps"]), int(manifest["clip_frames"]), frame_size):
                    if clip.index in clip_ids:
                        frames[(vid, clip.index)] = clip_strip(clip.frames, frames_per_clip)
                    if clip.index >= max(clip_ids):
                        break
            except VideoDecodeError as err:
                log.warning("montage: %s", err)

    width = frames_per_clip * 1.1
    fig, axes = plt.subplots(
        len(chosen), clips_per_word, figsize=(width * clips_per_word + 1, 1.2 * len(chosen)), squeeze=False
    )
    blank = np.zeros((frame_size, frame_size * frames_per_clip, 3), np.uint8)
    for r, w in enumerate(chosen):
        for c in range(clips_per_word):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(picks[w]):
                ax.imshow(frames.get(owners[picks[w][c]], blank))
            else:
                ax.axis("off")
        axes[r][0].set_ylabel(f"word {w}\n({int(counts[w])} clips)", fontsize=7)
    fig.suptitle(
        f"{len(chosen)} most used visual words (rows): the {clips_per_word} clips nearest each centroid, "
        f"each as {frames_per_clip} frames from first to last",
        fontsize=9,
    )
    fig.tight_layout()
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    log.info("wrote a montage of %d visual words to %s", len(chosen), out_path)
    return out_path
