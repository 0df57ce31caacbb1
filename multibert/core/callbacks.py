"""The callbacks of a multibert run: checkpoints that keep the final step and link ``last``, the run's learning
curves drawn beside its metrics, and a model summary without an always-empty FLOPs column.

``RunCheckpoint`` is what the trainer presets (``configs/trainer/*.yaml``) configure; ``multibert fit`` adds
``LearningCurves`` and ``ModelSummary`` to every run (:mod:`multibert.cli`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichModelSummary
from lightning.pytorch.loggers import CSVLogger

log = logging.getLogger(__name__)


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` for run folders (same arguments), with three differences:

    - the final step is always saved: a run that stops between two checkpoint triggers (``max_steps`` reached,
      ``should_stop``, the last epoch) writes one more checkpoint when training ends;
    - ``last.ckpt`` is a symbolic link to the newest checkpoint file (``save_last: link``), and a real file only
      when the newest state is in no other file (a monitored top-k that kept an older one), so it never points
      back in time;
    - a task may declare the metric its best checkpoint is chosen by, ``best_checkpoint = {"monitor":
      "val/prauc", "mode": "max", "filename": ...}`` (a class attribute); it applies when the config names no
      ``monitor``, so a task needs no ``configure_callbacks`` (which would replace the configured checkpoint).

    Without ``dirpath``, checkpoints go to the run folder of the first logger (``runs/NAME/version_N/checkpoints``),
    beside the run's ``config.yaml`` and metrics. ``save_weights_only: true`` keeps only the weights, the data
    state and the loop state (about a third of the size with Adam): enough for ``test`` / ``predict`` /
    ``init_from`` and export, not for resuming.
    """

    def __init__(
        self,
        *args: Any,
        save_last: bool | Literal["link"] | None = "link",
        enable_version_counter: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, save_last=save_last, enable_version_counter=enable_version_counter, **kwargs)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        declared = getattr(pl_module, "best_checkpoint", None)
        if self.monitor is None and declared:
            self.monitor = declared["monitor"]
            mode = declared.get("mode", "min")
            if mode not in ("min", "max"):
                raise ValueError(f"{type(pl_module).__name__}.best_checkpoint: mode={mode!r}; expected 'min' or 'max'")
            self.mode = mode
            self.kth_value = torch.tensor(torch.inf if mode == "min" else -torch.inf)
            if declared.get("filename"):
                self.filename = declared["filename"]
                self.auto_insert_metric_name = False
        super().setup(trainer, pl_module, stage)

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, torch.Tensor]) -> None:
        if self.save_last == "link" and self._last_global_step_saved != trainer.global_step:
            # the newest state is in no file yet (a monitored top-k kept an older one): a link would point back in time
            filepath = self.format_checkpoint_name(monitor_candidates, self.CHECKPOINT_NAME_LAST)
            if trainer.is_global_zero and os.path.islink(filepath):
                os.remove(filepath)  # writing through the link would overwrite the file it points to
            trainer.strategy.barrier()
            self.last_model_path = filepath
            self._save_checkpoint(trainer, filepath)
            return
        super()._save_last_checkpoint(trainer, monitor_candidates)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if _run_ends(trainer):
            # the run ends here (max_steps, max_epochs, should_stop): save its final step while the loop state
            # still says where in the epoch it is, so that a longer run can continue from it mid-epoch
            self._save_final(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._save_final(trainer):
            super().on_train_end(trainer, pl_module)

    def _save_final(self, trainer: pl.Trainer) -> bool:
        unsaved = trainer.global_step > 0 and self._last_global_step_saved != trainer.global_step
        if not unsaved or trainer.fast_dev_run or trainer.sanity_checking:
            return False
        candidates = self._monitor_candidates(trainer)
        if self.monitor is None and self.save_top_k != 0:
            self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)
        return True


def _run_ends(trainer: pl.Trainer) -> bool:
    """Whether training stops after this epoch (``fit_loop.done`` would say so too, but logs when it is asked)."""
    loop = trainer.fit_loop
    max_steps = loop.max_steps if loop.max_steps is not None else -1
    max_epochs = loop.max_epochs if loop.max_epochs is not None else -1
    return (
        trainer.should_stop
        or (max_steps != -1 and trainer.global_step >= max_steps)
        or (max_epochs != -1 and trainer.current_epoch + 1 >= max_epochs)
    )


class LearningCurves(pl.Callback):
    """Draws the run's learning curves (``learning_curves.png``, :func:`multibert.core.curves.plot_runs`) beside its
    ``metrics.csv`` when training ends. ``multibert curves RUN [RUN ...]`` draws them for any run, at any time."""

    def __init__(self, filename: str = "learning_curves.png") -> None:
        self.filename = filename

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        csv_loggers = [lg for lg in trainer.loggers if isinstance(lg, CSVLogger)]
        if not csv_loggers:
            return
        logger = csv_loggers[0]
        logger.save()  # flush the rows still in memory
        folder = Path(logger.log_dir)
        if not (folder / "metrics.csv").is_file():
            return
        from multibert.core.curves import plot_runs

        try:
            out = plot_runs([folder], folder / self.filename)
        except (ValueError, OSError, RuntimeError) as e:  # a picture is not worth failing a finished run for
            log.warning("could not draw the learning curves of %s: %s", folder, e)
            return
        log.info("learning curves: %s", out)


class ModelSummary(RichModelSummary):
    """Lightning's model summary, without the FLOPs column and total when nothing was counted.

    Lightning counts FLOPs by running ``example_input_array`` through the model; multibert's tasks take typed
    batches whose shape depends on the data, so they set none and the column would read 0 for every module.
    """

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        if total_flops:
            RichModelSummary.summarize(
                summary_data, total_parameters, trainable_parameters, model_size, total_training_modes, total_flops,
                **summarize_kwargs,
            )
            return
        from lightning.pytorch.utilities.model_summary.model_summary import (
            get_formatted_model_size,
            get_human_readable_count,
        )
        from rich import get_console
        from rich.table import Table

        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        for name, _ in columns:
            table.add_column(name, justify="right" if name == "Params" else "left", style="dim" if name == " " else None)
        for row in zip(*(values for _, values in columns)):
            table.add_row(*row)
        console = get_console()
        console.print(table)
        totals = Table.grid(expand=True)
        totals.add_column()
        for label, value in (
            ("Trainable params", get_human_readable_count(int(trainable_parameters))),
            ("Non-trainable params", get_human_readable_count(int(total_parameters - trainable_parameters))),
            ("Total params", get_human_readable_count(int(total_parameters))),
            ("Total estimated model params size (MB)", get_formatted_model_size(model_size)),
            ("Modules in train mode", str(total_training_modes["train"])),
            ("Modules in eval mode", str(total_training_modes["eval"])),
        ):
            totals.add_row(f"[bold]{label}[/]: {value}")
        console.print(totals)
