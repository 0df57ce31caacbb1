"""The README names only what exists: every config file, every ``multibert NAME`` command, every module path and
every ``class_path`` it mentions (a rename that forgets the README fails here), and ``.ci/run`` runs exactly the
README's test command."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from multibert.cli import PREP_COMMANDS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CODE = "\n".join(re.findall(r"```(?:bash|yaml|python)?\n(.*?)```", README, flags=re.S))
TRAINING = {"fit", "validate", "test", "predict"}


def test_every_config_the_readme_names_exists():
    named = set(re.findall(r"configs/[\w/.-]+\.yaml", README))
    assert named, "the README names no config"
    missing = sorted(p for p in named if not (ROOT / p).is_file())
    assert not missing, missing


def test_every_command_in_the_readme_examples_exists():
    used = set(re.findall(r"^\s*(?:[A-Z_]+=\S+\s+)*multibert ([a-z][a-z-]*)", CODE, flags=re.M))
    assert {"fit", "export"} <= used
    unknown = sorted(used - TRAINING - set(PREP_COMMANDS))
    assert not unknown, f"the README runs commands multibert does not have: {unknown}"


def test_every_file_path_the_readme_names_exists():
    paths = set(re.findall(r"`((?:multibert|datamodules|benchmarks|tests|configs|docs)/[\w/.-]+\.(?:py|yaml|png|md))`", README))
    assert len(paths) > 10
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, missing


def test_every_class_path_the_readme_names_imports():
    named = set(re.findall(r"class_path:\s*((?:multibert|datamodules)\.[\w.]+)", README))
    named |= set(re.findall(r"`((?:multibert|datamodules)\.[\w.]+\.[A-Z]\w+)`", README))
    assert named
    for path in sorted(named):
        module, _, name = path.rpartition(".")
        assert hasattr(importlib.import_module(module), name), path


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert ci in README, f".ci/run runs {ci!r}, which is not the README's test command"
