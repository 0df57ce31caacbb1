"""Classes the run-folder tests name by ``class_path``: a datamodule that substitutes synthetic data (the generic
``synthetic_data`` declaration the CLI announces) and a task that declares the metric of its best checkpoint."""

from __future__ import annotations

from typing import ClassVar

from datamodules.text.datamodule import TextPretrainingDataModule
from multibert.core.pretraining import PretrainingTask


class SyntheticTextDataModule(TextPretrainingDataModule):
    """The text datamodule, declaring that it stands in for data the user did not give."""

    @property
    def synthetic_data(self) -> str:
        return "the Shakespeare sample stands in for the corpus the test did not give"


class BestByValLoss(PretrainingTask):
    """Pretraining whose best checkpoint is the lowest validation loss, declared instead of configure_callbacks."""

    best_checkpoint: ClassVar[dict[str, str]] = {"monitor": "val/loss", "mode": "min", "filename": "best-step{step}"}
