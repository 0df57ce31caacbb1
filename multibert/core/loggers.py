"""A CSV logger for run folders that a resumed run writes into again.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` when its folder is not empty (and warns), which is always the case
when it shares the run folder with TensorBoard and ``config.yaml``, and loses the history of a resumed run. This
one keeps the file: rows logged after the step a run resumes from (written before the interruption) are dropped at
the first write, the new rows are appended.
"""

from __future__ import annotations

import csv

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _KeepingWriter(ExperimentWriter):
    """Lightning's CSV experiment writer without deleting an existing ``metrics.csv``."""

    def _check_log_dir_exists(self) -> None:
        self._existing: list[dict[str, str]] | None = None
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                reader = csv.DictReader(f)
                self._existing = list(reader)
                self.metrics_keys = sorted(reader.fieldnames or [])

    def save(self) -> None:
        if self._existing is not None and self.metrics:
            # the rows at and after the first new step belong to the interrupted attempt: the resumed run relogs them
            first = min(int(m["step"]) for m in self.metrics)
            kept = [r for r in self._existing if not r.get("step") or int(float(r["step"])) < first]
            with self._fs.open(self.metrics_file_path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(kept)
            self._existing = None
        super().save()


class ResumableCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger`` (same arguments) that keeps a resumed run's earlier rows in its ``metrics.csv``."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = _KeepingWriter(log_dir=self.log_dir)
        return self._experiment
