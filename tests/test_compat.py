"""Checkpoints written by an earlier multibert must keep loading: one tiny checkpoint per family, written by
``tests/fixtures/make_compat.py`` through ``multibert fit``, loads with ``EncoderTask.from_checkpoint`` and gives the
outputs it gave when it was written. A rename of a module, class, parameter or hyperparameter fails here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from compat import FAMILIES

from multibert.cli import main
from multibert.core.checkpoint import checkpoint_vocab
from multibert.core.task import EncoderTask

FIXTURES = Path(__file__).parent / "fixtures" / "compat"
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_checkpoint_of_an_earlier_version_loads_and_predicts_the_same(family):
    folder = FIXTURES / family
    task = EncoderTask.from_checkpoint(folder / "model.ckpt").eval()
    saved = torch.load(folder / "io.pt", weights_only=True)
    with torch.no_grad():
        ours = FAMILIES[family]["outputs"](task, saved["batch"])
    assert set(ours) == set(saved["outputs"])
    for name, value in saved["outputs"].items():
        torch.testing.assert_close(ours[name], value, atol=1e-5, rtol=1e-5, msg=f"{family}: {name}")


def test_an_earlier_checkpoint_resumes_training_and_exports(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    ckpt = FIXTURES / "bert" / "model.ckpt"
    steps = torch.load(ckpt, weights_only=True)["global_step"]
    vocab = tmp_path / "vocab.txt"  # the vocabulary travels in the checkpoint; resume with it, not a retrained one
    vocab.write_text(checkpoint_vocab(ckpt), encoding="utf-8")
    main(["fit", "-c", "configs/bert/tiny.yaml", f"--ckpt_path={ckpt}", f"--trainer.max_steps={steps + 2}",
          f"--data.vocab_file={vocab}",
          "--trainer.accelerator=cpu", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
          "--trainer.limit_val_batches=0", f"--trainer.default_root_dir={tmp_path}"])
    resumed = max(tmp_path.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    assert torch.load(resumed, weights_only=True)["global_step"] == steps + 2
    main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "hf")])
    assert (tmp_path / "hf" / "model.safetensors").is_file() and (tmp_path / "hf" / "vocab.txt").is_file()
