"""What the fine-tuning tasks share (Devlin et al., 2019, §4): one ``shared_step`` for train / val / test, metrics
computed once per evaluation epoch, and ``multibert predict`` writing a predictions file.

Subclasses implement ``shared_step(batch, stage) -> loss`` (updating their metric states),
``epoch_metrics(stage) -> dict`` (computed from those states, then reset), and ``predict_records(batch)`` plus
``write_predictions(records, path)``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from multibert.core.config import BertConfig
from multibert.core.task import EncoderTask

log = logging.getLogger(__name__)


class FinetuneTask(EncoderTask):
    """Base of the classification, QA and token-classification tasks.

    ``multibert predict`` writes to the datamodule's ``predictions_out`` (a data argument, not a model one:
    LightningCLI replaces model arguments with the checkpoint's hyperparameters when predicting); by default to
    ``predictions.<ext>`` in the trainer's log directory. Under several processes each rank writes its own
    ``.rankN`` file.
    """

    prediction_suffix = ".json"

    def __init__(self, config: BertConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._predictions: list[Any] = []

    # ----------------------------------------------------------------- to be provided by a subclass
    def epoch_metrics(self, stage: str) -> dict[str, float | torch.Tensor]:
        raise NotImplementedError

    def predict_records(self, batch: Any) -> list[Any]:
        raise NotImplementedError

    def write_predictions(self, records: list[Any], path: Path) -> None:
        raise NotImplementedError

    # ----------------------------------------------------------------- loops
    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def _log_epoch(self, stage: str) -> None:
        for name, value in self.epoch_metrics(stage).items():
            self.log(f"{stage}/{name}", value, prog_bar=name in ("acc", "f1", "micro_f1", "exact"))

    def log_loss(self, stage: str, loss: torch.Tensor, batch_size: int) -> None:
        self.log_metric(f"{stage}/loss", loss, batch_size, prog_bar=True)

    # ----------------------------------------------------------------- checkpoints
    def check_saved_labels(self, checkpoint: dict, what: str = "labels") -> None:
        """Refuse a checkpoint trained with another label vocabulary, saying how to rerun with the training data."""
        saved = checkpoint.get("hyper_parameters", {}).get("labels")
        if saved is None or list(saved) == self.labels:
            return
        raise ValueError(
            f"the checkpoint was trained with {what} {list(saved)[:5]}... ({len(saved)}), this run's data gives "
            f"{self.labels[:5]}... ({len(self.labels)}): the data differs from the training data; {self.rerun_hint()}"
        )

    # ----------------------------------------------------------------- prediction
    def on_predict_epoch_start(self) -> None:
        self._predictions = []

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> list[Any]:
        records = self.predict_records(batch)
        self._predictions.extend(records)
        return records

    def on_predict_epoch_end(self) -> None:
        path = self.resolve_predictions_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.write_predictions(self._predictions, path)
        log.info("wrote %d predictions to %s", len(self._predictions), path)

    def resolve_predictions_path(self) -> Path:
        out = getattr(self.trainer.datamodule, "predictions_out", None)
        if out:
            path = Path(out)
        else:
            root = self.trainer.log_dir or self.trainer.default_root_dir
            path = Path(root) / f"predictions{self.prediction_suffix}"
        if self.trainer.world_size > 1:
            path = path.with_name(f"{path.name}.rank{self.trainer.global_rank}")
        return path


def write_json(obj: Any, path: Path) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def write_jsonl(rows: list[dict], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
