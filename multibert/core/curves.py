"""Learning curves: the metrics a run logged (its ``metrics.csv``) drawn as one PNG, several runs overlaid.

One panel per quantity (``loss``, ``mlm_loss``, ``acc``, ..., ``lr``); in each, training values per step as a thin
line (smoothed by an exponential moving average when there are many) and validation values as points joined by a
line, one colour per run. Test metrics (one point per run) are left out: they are no curve.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

#: stage prefixes of logged metric names, and how each is drawn
_STAGES = ("train", "val")
_SUFFIXES = ("_step", "_epoch")


def read_metrics(path: str | Path) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """``{(stage, name): [(step, value), ...]}`` from a Lightning ``metrics.csv`` (or the run folder holding it).

    Training values logged per step and per epoch keep the per-step series; ``lr`` counts as a training value.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: give a run folder with a metrics.csv (a CSV logger's output)")
    series: dict[tuple[str, str, str], dict[int, float]] = defaultdict(dict)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            step = int(float(row.get("step") or 0))
            for key, value in row.items():
                if key in ("step", "epoch") or value in ("", None):
                    continue
                stage, _, name = key.partition("/") if "/" in key else ("train", "", key)
                if stage not in _STAGES:
                    continue
                suffix = next((s for s in _SUFFIXES if name.endswith(s)), "")
                name = name[: len(name) - len(suffix)] if suffix else name
                series[(stage, name, suffix)][step] = float(value)
    out: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for (stage, name, suffix), values in series.items():
        if suffix == "_epoch" and (stage, name, "_step") in series:
            continue  # a value logged per step and per epoch: the per-step series is drawn
        out[(stage, name)] = sorted(values.items())
    return out


def _panel_order(name: str) -> tuple[int, str]:
    if name == "loss":
        return (0, name)
    if name.endswith("loss"):
        return (1, name)
    if name == "lr":
        return (3, name)
    return (2, name)


def _smooth(values: list[float], points: int) -> list[float]:
    """An exponential moving average whose span grows with the number of points (none below 50 points)."""
    if points < 50:
        return values
    alpha = 2.0 / (1 + max(points // 25, 2))
    out, avg = [], values[0]
    for v in values:
        avg = alpha * v + (1 - alpha) * avg
        out.append(avg)
    return out


def plot_runs(runs: list[str | Path], out: str | Path, labels: list[str] | None = None, dpi: int = 90) -> Path:
    """Draw the learning curves of one or several runs into ``out`` (PNG).

    Args:
        runs: run folders (each holding a ``metrics.csv``) or ``metrics.csv`` files.
        out: the PNG to write.
        labels: a legend label per run (default: the run folder's last two path parts).
        dpi: resolution.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = [read_metrics(r) for r in runs]
    if labels is None:
        labels = []
        for r in runs:
            folder = Path(r) if Path(r).is_dir() else Path(r).parent
            labels.append("/".join(folder.resolve().parts[-2:]))
    names = sorted({name for d in data for (_, name) in d}, key=_panel_order)
    if not names:
        raise ValueError(f"no training or validation metric in {[str(r) for r in runs]}")
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(4.2 * cols, 2.9 * rows), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    colours = [f"C{i % 10}" for i in range(len(data))]
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        for d, colour, label in zip(data, colours, labels):
            run_label = f"{label}: " if len(data) > 1 else ""
            if ("train", name) in d:
                steps, values = zip(*d[("train", name)])
                ax.plot(steps, _smooth(list(values), len(values)), color=colour, linewidth=1.0, alpha=0.8, label=f"{run_label}train")
            if ("val", name) in d:
                steps, values = zip(*d[("val", name)])
                ax.plot(steps, values, color=colour, linestyle="--", marker="o", markersize=3.5, linewidth=1.2, label=f"{run_label}validation")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.ticklabel_format(axis="y", useOffset=False)
        if name == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        if i == 0:
            ax.legend(fontsize=7)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
