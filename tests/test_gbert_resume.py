"""G-BERT runs resume exactly (issue 10): a ``multibert fit`` subprocess killed with SIGKILL inside an epoch and
resumed from its last mid-epoch checkpoint ends with the weights of an uninterrupted run, bit for bit — for the
staged schedule (stage restarts and best-of-stage restores crossed after the resume, and a resume at a stage
boundary) and for the alternating rounds. Dropout is on (0.1): the checkpoints carry torch's generator state.

The tiny configs' epochs: ``tiny_stages.yaml`` 10, 10 (pretraining), 15, 15 (fine-tuning), 10, 15, 15 batches (90
steps); ``tiny.yaml`` rounds of 20 pretraining + 8 fine-tuning batches.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from resume_helpers import run_and_kill

from multibert.gbert.schedule import StageSchedule

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "gbert"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]), "OMP_NUM_THREADS": "1",
       "PYTHONWARNINGS": "ignore"}


def _fit(config: Path, checkpoints: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "multibert.cli", "fit", "-c", str(config), "--trainer.accelerator=cpu",
        "--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        # every 5 steps (mid-epoch), and at every epoch's end after its validation
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint", f"--trainer.callbacks.dirpath={checkpoints}",
        "--trainer.callbacks.every_n_train_steps=5", "--trainer.callbacks.save_top_k=-1",
        "--trainer.callbacks.filename={epoch}-{step}",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        f"--trainer.callbacks.dirpath={checkpoints / 'epochs'}", "--trainer.callbacks.save_top_k=-1",
        "--trainer.callbacks.filename={epoch}-{step}",
        *extra,
    ]


def _run(cmd: list[str], cwd: Path) -> None:
    done = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-4000:]


def _final(checkpoints: Path) -> Path:
    """The checkpoint written at the end of the run's last epoch."""
    return max((checkpoints / "epochs").glob("*.ckpt"), key=lambda p: int(p.stem.split("step=")[1]))


def _weights(checkpoint: Path) -> tuple[int, dict[str, torch.Tensor]]:
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return ckpt["global_step"], ckpt["state_dict"]


def _assert_same_weights(a: Path, b: Path) -> None:
    (step_a, ours), (step_b, theirs) = _weights(a), _weights(b)
    assert step_a == step_b
    assert ours.keys() == theirs.keys()
    for key, value in ours.items():
        assert torch.equal(value, theirs[key]), f"{key} differs after resuming"


def _killed_and_resumed(tmp_path: Path, config: Path, kill_after: int, resume_from: int, *extra: str) -> tuple[Path, Path]:
    """An uninterrupted run, the same run killed after step ``kill_after``, and its resume from the checkpoint at
    step ``resume_from``; returns the uninterrupted run's and the resumed run's checkpoint folders."""
    full, killed, resumed = tmp_path / "full", tmp_path / "killed", tmp_path / "resumed"
    _run(_fit(config, full, *extra), tmp_path)
    hang = ["--trainer.callbacks+=resume_helpers.HangAfterStep", f"--trainer.callbacks.step={kill_after}",
            f"--trainer.callbacks.marker_dir={killed}"]
    run_and_kill(_fit(config, killed, *extra, *hang), tmp_path, ENV, [killed / "hang.rank0"])
    (checkpoint,) = killed.glob(f"*-step={resume_from}.ckpt")
    assert not list(killed.glob(f"*-step={resume_from + 5}.ckpt"))  # killed, not finished
    _run(_fit(config, resumed, *extra, f"--ckpt_path={checkpoint}"), tmp_path)
    return full, resumed


def test_staged_schedule_killed_mid_stage_resumes_to_the_same_weights(tmp_path: Path) -> None:
    config = CONFIGS / "tiny_stages.yaml"
    # killed inside epoch 3 (second fine-tuning epoch), resumed from step 40: the resumed run then crosses two stage
    # boundaries (restore the stage's best weights, fresh optimiser, new learning rate)
    full, resumed = _killed_and_resumed(tmp_path, config, kill_after=42, resume_from=40)
    _assert_same_weights(_final(full), _final(resumed))
    assert _weights(_final(full))[0] == 90
    # a resume at a stage boundary: from the checkpoint written after the validation of stage 1's last epoch
    (boundary,) = (full / "epochs").glob("epoch=1-step=20.ckpt")
    again = tmp_path / "boundary"
    _run(_fit(config, again, f"--ckpt_path={boundary}"), tmp_path)
    _assert_same_weights(_final(full), _final(again))
    # the checkpoint written after the last batch of that epoch, before its validation, is refused with a reason
    state = torch.load(full / "epoch=1-step=20.ckpt", map_location="cpu", weights_only=True)["callbacks"]
    (schedule,) = [v for k, v in state.items() if k.startswith("StageSchedule")]
    assert schedule["awaiting_validation"] and schedule["stage"] == 0
    with pytest.raises(ValueError, match="after the last batch of an epoch and before its validation"):
        StageSchedule([]).load_state_dict(schedule)


def test_alternating_rounds_killed_mid_round_resume_to_the_same_weights(tmp_path: Path) -> None:
    # killed in round 0's fine-tuning pass, resumed from step 25; then two more rounds
    full, resumed = _killed_and_resumed(tmp_path, CONFIGS / "tiny.yaml", 27, 25, "--trainer.max_epochs=3")
    _assert_same_weights(_final(full), _final(resumed))
    assert _weights(_final(full))[0] == 84
