"""The layers of multibert (see ``multibert/__init__.py``) hold: ``import-linter`` checks the contracts of
``pyproject.toml`` on the source tree, and the same contracts catch a deliberate upward import in a copy of it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, env=env, capture_output=True, text=True)


@pytest.fixture(scope="module")
def linter() -> Path:
    if not LINT.is_file():
        pytest.fail(f"{LINT} is missing: install the test extras (pip install -e '.[test]')")
    return LINT


def test_layers_hold_on_the_source_tree(linter):
    done = lint(ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in done.stdout


@pytest.mark.parametrize(
    "module, line, contract",
    [
        ("multibert/core/backbone.py", "import datamodules.masking", "layers: commands > data > families > core"),
        ("multibert/gbert/heads.py", "import multibert.video.quantize", "layers: commands > data > families > core"),
        ("multibert/core/heads.py", "import lightning.pytorch", "model files know nothing about Lightning"),
        ("datamodules/ehr/tables.py", "import datamodules.text.corpus", "data families share the tokenizer"),
    ],
)
def test_a_wrong_import_breaks_a_contract(linter, tmp_path, module, line, contract):
    for name in ("multibert", "datamodules"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("data", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}  # deliberate violation\n")
    done = lint(tmp_path)
    assert done.returncode != 0
    assert f"{contract}" in done.stdout and "BROKEN" in done.stdout, done.stdout[-3000:]
