"""Tokenizing a folder: decode → features → visual words, resumable, with bad files counted
(multibert.video.tokenize)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from datamodules.video.synthetic import make_synthetic_videos
from multibert.video.quantize import HierarchicalKMeans
from multibert.video.tokenize import read_words, tokenize_videos

SETTINGS = dict(extractor="light", fps=10.0, clip_frames=15, size=24, depth=2, branching=3, progress=False)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    make_synthetic_videos(out=str(root), num_videos=4, num_test_videos=1, actions_per_video=2, size=32)
    good = sorted((root / "train").glob("*.mp4"))
    (root / "train" / "zero.mp4").write_bytes(b"")
    (root / "train" / "truncated.mp4").write_bytes(good[0].read_bytes()[:1500])
    return root


def test_folder_tokenization_skips_bad_files_and_resumes(videos, tmp_path):
    out = tmp_path / "tok"
    s = tokenize_videos(str(out), videos=str(videos / "train"), transcripts=str(videos / "train"), **SETTINGS)
    assert (s.videos, s.extracted, s.cached, len(s.skipped)) == (6, 4, 0, 2)
    assert {p.split("/")[-1] for p, _ in s.skipped} == {"zero.mp4", "truncated.mp4"}
    assert s.clips == 4 * 4  # 2 actions × 3 s at 1.5 s per clip
    assert s.seconds_of_video == pytest.approx(24.0) and s.realtime_factor > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["videos"] == [f"synth_{i:04d}" for i in range(4)] and len(manifest["skipped"]) == 2
    assert manifest["clip_seconds"] == 1.5 and manifest["num_words"] == 9 and manifest["transcripts"]
    words, starts = read_words(out / "words" / "synth_0000.safetensors")
    assert words.dtype == np.int64 and words.min() >= 0 and words.max() < 9
    assert starts.tolist() == [0.0, 1.5, 3.0, 4.5]
    first = (out / "codebook.safetensors").read_bytes()

    again = tokenize_videos(str(out), videos=str(videos / "train"), **SETTINGS)  # resume: nothing to extract
    assert (again.extracted, again.cached, len(again.skipped)) == (0, 4, 2)
    assert (out / "codebook.safetensors").read_bytes() == first
    assert json.loads((out / "manifest.json").read_text())["transcripts"] == manifest["transcripts"]
    assert np.array_equal(read_words(out / "words" / "synth_0000.safetensors")[0], words)

    changed = tokenize_videos(str(out), videos=str(videos / "train"), **{**SETTINGS, "size": 16})
    assert changed.extracted == 4  # other settings: the cache is not reused


def test_held_out_videos_use_the_given_codebook(videos, tmp_path):
    tokenize_videos(str(tmp_path / "a"), videos=str(videos / "train"), **SETTINGS)
    book = tmp_path / "a" / "codebook.safetensors"
    s = tokenize_videos(str(tmp_path / "b"), videos=str(videos / "test"), codebook=str(book), **SETTINGS)
    assert s.videos == 1 and s.clips == 4
    tree = HierarchicalKMeans.load(book)
    from safetensors.torch import load_file

    feats = load_file(str(tmp_path / "b" / "features" / "synth_test_0000.safetensors"))["features"]
    assert np.array_equal(read_words(tmp_path / "b" / "words" / "synth_test_0000.safetensors")[0], tree.assign(feats).numpy())


def test_precomputed_features(tmp_path):
    (tmp_path / "f").mkdir()
    g = torch.Generator().manual_seed(0)
    np.save(tmp_path / "f" / "a.npy", torch.randn(5, 6, generator=g).numpy())
    save_file({"features": torch.randn(3, 6, generator=g), "starts": torch.tensor([0.0, 2.0, 4.0], dtype=torch.float64)},
              str(tmp_path / "f" / "b.safetensors"))
    s = tokenize_videos(str(tmp_path / "o"), features_dir=str(tmp_path / "f"), depth=1, branching=4, clip_frames=30,
                        fps=20.0, progress=False)
    assert s.clips == 8
    assert read_words(tmp_path / "o" / "words" / "a.safetensors")[1].tolist() == [0.0, 1.5, 3.0, 4.5, 6.0]
    assert read_words(tmp_path / "o" / "words" / "b.safetensors")[1].tolist() == [0.0, 2.0, 4.0]
    np.save(tmp_path / "f" / "c.npy", np.zeros(4))
    with pytest.raises(ValueError, match="c.npy: features must be \\(clips, D\\)"):
        tokenize_videos(str(tmp_path / "o2"), features_dir=str(tmp_path / "f"), depth=1, branching=4, progress=False)


def test_argument_errors(tmp_path, monkeypatch):
    import urllib.error

    with pytest.raises(ValueError, match="exactly one of"):
        tokenize_videos(str(tmp_path), progress=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    (tmp_path / "v").mkdir()
    make_synthetic_videos(out=str(tmp_path / "v"), num_videos=1, num_test_videos=0, actions_per_video=1, size=16)
    with pytest.raises(FileNotFoundError, match="not in the torch hub cache"):
        tokenize_videos(str(tmp_path / "o"), videos=str(tmp_path / "v" / "train"), extractor="s3d", progress=False)
