"""Callbacks for the kill -9 resume tests (launched through the ``multibert`` command in a subprocess), and
:func:`run_and_kill`, which starts such a run and kills it with SIGKILL at the marked point.

``BatchHashes``: every rank appends ``epoch global_step hash`` for each training batch it starts (flushed at once, so a
killed run keeps what it saw) and, at the end of training, the epoch-level metrics it holds. ``HangAfterStep``:
after the given optimizer step every rank leaves a marker file and sleeps, so the test can ``kill -9`` the run at a
known point inside an epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import lightning.pytorch as pl


class BatchHashes(pl.Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        fields = (batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.mlm_labels, batch.pair_labels)
        digest = hashlib.sha1(b"".join(t.cpu().numpy().tobytes() for t in fields if t is not None)).hexdigest()[:16]
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / f"rank{trainer.global_rank}.txt", "a") as f:
            f.write(f"{trainer.current_epoch} {trainer.global_step} {digest}\n")

    def on_train_end(self, trainer, pl_module) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.endswith("_epoch")}
        (self.out_dir / f"rank{trainer.global_rank}.metrics.json").write_text(json.dumps(metrics))


class HangAfterStep(pl.Callback):
    def __init__(self, step: int, marker_dir: str) -> None:
        self.step = step
        self.marker_dir = Path(marker_dir)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            self.marker_dir.mkdir(parents=True, exist_ok=True)
            (self.marker_dir / f"hang.rank{trainer.global_rank}").touch()
            time.sleep(3600)


def run_and_kill(cmd: list[str], cwd: Path, env: dict[str, str], markers: list[Path], timeout: float = 900) -> None:
    """Start ``cmd`` in its own process group; once every marker file exists (each rank hangs after its step:
    :class:`HangAfterStep` or ``recording.HoldAfterStep``), ``kill -9`` the whole group (DDP ranks included)."""
    process = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + timeout
    while not all(m.exists() for m in markers):
        if process.poll() is not None:
            raise AssertionError(f"the run ended before the kill: {process.stderr.read()[-4000:]}")
        assert time.monotonic() < deadline, "the run never reached the step to kill at"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
