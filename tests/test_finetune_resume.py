"""Fine-tuning runs resume exactly: interrupted mid-epoch (kill -9 after a checkpoint, or stopped), resumed with
``--ckpt_path last``, they end with the weights of an uninterrupted run, bit for bit (:mod:`resume_check`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from resume_check import assert_exact_resume

CONFIGS = Path(__file__).parents[1] / "configs"


@pytest.mark.parametrize(("family", "kill"), [("tiny_classification", True), ("tiny_qa", False), ("tiny_ner", False)])
def test_interrupted_finetune_resumes_bit_exact(scratch, family, kill):
    args = [
        "-c", str(CONFIGS / "finetune" / f"{family}.yaml"), "-c", str(CONFIGS / "trainer" / "cpu.yaml"),
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.max_steps=14",
        "--trainer.callbacks.every_n_train_steps=4",
    ]
    assert_exact_resume(args, scratch, stop_at=8, total=14, kill=kill)
