"""Finding a run's outputs in tests without fixing the run-folder layout: the newest ``last.ckpt`` and
``metrics.csv`` below a folder (``runs/NAME/version_N/...`` today)."""

from __future__ import annotations

import csv
from pathlib import Path


def last_checkpoint(root: str | Path = "runs") -> Path:
    """The most recently written ``last.ckpt`` below ``root``."""
    found = sorted(Path(root).rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    assert found, f"no last.ckpt below {root}"
    return found[-1]


def latest_metrics(root: str | Path = "runs") -> list[dict]:
    """The rows of the most recently written ``metrics.csv`` below ``root``."""
    found = sorted(Path(root).rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    assert found, f"no metrics.csv below {root}"
    return list(csv.DictReader(found[-1].read_text().splitlines()))
