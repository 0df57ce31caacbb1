"""Run folders and what a run leaves: one version per run for all its logs and checkpoints, ``--ckpt_path last``
resuming the newest run of the same config, the final step saved, ``last.ckpt`` a link, weights-only checkpoints,
learning curves, the synthetic-data announcement, and checkpoints that may not name untrusted code."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml
from run_folders import last_checkpoint, latest_metrics

from multibert.cli import main
from multibert.core.checkpoint import RUN_KEY
from multibert.core.config import BertConfig
from multibert.core.curves import read_metrics
from multibert.core.pretraining import PretrainingTask
from multibert.core.task import EncoderTask

ROOT = Path(__file__).parents[1]
CONFIGS = ROOT / "configs"
TINY = str(CONFIGS / "bert" / "tiny.yaml")
CPU = str(CONFIGS / "trainer" / "cpu.yaml")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MULTIBERT_CACHE", str(tmp_path.parent / "multibert-cache"))
    monkeypatch.setattr(sys, "argv", ["multibert"])


def fit(config: str, *extra: str) -> None:
    main(["fit", "-c", config, "-c", CPU, *QUIET, *extra])


def test_each_run_has_one_folder_and_last_resumes_the_same_config():
    fit(TINY, "--trainer.max_steps=3", "--trainer.limit_val_batches=0")
    fit(str(CONFIGS / "finetune" / "tiny_classification.yaml"), "--trainer.max_steps=2", "--trainer.limit_val_batches=0")
    runs = Path("runs/multibert")
    assert sorted(p.name for p in runs.iterdir()) == ["version_0", "version_1"]  # one counter for every logger
    for run, step in (("version_0", 3), ("version_1", 2)):
        folder = runs / run
        assert (folder / "config.yaml").is_file() and (folder / "metrics.csv").is_file()
        assert list(folder.glob("events.out.tfevents.*")) and (folder / "learning_curves.png").is_file()
        assert torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == step
    assert yaml.safe_load((runs / "version_1" / "config.yaml").read_text())["model"]["class_path"].endswith("SequenceClassificationTask")

    # the text config resumes its own run (not the classifier written after it), in its own folder
    fit(TINY, "--trainer.max_steps=5", "--trainer.limit_val_batches=0", "--ckpt_path=last")
    assert sorted(p.name for p in runs.iterdir()) == ["version_0", "version_1"]
    resumed = torch.load(runs / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 5 and resumed["hyper_parameters"]["_class_path"].endswith("PretrainingTask")
    steps = [int(r["step"]) for r in latest_metrics(runs / "version_0") if r.get("train/loss_step")]
    assert steps == sorted(set(steps))  # the resumed rows continue the file, none twice

    # a config that never ran has nothing to resume: an error, not a silent fresh start
    with pytest.raises(FileNotFoundError, match=r"--ckpt_path last: no run under runs/multibert has the same model and "
                                                r"data settings .*version_1 \(another config\), version_0 \(another config\)"):
        fit(str(CONFIGS / "finetune" / "tiny_ner.yaml"), "--trainer.max_steps=2", "--ckpt_path=last")
    assert sorted(p.name for p in runs.iterdir()) == ["version_0", "version_1"]


def test_final_step_is_saved_and_last_links_to_it():
    fit(TINY, "--trainer.max_steps=7", "--trainer.val_check_interval=3", "--trainer.limit_val_batches=1")
    last = Path("runs/multibert/version_0/checkpoints/last.ckpt")
    assert last.is_symlink()  # a link, not a second copy
    target = last.resolve()
    assert target.name == "epoch=0-step=7.ckpt" and sorted(p.name for p in last.parent.iterdir()) == [target.name, "last.ckpt"]
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 7 and ckpt["epoch"] == 0  # the 7th step, saved mid-epoch
    assert ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"] == 7


def test_monitored_best_keeps_its_file_and_last_is_the_newest_state():
    fit(TINY, "--trainer.max_steps=7", "--trainer.val_check_interval=3", "--trainer.limit_val_batches=1",
        "--trainer.callbacks.monitor=val/loss", "--trainer.callbacks.save_top_k=1")
    folder = Path("runs/multibert/version_0/checkpoints")
    last = folder / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 7
    best = [p for p in folder.iterdir() if p.name != "last.ckpt"]
    assert len(best) == 1 and torch.load(best[0], weights_only=True)["global_step"] in (3, 6)
    assert not last.is_symlink() or last.resolve() != best[0].resolve()  # never a link back to an older state


def test_task_declares_its_best_checkpoint_metric(capsys):
    fit(TINY, "--model=custom_tasks.BestByValLoss", "--trainer.max_steps=6", "--trainer.val_check_interval=3",
        "--trainer.limit_val_batches=1")
    names = sorted(p.name for p in Path("runs/multibert/version_0/checkpoints").iterdir())
    assert names[0].startswith("best-step") and names[1] == "last.ckpt" and len(names) == 2
    assert "will override" not in capsys.readouterr().err  # no configure_callbacks replacing the configured one


def test_weights_only_checkpoints_for_fine_tunes():
    config = str(CONFIGS / "finetune" / "tiny_classification.yaml")
    fit(config, "--trainer.max_steps=3", "--trainer.limit_val_batches=0")
    full = last_checkpoint().resolve()
    fit(config, "--trainer.max_steps=3", "--trainer.limit_val_batches=0", "--trainer.callbacks.save_weights_only=true")
    slim = last_checkpoint().resolve()
    ckpt = torch.load(slim, weights_only=True)
    assert "optimizer_states" not in ckpt and "state_dict" in ckpt and ckpt["LabelledTextDataModule"]["vocab"]
    assert os.path.getsize(slim) < 0.6 * os.path.getsize(full)  # Adam's two moments are gone
    task = EncoderTask.from_checkpoint(slim)
    for key, value in torch.load(full, weights_only=True)["state_dict"].items():
        assert torch.equal(task.state_dict()[key], value), key  # same weights: same seed and data


def test_learning_curves_of_a_run_and_of_several(capsys):
    fit(TINY, "--trainer.max_steps=6", "--trainer.val_check_interval=3", "--trainer.limit_val_batches=1",
        "--trainer.log_every_n_steps=1")
    fit(TINY, "--trainer.max_steps=4", "--trainer.limit_val_batches=0", "--trainer.log_every_n_steps=1",
        "--model.init_args.optimizer.init_args.lr=1e-3")
    series = read_metrics("runs/multibert/version_0")
    assert [s for s, _ in series[("train", "loss")]] == [0, 1, 2, 3, 4, 5]
    assert [s for s, _ in series[("val", "loss")]] == [2, 5]
    rows = [r for r in latest_metrics("runs/multibert/version_0") if r.get("train/loss_step")]
    assert [v for _, v in series[("train", "loss")]] == [float(r["train/loss_step"]) for r in rows]
    import matplotlib.image

    own = matplotlib.image.imread("runs/multibert/version_0/learning_curves.png")
    assert own.shape[0] > 200 and own.shape[1] > 600  # panels for loss, mlm/nsp losses and accuracies, lr
    main(["curves", "runs/multibert", "--out", "both.png"])
    assert capsys.readouterr().out.strip().endswith("2 run(s) → both.png")
    assert matplotlib.image.imread("both.png").shape == own.shape


def test_synthetic_data_is_announced_and_recorded(capsys):
    fit(TINY, "--data=custom_tasks.SyntheticTextDataModule", "--data.corpus=datamodules/data/shakespeare_sample.txt",
        "--data.train_vocab_size=1000", "--data.max_seq_length=64", "--trainer.max_steps=2", "--trainer.limit_val_batches=0")
    err = capsys.readouterr().err
    assert "WARNING multibert.cli: SYNTHETIC DATA: the Shakespeare sample stands in" in err
    config = Path("runs/multibert/version_0/config.yaml").read_text()
    assert config.startswith("# SYNTHETIC DATA: the Shakespeare sample stands in")
    assert yaml.safe_load(config)["data"]["class_path"] == "custom_tasks.SyntheticTextDataModule"  # still a valid config
    record = torch.load(last_checkpoint(), weights_only=True)[RUN_KEY]
    assert record["synthetic_data"].startswith("the Shakespeare sample") and record["data"]["init_args"]["corpus"]


# ----------------------------------------------------------------------------------------------- untrusted code
@pytest.fixture
def evil(tmp_path, monkeypatch):
    """A module that leaves a marker when imported, importable from ``sys.path``."""
    marker = tmp_path / "imported"
    (tmp_path / "evil_mod.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n"
        "def instantiate(cls, kwargs):\n    return cls(**kwargs)\n"
        "class Task:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("evil_mod", None)
    return marker


def _saved_task(path: Path, **hparams: object) -> Path:
    task = PretrainingTask(BertConfig(vocab_size=50, hidden_size=16, num_attention_heads=2, num_hidden_layers=1, intermediate_size=20))
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, max_steps=0)
    trainer.strategy.connect(task)
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["hyper_parameters"].update(hparams)
    torch.save(ckpt, path)
    return path


def test_load_from_checkpoint_refuses_an_untrusted_instantiator(tmp_path, evil):
    path = _saved_task(tmp_path / "x.ckpt", _instantiator="evil_mod.instantiate")
    with pytest.raises(ValueError, match=r"names the class 'evil_mod.instantiate', outside the trusted modules"):
        PretrainingTask.load_from_checkpoint(path)
    assert not evil.exists()  # refused before anything imported it
    path = _saved_task(tmp_path / "y.ckpt")  # a trusted checkpoint still loads, weights-only
    assert isinstance(PretrainingTask.load_from_checkpoint(path), PretrainingTask)


def test_cli_ckpt_path_refuses_untrusted_class_paths(tmp_path, evil):
    path = _saved_task(tmp_path / "x.ckpt", _class_path="evil_mod.Task")
    with pytest.raises(ValueError, match=r"'evil_mod.Task', outside the trusted modules"):
        main(["test", "-c", TINY, "-c", CPU, *QUIET, "--ckpt_path", str(path)])
    assert not evil.exists()
