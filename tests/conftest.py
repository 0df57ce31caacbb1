"""Shared test set-up: one torch thread (two cores are shared), a fixed seed per test, no network."""

from __future__ import annotations

import os
import sys

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# one thread here and in the subprocesses tests start (a run killed and resumed must compute what the uninterrupted
# run in this process computed, bit for bit; a different thread count reorders floating-point sums)
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """Run in a scratch folder (commands write runs/ relative to it), with a vocabulary cache shared by the tests
    and no pytest arguments in ``sys.argv`` (LightningCLI warns about them)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MULTIBERT_CACHE", str(tmp_path.parent / "multibert-cache"))
    monkeypatch.setattr(sys, "argv", ["multibert"])
    return tmp_path


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="also run the `long` tests (benchmark goals held as tests; tens of minutes each)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`long` tests (e.g. issue 12's G-BERT goals, about 50 minutes on 2 cores) run only with --long or MULTIBERT_LONG=1."""
    if config.getoption("--long") or os.environ.get("MULTIBERT_LONG") == "1":
        return
    skip = pytest.mark.skip(reason="a long test: run with --long (or MULTIBERT_LONG=1)")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)
