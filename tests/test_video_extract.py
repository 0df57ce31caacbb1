"""Feature extraction at scale: sharded over processes through Lightning, resumable after a kill, partial videos
named, k-means fitted on a sample streamed from disk under a memory cap (multibert.video.extract / tokenize / store).

The multi-process and kill tests launch the ``multibert`` command in a subprocess: under pytest, Lightning's DDP
would relaunch pytest itself for rank 1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from datamodules.video.synthetic import make_synthetic_videos, write_video
from multibert.video import store as store_module
from multibert.video.quantize import HierarchicalKMeans
from multibert.video.store import FeatureStore
from multibert.video.tokenize import read_words, tokenize_videos

ROOT = Path(__file__).resolve().parents[1]
LIGHT = ["--extractor=light", "--fps=10", "--clip_frames=15", "--size=24", "--depth=1", "--branching=4",
         "--num_workers=0", "--progress=false"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    make_synthetic_videos(out=str(root), num_videos=12, num_test_videos=0, actions_per_video=4, size=32)
    return root / "train"


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "multibert.cli", "tokenize-video", *args]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def _feature_meta(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def test_two_processes_share_the_videos_and_match_one_process(videos, tmp_path):
    """A 2-process CPU run (gloo) through `multibert tokenize-video --trainer.*`: each video extracted once, by one
    of the two ranks, both ranks busy, and the features, codebook and words equal a single-process run's."""
    two = tmp_path / "two"
    run = subprocess.run(
        _command(f"--out={two}", f"--videos={videos}", *LIGHT, "--trainer.accelerator=cpu", "--trainer.devices=2",
                 "--trainer.strategy=ddp"),
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300, check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "12 videos: 12 extracted, 0 cached, 0 skipped, 0 partial; 96 clips" in run.stdout
    assert run.stdout.count("videos:") == 1  # only rank 0 reports
    ranks = {p.stem: _feature_meta(p)["rank"] for p in (two / "features").glob("*.safetensors")}
    assert len(ranks) == 12 and sorted(set(ranks.values())) == ["0", "1"]
    assert sorted(ranks) == sorted(p.stem for p in videos.glob("*.mp4"))
    one = tmp_path / "one"
    tokenize_videos(str(one), videos=str(videos), extractor="light", fps=10, clip_frames=15, size=24, depth=1,
                    branching=4, num_workers=0, progress=False, trainer={"accelerator": "cpu"})
    for vid in ranks:
        a = load_file(str(one / "features" / f"{vid}.safetensors"))
        b = load_file(str(two / "features" / f"{vid}.safetensors"))
        assert torch.equal(a["features"], b["features"]) and torch.equal(a["starts"], b["starts"])
        assert np.array_equal(read_words(one / "words" / f"{vid}.safetensors")[0],
                              read_words(two / "words" / f"{vid}.safetensors")[0])


def test_a_killed_extraction_resumes_where_it_stopped(videos, tmp_path):
    """kill -9 mid-run, then rerun: finished videos are kept (not recomputed), the rest extracted, and the result
    equals an uninterrupted run."""
    out = tmp_path / "tok"
    slow = [f"--out={out}", f"--videos={videos}", "--extractor=s3d", "--random_weights=true", "--size=64",
            "--fps=10", "--clip_frames=15", "--depth=1", "--branching=4", "--num_workers=0", "--batch_size=4",
            "--progress=false", "--trainer.accelerator=cpu"]
    proc = subprocess.Popen(_command(*slow), cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not list((out / "features").glob("*.safetensors")):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-2000:]
    done = {p.stem: p.stat().st_mtime_ns for p in (out / "features").glob("*.safetensors")}
    assert 1 <= len(done) < 12
    assert not list((out / "features").glob(".*tmp"))  # no half-written file under the final name or a temp name
    assert not (out / "manifest.json").exists()

    again = subprocess.run(_command(*slow), cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300,
                           check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"12 videos: {12 - len(done)} extracted, {len(done)} cached, 0 skipped" in again.stdout
    for vid, mtime in done.items():  # the finished videos were not recomputed
        assert (out / "features" / f"{vid}.safetensors").stat().st_mtime_ns == mtime
    # the same as a run that was never interrupted (random weights are seeded by --seed)
    whole = tmp_path / "whole"
    full = subprocess.run(_command(*slow[1:], f"--out={whole}"), cwd=tmp_path, env=_env(), capture_output=True,
                          text=True, timeout=300, check=False)
    assert full.returncode == 0, full.stderr[-3000:]
    for p in (whole / "features").glob("*.safetensors"):
        a, b = load_file(str(p)), load_file(str(out / "features" / p.name))
        assert a["features"].shape == (8, 1024) and torch.equal(a["features"], b["features"]), p.name
        assert np.array_equal(read_words(whole / "words" / p.name)[0], read_words(out / "words" / p.name)[0])


def test_partial_videos_keep_their_clips_and_are_named(tmp_path):
    folder = tmp_path / "videos"
    frames = [np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8) for i in range(120)]
    full = write_video(folder / "whole.mkv", frames, fps=10)  # 12 s
    cut = folder / "cut.mkv"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size * 3 // 10])  # a truncated download
    good = bytearray(write_video(tmp_path / "good.mp4", frames, fps=10).read_bytes())
    good[len(good) // 2 : len(good) // 2 + 20000] = b"\xff" * 20000  # fails half-way
    (folder / "broken.mp4").write_bytes(bytes(good))
    s = tokenize_videos(str(tmp_path / "tok"), videos=str(folder), extractor="light", fps=10, clip_frames=10,
                        size=16, depth=1, branching=3, num_workers=0, progress=False, trainer={"accelerator": "cpu"})
    assert (s.extracted, len(s.skipped), len(s.partial)) == (3, 0, 2)
    problems = dict(s.partial)
    assert "truncated: decoded" in problems[str(cut)] and "decoding failed at" in problems[str(folder / "broken.mp4")]
    manifest = json.loads((tmp_path / "tok" / "manifest.json").read_text())
    assert {p["path"] for p in manifest["partial"]} == {str(cut), str(folder / "broken.mp4")}
    n = {vid: read_words(tmp_path / "tok" / "words" / f"{vid}.safetensors")[0].size for vid in ("whole", "cut", "broken")}
    assert n["whole"] == 12 and 1 <= n["cut"] <= 5 and 3 <= n["broken"] <= 7  # the clips before the loss are kept
    # a rerun keeps reporting them (the loss is in the cached file's header)
    again = tokenize_videos(str(tmp_path / "tok"), videos=str(folder), extractor="light", fps=10, clip_frames=10,
                            size=16, depth=1, branching=3, num_workers=0, progress=False, trainer={"accelerator": "cpu"})
    assert (again.extracted, again.cached, len(again.partial)) == (0, 3, 2)


def test_kmeans_streams_a_sample_from_disk_under_a_memory_cap(tmp_path, monkeypatch):
    """More features than the cap: the fit sees a uniform sample of exactly the cap, files are read one video at a
    time, and every clip still gets the word the fitted tree assigns it."""
    (tmp_path / "f").mkdir()
    g = torch.Generator().manual_seed(0)
    D, per_video, n_videos = 32, 50, 12
    full = {f"v{i:02d}": torch.randn(per_video, D, generator=g) + i for i in range(n_videos)}
    for vid, x in full.items():
        np.save(tmp_path / "f" / f"{vid}.npy", x.numpy())
    reads: list[int] = []
    real = store_module.read_features

    def spy(path, clip_seconds):
        feats, starts = real(path, clip_seconds)
        reads.append(feats.size(0))
        return feats, starts

    monkeypatch.setattr(store_module, "read_features", spy)
    cap_rows = 200  # of 600
    s = tokenize_videos(str(tmp_path / "o"), features_dir=str(tmp_path / "f"), depth=2, branching=3,
                        max_fit_features=10_000, max_memory_mb=cap_rows * 4 * D / 2**20, kmeans_device="cpu",
                        progress=False)
    assert s.clips == per_video * n_videos
    meta = json.loads(dict(_feature_meta(tmp_path / "o" / "codebook.safetensors"))["extra"])
    assert meta["fitted_on_clips"] == str(cap_rows) and meta["clips"] == "600"
    assert max(reads) == per_video  # never more than one video's rows at a time
    tree = HierarchicalKMeans.load(tmp_path / "o" / "codebook.safetensors")
    for vid, x in full.items():
        assert np.array_equal(read_words(tmp_path / "o" / "words" / f"{vid}.safetensors")[0], tree.assign(x).numpy())
    # the sample is uniform over the videos, without repeats
    files = {vid: tmp_path / "f" / f"{vid}.npy" for vid in full}
    sample = FeatureStore(files, 1.5).sample(300, seed=1)
    assert sample.shape == (300, D) and torch.unique(sample, dim=0).size(0) == 300
    video_of_row = sample.mean(1).round()  # rows of video i sit around i
    counts = torch.bincount(video_of_row.long().clamp(0, n_videos - 1), minlength=n_videos)
    assert counts.min() >= 10 and counts.max() <= 45  # 25 expected per video


def test_trainer_preset_and_flags_are_accepted(videos, tmp_path, capsys):
    from multibert.cli import main

    main(["tokenize-video", "--config", str(ROOT / "configs" / "trainer" / "cpu.yaml"), "--trainer.devices=1",
          f"--out={tmp_path / 'tok'}", f"--videos={videos}", *LIGHT])
    assert "12 videos: 12 extracted" in capsys.readouterr().out
    assert not (tmp_path / "runs").exists()  # the preset's loggers and checkpoints are not used
