"""Run folders: one versioned folder per run under a logger's ``save_dir/name``, and which run ``--ckpt_path last``
resumes.

A run folder ``runs/NAME/version_N/`` holds the run's ``config.yaml``, TensorBoard events, ``metrics.csv``,
``learning_curves.png`` and ``checkpoints/`` (with ``last.ckpt``). ``--ckpt_path last`` picks the highest-numbered
run folder under the same ``runs/NAME`` whose ``config.yaml`` has the same ``model`` and ``data`` sections as the
command's (for ``validate`` / ``test`` / ``predict``: the same ``model`` section) and that holds a
``checkpoints/last.ckpt``; trainer settings (``max_steps``, devices, ...) may differ.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

_VERSION = re.compile(r"^version_(\d+)$")

#: what must be equal for ``--ckpt_path last`` to pick a run, by subcommand
SAME_SECTIONS = {"fit": ("model", "data"), "validate": ("model",), "test": ("model",), "predict": ("model",)}


def run_folders(root: Path) -> list[tuple[int, Path]]:
    """``(N, root/version_N)`` for every run folder under ``root``, by N."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _VERSION.match(p.name))]
    return sorted(found)


def next_version(roots: list[Path]) -> int:
    """One more than the highest run number under any of ``roots`` (0 for none)."""
    numbers = [n for root in roots for n, _ in run_folders(root)]
    return max(numbers) + 1 if numbers else 0


def _comparable(section: Any) -> Any:
    """A config section without what LightningCLI adds when it reads a checkpoint's hyperparameters."""
    if isinstance(section, dict):
        return {k: _comparable(v) for k, v in section.items() if k not in ("dict_kwargs", "_instantiator", "_class_path")}
    return section


def same_config(saved: dict[str, Any], current: dict[str, Any], sections: tuple[str, ...]) -> bool:
    return all(_comparable(saved.get(s)) == _comparable(current.get(s)) for s in sections)


def read_run_config(folder: Path) -> dict[str, Any] | None:
    path = folder / "config.yaml"
    if not path.is_file():
        return None
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return None
    return loaded if isinstance(loaded, dict) else None


def find_last(root: Path, current: dict[str, Any], subcommand: str) -> tuple[Path, Path]:
    """``(checkpoint, run folder)`` that ``--ckpt_path last`` means (see the module docstring).

    Raises:
        FileNotFoundError: no run of this config with a ``last.ckpt``; the message lists what was found.
    """
    sections = SAME_SECTIONS.get(subcommand, ("model",))
    others = []
    for number, folder in reversed(run_folders(root)):
        saved = read_run_config(folder)
        last = folder / "checkpoints" / "last.ckpt"
        if saved is not None and same_config(saved, current, sections):
            if last.is_file():
                return last, folder
            others.append(f"{folder.name} (same config, no checkpoint yet)")
        else:
            others.append(f"{folder.name} ({'another config' if saved is not None else 'no config.yaml'})")
    seen = f"runs there: {', '.join(others[:8])}" if others else "no run folder there"
    raise FileNotFoundError(
        f"--ckpt_path last: no run under {root} has the same {' and '.join(sections)} settings as this command and a "
        f"checkpoints/last.ckpt ({seen}); start without --ckpt_path, or give a checkpoint file"
    )


def run_folder_of(checkpoint: Path, roots: list[Path]) -> Path | None:
    """The run folder (``root/version_N``) that holds ``checkpoint`` in its ``checkpoints/``, if any."""
    folder = checkpoint.resolve().parent.parent
    if checkpoint.resolve().parent.name != "checkpoints" or not _VERSION.match(folder.name):
        return None
    return folder if any(folder.parent == r.resolve() for r in roots) else None
