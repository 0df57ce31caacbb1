"""Exact resume mid-epoch after ``kill -9``: a training subprocess is killed inside an epoch, resumed from its last
mid-epoch checkpoint, and must end where an uninterrupted run ends — the same weights bit for bit (memory-mapped
path, one process) and the same sequence of batches on every rank (streaming path, 2 processes × 2 workers, gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from resume_helpers import run_and_kill

from datamodules.text.prepare import prepare_corpus

ROOT = Path(__file__).parents[1]
CONFIGS = ROOT / "configs" / "bert"
SAMPLE = ROOT / "datamodules" / "data" / "shakespeare_sample.txt"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]), "OMP_NUM_THREADS": "1"}


def _command(config: Path, run: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "multibert.cli", "fit", "-c", str(config),
        "--trainer.accelerator=cpu", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
        "--trainer.limit_val_batches=0", "--trainer.enable_model_summary=false",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        f"--trainer.callbacks.dirpath={run / 'checkpoints'}", "--trainer.callbacks.every_n_train_steps=4",
        "--trainer.callbacks.save_top_k=-1", "--trainer.callbacks.save_last=true",
        "--trainer.callbacks+=resume_helpers.BatchHashes", f"--trainer.callbacks.out_dir={run / 'batches'}",
        *extra,
    ]


def _run(cmd: list[str], cwd: Path) -> None:
    result = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-4000:]


def _batches(run: Path, rank: int = 0) -> list[tuple[int, int, str]]:
    """``(epoch, step, hash)`` of every training batch the rank started."""
    lines = (run / "batches" / f"rank{rank}.txt").read_text().split("\n")
    return [(int(epoch), int(step), digest) for epoch, step, digest in (line.split() for line in lines if line)]


def _resume_after_kill(
    config: Path, tmp_path: Path, ranks: int, kill_after: int, resume_from: int, *extra: str
) -> tuple[Path, Path, Path]:
    """An uninterrupted run; the same run killed after step ``kill_after`` (checkpoints every 4 steps); its resume
    from the checkpoint at step ``resume_from``."""
    full, killed = tmp_path / "full", tmp_path / "killed"
    _run(_command(config, full, *extra), tmp_path)
    hang = ["--trainer.callbacks+=resume_helpers.HangAfterStep", f"--trainer.callbacks.step={kill_after}",
            f"--trainer.callbacks.marker_dir={killed}"]
    run_and_kill(_command(config, killed, *extra, *hang), tmp_path, ENV, [killed / f"hang.rank{r}" for r in range(ranks)], timeout=600)
    (checkpoint,) = killed.rglob(f"*step={resume_from}.ckpt")
    assert not list(killed.rglob(f"*step={resume_from + 8}.ckpt"))  # killed, not finished
    resumed = tmp_path / "resumed"
    _run(_command(config, resumed, *extra, f"--ckpt_path={checkpoint}"), tmp_path)
    return full, killed, resumed


def test_memory_mapped_run_killed_mid_epoch_resumes_to_the_same_weights(tmp_path):
    # epochs of 5 batches: the checkpoint at step 8 lies inside the second epoch, the kill inside the third
    full, killed, resumed = _resume_after_kill(
        CONFIGS / "tiny.yaml", tmp_path, 1, 10, 8, "--trainer.max_steps=16", "--trainer.limit_train_batches=5",
        "--data.num_workers=1", f"--data.cache_dir={tmp_path / 'cache'}",
    )
    seen = _batches(full)
    assert [(e, s) for e, s, _ in seen] == [(s // 5, s) for s in range(16)]
    assert _batches(killed) == seen[:10]
    assert _batches(resumed) == seen[8:]  # the batches after the checkpoint, none skipped, none repeated
    (a,), (b,) = full.rglob("last.ckpt"), resumed.rglob("last.ckpt")
    ours, theirs = torch.load(b, weights_only=True), torch.load(a, weights_only=True)
    assert ours["global_step"] == theirs["global_step"] == 16
    for key, value in theirs["state_dict"].items():
        assert torch.equal(ours["state_dict"][key], value), key


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "shakespeare_sample"
    prepare_corpus(corpus=[str(SAMPLE)], out=str(out), train_vocab_size=1000, max_seq_length=64, val_fraction=0.05,
                   num_workers=1, chunk_bytes="40kB", cache_dir=str(out.parent / "cache"))
    return out


def test_streaming_ddp_run_killed_mid_epoch_sees_the_batches_of_an_uninterrupted_run(tmp_path, prepared):
    # batches of 28: an epoch is 16 batches per rank (904 items over 2 ranks, the last partial batch dropped), so the
    # checkpoint at step 16 lies at the end of the first epoch, the kill inside the second one, and the resumed run
    # crosses the epoch boundary
    items = json.loads((prepared / "multibert.json").read_text())["splits"]["train"]["items"]
    assert items // 2 // 28 == 16, items
    full, killed, resumed = _resume_after_kill(
        CONFIGS / "tiny_streaming.yaml", tmp_path, 2, 18, 16, "--trainer.max_steps=24", "--trainer.devices=2",
        "--trainer.strategy=ddp", "--data.num_workers=2", "--data.batch_size=28", f"--data.data_dir={prepared}",
        f"--data.cache_dir={tmp_path / 'cache'}",
    )
    for rank in (0, 1):
        seen = _batches(full, rank)
        assert [(e, s) for e, s, _ in seen] == [(int(s >= 16), s) for s in range(24)]
        assert _batches(killed, rank) == seen[:18]
        assert _batches(resumed, rank) == seen[16:]
    assert not {d for *_, d in _batches(full, 0)} & {d for *_, d in _batches(full, 1)}  # each rank its own shard
    # the epoch-level training metrics are averaged over the ranks: both hold the same value
    metrics = [json.loads((full / "batches" / f"rank{r}.metrics.json").read_text()) for r in (0, 1)]
    assert metrics[0]["train/mlm_loss_epoch"] == metrics[1]["train/mlm_loss_epoch"]
