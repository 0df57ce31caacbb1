"""The shared task machinery: hyperparameters that reload safely, optimiser groups, the LR schedule, freezing."""

from __future__ import annotations

import functools
import logging
import types

import lightning.pytorch as pl
import pytest
import torch
from custom_adapter import SinusoidalAdapter

from multibert.core.adapter import Adapter
from multibert.core.checkpoint import from_spec
from multibert.core.config import BertConfig
from multibert.core.optim import LinearWarmupDecay, warmup_decay_factor
from multibert.core.pretraining import PretrainingTask

CFG = dict(vocab_size=50, hidden_size=32, num_attention_heads=2, num_hidden_layers=1, intermediate_size=40)


def test_python_built_task_reloads_with_weights_only(tmp_path, monkeypatch):
    task = PretrainingTask(BertConfig(**CFG), adapter=functools.partial(SinusoidalAdapter, scale=2.0))
    assert task.hparams["adapter"] == {"class_path": "custom_adapter.SinusoidalAdapter", "init_args": {"scale": 2.0}}
    assert task.hparams["config"]["hidden_size"] == 32  # plain data, no dataclass in the checkpoint
    assert task.hparams["optimizer"] == {"class_path": "multibert.core.optim.AdamW", "init_args": {}}
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, max_steps=0)
    trainer.strategy.connect(task)
    trainer.save_checkpoint(tmp_path / "x.ckpt")
    # a checkpoint may name only trusted modules: the test's own adapter module must be allowed first
    with pytest.raises(ValueError, match="'custom_adapter.SinusoidalAdapter', outside the trusted modules"):
        PretrainingTask.load_from_checkpoint(tmp_path / "x.ckpt", weights_only=True)
    monkeypatch.setenv("MULTIBERT_TRUSTED_MODULES", "custom_adapter.")
    again = PretrainingTask.load_from_checkpoint(tmp_path / "x.ckpt", weights_only=True)
    assert isinstance(again.encoder.adapter, SinusoidalAdapter) and again.encoder.adapter.scale == 2.0
    for (name, a), b in zip(task.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


def test_adapter_class_path_must_be_an_adapter():
    with pytest.raises(ValueError, match="'torch.nn.Linear' is not a multibert.core.adapter.Adapter"):
        from_spec({"class_path": "torch.nn.Linear"}, Adapter, "model.adapter")


def test_any_configured_optimizer_keeps_bert_no_decay_groups():
    # what `--model.optimizer torch.optim.SGD --model.optimizer.weight_decay 0.1 --model.lr_scheduler null` builds
    sgd = functools.partial(torch.optim.SGD, lr=0.1, weight_decay=0.1)
    task = PretrainingTask(BertConfig(**CFG), optimizer=sgd, lr_scheduler=None)
    optimizer = task.configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    ids = {id(p) for g in (decay, no_decay) for p in g["params"]}
    assert len(ids) == len({id(p) for p in task.parameters()})  # tied weights counted once, none missing
    assert id(task.encoder.adapter.LayerNorm.weight) in {id(p) for p in no_decay["params"]}


def test_linear_warmup_then_linear_decay():
    f = functools.partial(warmup_decay_factor, warmup_steps=4, total_steps=12)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0 and f(8) == 0.5 and f(12) == 0.0 and f(20) == 0.0
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    schedule = LinearWarmupDecay(optimizer, warmup_steps=0.25, total_steps=12)  # a fraction of all steps
    assert schedule.warmup_steps == 3 and optimizer.param_groups[0]["lr"] == pytest.approx(2.0 / 3)
    with pytest.raises(ValueError, match="needs total_steps"):
        LinearWarmupDecay(optimizer, total_steps=None)


def test_freeze_keeps_named_parameters_fixed():
    task = PretrainingTask(BertConfig(**CFG), freeze=["encoder.adapter.position_embeddings"])
    task.apply_freeze()
    frozen = [n for n, p in task.named_parameters() if not p.requires_grad]
    assert frozen == ["encoder.adapter.position_embeddings.weight"]
    with pytest.raises(ValueError, match=r"freeze=\['nothing'\] matches no parameter"):
        PretrainingTask(BertConfig(**CFG), freeze=["nothing"]).apply_freeze()


def _checkpoint(task: PretrainingTask, path, vocab: str | None = None):
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, max_steps=0)
    trainer.strategy.connect(task)
    trainer.save_checkpoint(path)
    if vocab is not None:  # what a datamodule stores in every checkpoint
        ckpt = torch.load(path, weights_only=True)
        ckpt["TextPretrainingDataModule"] = {"vocab": vocab}
        torch.save(ckpt, path)
    return str(path)


def test_init_from_checkpoint_checks_architecture_and_vocabulary(tmp_path):
    small = _checkpoint(PretrainingTask(BertConfig(**{**CFG, "num_hidden_layers": 2})), tmp_path / "small.ckpt")
    deeper = PretrainingTask(BertConfig(**{**CFG, "num_hidden_layers": 4}), init_from=small)
    with pytest.raises(ValueError, match=r"small.ckpt does not match the model config: num_hidden_layers: config has 4, "
                                         r"checkpoint has 2 \(--model.init_args.config.num_hidden_layers\)"):
        deeper.setup("fit")
    wider_vocab = PretrainingTask(BertConfig(**{**CFG, "num_hidden_layers": 2, "vocab_size": 60}), init_from=small)
    with pytest.raises(ValueError, match=r"vocab_size: config has 60, checkpoint has 50; for vocab_size, tokenize with the "
                                         r"checkpoint's vocabulary \(`multibert export --checkpoint"):
        wider_vocab.setup("fit")

    # same size, other tokens: as wrong, and named by the first id that differs
    tokens = [f"t{i}" for i in range(50)]
    same_size = _checkpoint(PretrainingTask(BertConfig(**CFG)), tmp_path / "vocab.ckpt", "\n".join(tokens) + "\n")
    ours = tmp_path / "vocab.txt"
    ours.write_text("\n".join(tokens[:7] + ["other"] + tokens[8:]) + "\n")
    task = PretrainingTask(BertConfig(**CFG), init_from=same_size)
    task._trainer = types.SimpleNamespace(datamodule=types.SimpleNamespace(vocab_path=ours))
    with pytest.raises(ValueError, match=r"its vocabulary differs from the data's .* both have 50 tokens: id 7 is 't7' "
                                         r"there and 'other' here"):
        task.setup("fit")


def test_partial_load_is_explicit_and_lists_what_stayed(tmp_path, caplog):
    source = PretrainingTask(BertConfig(**{**CFG, "num_hidden_layers": 2}))
    path = _checkpoint(source, tmp_path / "small.ckpt")
    task = PretrainingTask(BertConfig(**{**CFG, "num_hidden_layers": 4}), init_from=path, init_partial=True)
    before = task.encoder.backbone.blocks[3].mlp.fc.weight.detach().clone()
    with caplog.at_level(logging.INFO, logger="multibert"):
        task.setup("fit")
    assert "24 tensors kept at their initial values: encoder.backbone.blocks.2 (12 tensors), encoder.backbone.blocks.3 " \
           "(12 tensors)" in caplog.text
    assert "architecture differs (num_hidden_layers: 4 here, 2 there)" in caplog.text
    torch.testing.assert_close(task.encoder.backbone.blocks[1].mlp.fc.weight, source.encoder.backbone.blocks[1].mlp.fc.weight)
    torch.testing.assert_close(task.encoder.backbone.blocks[3].mlp.fc.weight, before)
