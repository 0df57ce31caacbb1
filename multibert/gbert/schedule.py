"""G-BERT's staged training schedule (Shang et al., 2019, arXiv 1906.00346, section 3.4; the authors'
``run_alternative.sh``): stages of pretraining and fine-tuning epochs, each stage a fresh optimiser starting from the
previous stage's best-on-validation weights.

A schedule is a list of :class:`Stage` in ``data.stages`` (the datamodule builds each epoch's loader from it and
links the list to the task's ``stages``), run as one ``multibert fit``:

- every epoch belongs to one stage, whose task (``pretrain`` visits or ``recommend`` patients), batch size,
  learning rate (constant, or the task's schedule over the stage's steps) and frozen parameters it trains with;
  validation after every epoch scores both tasks;
- at the first epoch of every stage after the first, :class:`StageSchedule` puts back the weights of the previous
  stage's best validation epoch (``restore_best``; by ``val/rx2rx_prauc`` after pretraining, as the authors do, by
  ``val/prauc`` after fine-tuning), then starts a fresh optimiser and learning-rate schedule;
- at the end of training the best epoch of the last stage is put back, so ``trainer.test(model)`` after ``fit``
  scores it.

The callback's state (the active stage, its best score and weights) is saved with every checkpoint, so
``--ckpt_path`` resumes inside a stage or at a stage boundary as if the run had never stopped.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import lightning.pytorch as pl
import torch

log = logging.getLogger(__name__)

#: The validation metric that picks each stage's best epoch (higher is better).
STAGE_MONITOR = {"pretrain": "val/rx2rx_prauc", "recommend": "val/prauc"}


@dataclass(frozen=True)
class Stage:
    """One stage of a staged schedule.

    Args:
        task: ``pretrain`` (masked visits, G-BERT's four heads) or ``recommend`` (patients, the medication head).
        epochs: epochs of this stage.
        batch_size: visits (pretrain) or patients (recommend) per batch; ``None``: ``data.batch_size``.
        lr: this stage's learning rate; ``None``: the optimiser's configured one.
        freeze: parameter-name prefixes kept fixed during this stage (besides the task's own ``freeze``), e.g.
            ``[encoder.adapter.dx, encoder.adapter.rx]``: the ontology embeddings that pretraining learned.
        constant_lr: train this stage at a constant learning rate instead of the task's ``lr_scheduler``.
    """

    task: Literal["pretrain", "recommend"]
    epochs: int
    batch_size: int | None = None
    lr: float | None = None
    freeze: tuple[str, ...] = ()
    constant_lr: bool = False

    def __post_init__(self) -> None:
        if self.task not in STAGE_MONITOR:
            raise ValueError(f"stage task={self.task!r}: choose 'pretrain' or 'recommend'")
        if self.epochs < 1 or (self.batch_size is not None and self.batch_size < 1) or (self.lr is not None and self.lr <= 0):
            raise ValueError(f"{self}: epochs and batch_size must be positive, lr positive")


def as_stages(stages: Sequence[Stage | dict[str, Any]] | None) -> list[Stage]:
    """Stages from :class:`Stage` objects or their dicts (as a checkpoint's hyperparameters hold them)."""
    return [s if isinstance(s, Stage) else Stage(**{**s, "freeze": tuple(s.get("freeze") or ())}) for s in stages or ()]


def stage_values(stages: Sequence[Stage | dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """The schedule as plain values (``freeze`` a list), or None: what the datamodule and the task both record as
    their ``stages`` hyperparameter. The two must be equal from the start (Lightning refuses to log a run whose
    model and datamodule disagree on a shared key) and load from a checkpoint with ``weights_only``."""
    return [{**dataclasses.asdict(s), "freeze": list(s.freeze)} for s in as_stages(stages)] or None


def stage_at(stages: Sequence[Stage], epoch: int) -> tuple[int, Stage]:
    """The index and the stage that ``epoch`` (0-based) belongs to.

    Raises:
        ValueError: the epoch lies beyond the schedule.
    """
    end = 0
    for i, stage in enumerate(stages):
        end += stage.epochs
        if epoch < end:
            return i, stage
    raise ValueError(f"epoch {epoch} lies beyond the schedule's {end} epochs; set trainer.max_epochs to {end}")


class StageSchedule(pl.Callback):
    """Restarts at stage boundaries: the previous stage's best weights, a fresh optimiser (see the module docstring).

    Args:
        stages: the schedule.
        restore_best: put back each stage's best validation epoch when the next stage starts and when training ends
            (the authors' schedule); otherwise a stage continues from the last weights.
    """

    def __init__(self, stages: Sequence[Stage], restore_best: bool = True) -> None:
        self.stages = list(stages)
        self.restore_best = restore_best
        self.stage = 0  # the stage whose optimiser is active
        self.best: float | None = None  # its best validation score so far ...
        self.best_state: dict[str, torch.Tensor] | None = None  # ... and those weights
        self.awaiting_validation = False  # between an epoch's last batch and its validation

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        total = sum(s.epochs for s in self.stages)
        if stage == "fit" and trainer.max_epochs is not None and not 0 < trainer.max_epochs <= total:
            raise ValueError(f"the stages add up to {total} epochs: set trainer.max_epochs to {total} (or fewer)")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        index, stage = stage_at(self.stages, trainer.current_epoch)
        if index == self.stage:
            return
        if self.restore_best and self.best_state is not None:
            pl_module.load_state_dict(self.best_state)
            log.info("stage %d (%s) starts from stage %d's best epoch (%s %.4f)", index, stage.task, self.stage,
                     STAGE_MONITOR[self.stages[self.stage].task], self.best)
        self.stage, self.best, self.best_state = index, None, None
        trainer.strategy.setup_optimizers(trainer)  # the task's configure_optimizers builds this stage's

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.awaiting_validation = batch_idx + 1 == trainer.num_training_batches

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.awaiting_validation = False
        if not self.restore_best:
            return
        name = STAGE_MONITOR[self.stages[self.stage].task]
        value = trainer.callback_metrics.get(name)
        if value is None:
            raise RuntimeError(f"{name} was not logged in validation: a stage's best epoch is chosen by it")
        if self.best is None or float(value) > self.best:
            self.best = float(value)
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.restore_best and self.best_state is not None:
            pl_module.load_state_dict(self.best_state)

    def state_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "best": self.best, "best_state": self.best_state,
                "awaiting_validation": self.awaiting_validation}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("awaiting_validation"):
            # Lightning 2.6 resumes such a checkpoint without the epoch's validation and, when the next epoch's loader
            # has another length (a new stage), at the wrong position in it
            raise ValueError(
                "this checkpoint was written after the last batch of an epoch and before its validation (a "
                "ModelCheckpoint with every_n_train_steps that fell on the epoch's end): a staged schedule cannot "
                "resume from it exactly. Resume from the checkpoint written when that epoch's validation ended "
                "(ModelCheckpoint's default saving) or from an earlier one"
            )
        self.stage, self.best, self.best_state = state["stage"], state["best"], state["best_state"]
