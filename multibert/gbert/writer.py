"""``multibert predict`` output of G-BERT's recommender: each target visit's recommended ATC codes."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter

log = logging.getLogger(__name__)


class RecommendationWriter(BasePredictionWriter):
    """Writes ``predict_step`` records as JSON lines (``.jsonl``) or CSV rows (``.csv``: SUBJECT_ID, HADM_ID,
    ATC, probability — one row per recommended code).

    Args:
        output: the file; ``None`` takes the datamodule's ``predict_output`` (a data setting rather than a model
            one, because ``multibert predict --ckpt_path`` restores the model's arguments from the checkpoint).
    """

    def __init__(self, output: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output = None if output is None else Path(output)

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.output is None:
            self.output = Path(getattr(trainer.datamodule, "predict_output", None) or "recommendations.jsonl")
        if self.output.suffix not in (".jsonl", ".csv"):
            raise ValueError(f"predict_output={str(self.output)!r}: use a .jsonl or .csv file")
        if trainer.world_size > 1:
            self.output = self.output.with_name(f"{self.output.stem}.rank{trainer.global_rank}{self.output.suffix}")
        self.output.parent.mkdir(parents=True, exist_ok=True)
        with open(self.output, "w", newline="") as f:
            if self.output.suffix == ".csv":
                csv.writer(f).writerow(["SUBJECT_ID", "HADM_ID", "ATC", "probability"])

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx) -> None:
        with open(self.output, "a", newline="") as f:
            if self.output.suffix == ".jsonl":
                f.writelines(json.dumps(r) + "\n" for r in prediction)
            else:
                w = csv.writer(f)
                for r in prediction:
                    w.writerows([r["SUBJECT_ID"], r["HADM_ID"], code, p] for code, p in r["recommended"])

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        log.info("recommendations written to %s", self.output)
