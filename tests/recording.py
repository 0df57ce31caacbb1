"""A callback for the DDP test: each rank saves the token ids of the batches it trained on."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch


class RecordBatches(pl.Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.seen: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append(batch.input_ids.cpu())

    def on_train_end(self, trainer, pl_module) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(self.seen, self.out_dir / f"rank{trainer.global_rank}.pt")


class StopAfterEpochs(pl.Callback):
    """Ends training after ``epochs`` epochs, like an interruption, with the run's config unchanged."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


class StopAfterSteps(pl.Callback):
    """Ends training after ``steps`` optimizer steps (mid-epoch, like an interruption), the config unchanged."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.steps:
            trainer.should_stop = True


class HoldAfterStep(pl.Callback):
    """Once ``step`` optimizer steps are done (and checkpointed), writes ``marker`` and waits to be killed."""

    def __init__(self, step: int, marker: str) -> None:
        self.step = step
        self.marker = Path(marker)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            import time

            self.marker.write_text(str(trainer.global_step))
            time.sleep(600)
