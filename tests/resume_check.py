"""A generic exact-resume check for any datamodule: a run interrupted mid-epoch and resumed with
``--ckpt_path last`` must end with the same weights, bit for bit, as a run that went through.

The interruption is either ``kill -9`` of a ``multibert fit`` subprocess right after a checkpoint (the realistic
case: nothing is saved on the way out) or, cheaper, a callback that stops training after a number of steps (the run
then saves its final step itself). Both resume in-process with the same config, and the run continues in its own
folder. Exactness needs the data position in the checkpoint (a ``StatefulDataLoader`` over a sampler whose order
is a function of (seed, epoch)) and configs without randomness outside the data (dropout 0, or RNG state saved).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from resume_helpers import run_and_kill
from run_folders import last_checkpoint

from multibert.cli import main

ROOT = Path(__file__).parents[1]


def _fit_in(workdir: Path, args: list[str]) -> None:
    cwd = Path.cwd()
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)
    try:
        main(["fit", *args])
    finally:
        os.chdir(cwd)


def interrupted_then_resumed(args: list[str], workdir: Path, stop_at: int, kill: bool, timeout: float = 240) -> Path:
    """Run ``multibert fit ARGS`` in ``workdir``, interrupt it after ``stop_at`` steps, resume it with
    ``--ckpt_path last``; return the final ``last.ckpt``. With ``kill`` the run is a subprocess killed with SIGKILL
    right after its checkpoint at ``stop_at`` (``args`` must checkpoint there: ``every_n_train_steps``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    if kill:
        marker = workdir / "held"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
        cmd = [sys.executable, "-m", "multibert.cli", "fit", *args, "--trainer.callbacks+=recording.HoldAfterStep",
               f"--trainer.callbacks.step={stop_at}", f"--trainer.callbacks.marker={marker}"]
        run_and_kill(cmd, workdir, env, [marker], timeout)
    else:
        _fit_in(workdir, [*args, "--trainer.callbacks+=recording.StopAfterSteps", f"--trainer.callbacks.steps={stop_at}"])
    interrupted = torch.load(last_checkpoint(workdir), map_location="cpu", weights_only=True)
    assert interrupted["global_step"] == stop_at, interrupted["global_step"]
    _fit_in(workdir, [*args, "--ckpt_path", "last"])
    return last_checkpoint(workdir)


def assert_exact_resume(args: list[str], workdir: Path, stop_at: int, total: int, kill: bool = False) -> None:
    """The check itself: ``args`` must train ``total`` steps (``--trainer.max_steps``) within one epoch."""
    _fit_in(workdir / "through", args)
    through = last_checkpoint(workdir / "through")
    resumed = interrupted_then_resumed(args, workdir / "interrupted", stop_at, kill)
    a, b = torch.load(through, weights_only=True), torch.load(resumed, weights_only=True)
    assert a["global_step"] == b["global_step"] == total
    assert a["epoch"] == b["epoch"] == 0, "the interruption must fall mid-epoch"
    assert resumed.parent.parent.name == "version_0", "the resumed run continues in its own folder"
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), f"{key} differs after resuming"
