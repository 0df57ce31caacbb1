"""``multibert curves``: draw the learning curves of one or several runs (overlaid) into a PNG."""

from __future__ import annotations

from pathlib import Path

from multibert.core.curves import plot_runs


def plot_curves(runs: str, out: str = "learning_curves.png", labels: list[str] | None = None) -> None:
    """Draw the learning curves of runs, overlaid, from their ``metrics.csv``.

    Args:
        runs: a run folder (``runs/NAME/version_N``, holding a ``metrics.csv``) or a ``metrics.csv``, several of
            them separated by commas, or a logger folder (``runs/NAME``) whose run folders are all drawn.
        out: the PNG to write.
        labels: a legend label per run (default: the last two parts of each run folder's path).
    """
    folders: list[Path] = []
    for run in (Path(r.strip()) for r in runs.split(",") if r.strip()):
        if run.is_dir() and not (run / "metrics.csv").is_file():
            found = sorted((p.parent for p in run.glob("*/metrics.csv")), key=lambda p: (len(p.name), p.name))
            if not found:
                raise FileNotFoundError(f"{run} holds no metrics.csv and no run folder with one")
            folders.extend(found)
        else:
            folders.append(run)
    path = plot_runs(folders, out, labels)
    print(f"{len(folders)} run(s) → {path}")
