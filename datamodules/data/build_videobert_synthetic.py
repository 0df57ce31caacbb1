"""Rebuild ``datamodules/data/videobert_synthetic/`` (the SYNTHETIC data of configs/videobert/tiny.yaml).

    python datamodules/data/build_videobert_synthetic.py [OUT]

Draws the synthetic video set (:mod:`datamodules.video.synthetic`: 64 training videos of 4 actions × 6 s, captions
that split each sentence over two cues; 16 held-out videos with labels) in a temporary folder, tokenizes the
training videos with the weight-free light extractor (10 fps, 15-frame clips of 1.5 s, 32 px, hierarchical
k-means d=2, k=16 → 256 visual words) and the held-out videos with the same codebook, and keeps only what
training and zero-shot evaluation read: the WordPiece vocabulary, the WebVTT transcripts, the two token folders
(codebook, visual words, manifest) and the held-out labels. No video, feature or extraction-status file is kept
(about 0.5 MB in all). It also writes a small punctuation-restoration sample (``punctuation_{train,val}.conll``,
CoNLL tags from the first 14k words of ``shakespeare_sample.txt``) that ``configs/videobert/punctuator.yaml``
trains on out of the box; a real punctuator wants a large corpus of punctuated *spoken* text.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

from datamodules.video.sentences import punctuation_conll
from datamodules.video.synthetic import make_synthetic_videos
from multibert.video.tokenize import tokenize_videos

SETTINGS = dict(extractor="light", fps=10.0, clip_frames=15, size=32, depth=2, branching=16, progress=False,
                num_workers=0, trainer={"accelerator": "cpu"})


def build(out: Path, num_videos: int = 64, num_test_videos: int = 16) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        make_synthetic_videos(out=str(raw), num_videos=num_videos, num_test_videos=num_test_videos)
        tokenize_videos(str(Path(tmp) / "tokens"), videos=str(raw / "train"), **SETTINGS)
        book = str(Path(tmp) / "tokens" / "codebook.safetensors")
        tokenize_videos(str(Path(tmp) / "test_tokens"), videos=str(raw / "test"), codebook=book, **SETTINGS)
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for name in ("SYNTHETIC.txt", "vocab.txt", "test_labels.jsonl"):
            shutil.copy(raw / name, out / name)
        (out / "transcripts").mkdir()
        for vtt in sorted((raw / "train").glob("*.vtt")):
            shutil.copy(vtt, out / "transcripts" / vtt.name)
        for name in ("tokens", "test_tokens"):
            shutil.copytree(Path(tmp) / name, out / name,
                            ignore=shutil.ignore_patterns("features", "skipped", "extract"))
        for manifest in (out / "tokens" / "manifest.json", out / "test_tokens" / "manifest.json"):
            data = json.loads(manifest.read_text(encoding="utf-8"))
            data["transcripts"] = None  # a temporary path: configs name datamodules/.../transcripts
            manifest.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def build_punctuation_sample(out: Path, train_words: int = 12_000, val_words: int = 2_000) -> None:
    lines = (Path(__file__).parent / "shakespeare_sample.txt").read_text(encoding="utf-8").splitlines()
    train, val, words = [], [], 0
    for line in lines:
        (train if words < train_words else val).append(line)
        words += len(line.split())
        if words > train_words + val_words:
            break
    punctuation_conll(train, out / "punctuation_train.conll")
    punctuation_conll(val, out / "punctuation_val.conll")


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "videobert_synthetic"
    build(target)
    build_punctuation_sample(target)
