"""The shared task machinery: hyperparameters that reload safely, optimiser groups, the LR schedule, freezing."""

from __future__ import annotations

import functools

import lightning.pytorch as pl
import pytest
import torch

from custom_adapter import SinusoidalAdapter
from multibert.config import BertConfig
from multibert.tasks.base import linear_warmup_decay, resolve_adapter
from multibert.tasks.pretraining import PretrainingTask

CFG = dict(vocab_size=50, hidden_size=32, num_attention_heads=2, num_hidden_layers=1, intermediate_size=40)


def test_python_built_task_reloads_with_weights_only(tmp_path):
    task = PretrainingTask(BertConfig(**CFG), adapter=functools.partial(SinusoidalAdapter, scale=2.0))
    assert task.hparams["adapter"] == {"class_path": "custom_adapter.SinusoidalAdapter", "init_args": {"scale": 2.0}}
    assert task.hparams["config"]["hidden_size"] == 32  # plain data, no dataclass in the checkpoint
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, max_steps=0)
    trainer.strategy.connect(task)
    trainer.save_checkpoint(tmp_path / "x.ckpt")
    again = PretrainingTask.load_from_checkpoint(tmp_path / "x.ckpt", weights_only=True)
    assert isinstance(again.encoder.adapter, SinusoidalAdapter) and again.encoder.adapter.scale == 2.0
    for (name, a), b in zip(task.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


def test_adapter_class_path_must_be_an_adapter():
    with pytest.raises(ValueError, match="'torch.nn.Linear' is not a multibert Adapter"):
        resolve_adapter({"class_path": "torch.nn.Linear"})


def test_no_weight_decay_on_biases_and_layernorm():
    task = PretrainingTask(BertConfig(**CFG), weight_decay=0.1)
    decay, no_decay = task.optimizer_groups()
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    ids = {id(p) for g in (decay, no_decay) for p in g["params"]}
    assert len(ids) == len({id(p) for p in task.parameters()})  # tied weights counted once, none missing
    assert id(task.encoder.adapter.LayerNorm.weight) in {id(p) for p in no_decay["params"]}


def test_linear_warmup_then_linear_decay():
    f = linear_warmup_decay(warmup_steps=4, total_steps=12)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0 and f(8) == 0.5 and f(12) == 0.0 and f(20) == 0.0


def test_freeze_keeps_named_parameters_fixed():
    task = PretrainingTask(BertConfig(**CFG), freeze=["encoder.adapter.position_embeddings"])
    task.apply_freeze()
    frozen = [n for n, p in task.named_parameters() if not p.requires_grad]
    assert frozen == ["encoder.adapter.position_embeddings.weight"]
    with pytest.raises(ValueError, match=r"freeze=\['nothing'\] matches no parameter"):
        PretrainingTask(BertConfig(**CFG), freeze=["nothing"]).apply_freeze()
