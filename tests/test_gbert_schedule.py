"""G-BERT's staged schedule (configs/gbert/tiny_stages.yaml and the recipes): each epoch trains its stage's task,
batch size, learning rate and frozen parameters; a stage starts from the previous stage's best validation epoch with
a fresh optimiser; training ends on the last stage's best. Plus the two step-time savers the recipes lean on: length
buckets in the backbone and the code table kept while the ontology is frozen."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml

from datamodules.ehr.datamodule import EHRDataModule
from multibert.core.config import BertConfig
from multibert.core.optim import LinearWarmupDecay
from multibert.gbert.adapter import OntologyAdapter
from multibert.gbert.schedule import STAGE_MONITOR, Stage, StageSchedule, stage_at
from multibert.gbert.task import GBertRecommendTask

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "gbert"
FROZEN = ("encoder.adapter.dx", "encoder.adapter.rx")


class Record(pl.Callback):
    """Per epoch: the batch type and size, the optimiser, its learning rate, and the weights at its start."""

    def __init__(self) -> None:
        self.epochs: list[dict] = []
        self.val: list[dict[str, float]] = []
        self.end_weights: list[dict[str, torch.Tensor]] = []  # after each epoch's training

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:  # (the schedule switches stages in on_train_epoch_start, after the trainer's callbacks)
            optimizer = trainer.optimizers[0]
            self.epochs.append({
                "optimizer": optimizer, "state": len(optimizer.state), "lr": optimizer.param_groups[0]["lr"],
                "weights": {k: v.clone() for k, v in pl_module.state_dict().items()}, "batches": [],
                "trainable": {n for n, p in pl_module.named_parameters() if p.requires_grad},
            })
        size = len(batch) if hasattr(batch, "dx_labels") else len(set(batch.first_visit.tolist()))  # visits, patients
        self.epochs[-1]["batches"].append((type(batch).__name__, size))

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.val.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
            self.end_weights.append({k: v.clone() for k, v in pl_module.state_dict().items()})


def _tiny_stages(stages: list[dict]) -> tuple[GBertRecommendTask, EHRDataModule, pl.Trainer, Record]:
    cfg = yaml.safe_load((CONFIGS / "tiny_stages.yaml").read_text())
    dm = EHRDataModule(task="recommend", batch_size=16, synthetic_patients=200, stages=stages)
    config = BertConfig(vocab_size=dm.vocab_size, **cfg["model"]["init_args"]["config"])
    adapter = functools.partial(OntologyAdapter, dx_codes=dm.dx_codes, rx_codes=dm.rx_codes)
    model = GBertRecommendTask(config, adapter, stages=dm.stages, optimizer=functools.partial(torch.optim.Adam, lr=1e-3),
                               lr_scheduler=None)
    record = Record()
    trainer = pl.Trainer(accelerator="cpu", max_epochs=sum(s["epochs"] for s in stages), logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         reload_dataloaders_every_n_epochs=1, limit_val_batches=4, callbacks=[record],
                         num_sanity_val_steps=0)
    return model, dm, trainer, record


def test_stages_restart_from_the_best_epoch_with_a_fresh_optimiser() -> None:
    stages = [{"task": "pretrain", "epochs": 2, "batch_size": 32},
              {"task": "recommend", "epochs": 2, "batch_size": 8, "lr": 5e-4, "freeze": list(FROZEN)},
              {"task": "pretrain", "epochs": 1, "batch_size": 32}]
    model, dm, trainer, record = _tiny_stages(stages)
    schedule = next(c for c in model.configure_callbacks() if isinstance(c, StageSchedule))
    trainer.fit(model, dm)
    epochs = record.epochs
    # each epoch trains its stage's task and batch size
    kinds = [{name for name, _ in e["batches"]} for e in epochs]
    assert kinds == [{"GBertPretrainBatch"}] * 2 + [{"GBertRecommendBatch"}] * 2 + [{"GBertPretrainBatch"}]
    assert max(n for _, n in epochs[0]["batches"]) == 32 and max(n for _, n in epochs[2]["batches"]) == 8
    # a fresh optimiser (no Adam state yet) at every stage start, the same one inside a stage
    assert [e["state"] == 0 for e in epochs] == [True, False, True, False, True]
    assert epochs[1]["optimizer"] is epochs[0]["optimizer"] and epochs[2]["optimizer"] is not epochs[1]["optimizer"]
    assert [e["lr"] for e in epochs] == [1e-3, 1e-3, 5e-4, 5e-4, 1e-3]
    # the frozen ontology stays as pretraining left it through the fine-tuning stage, and trains again after
    assert not any(n.startswith(FROZEN) for n in epochs[2]["trainable"])
    assert {n for n in epochs[4]["trainable"] if n.startswith(FROZEN)} == {n for n in epochs[0]["trainable"] if n.startswith(FROZEN)} != set()
    for key in [k for k in epochs[2]["weights"] if k.startswith(FROZEN)]:
        assert torch.equal(epochs[2]["weights"][key], epochs[3]["weights"][key]), key
    # validation scores both tasks every epoch; a stage starts from its predecessor's best epoch (by its monitor)
    assert all({"val/prauc", "val/rx2rx_prauc"} <= set(v) for v in record.val)
    for start, stage, (lo, hi) in ((2, 0, (0, 2)), (4, 1, (2, 4))):  # the epoch a stage starts, the stage before it
        monitor = STAGE_MONITOR[stages[stage]["task"]]
        best = max(range(lo, hi), key=lambda i: record.val[i][monitor])
        for key, value in record.end_weights[best].items():
            assert torch.equal(epochs[start]["weights"][key], value), (start, best, key)
    # training ends on the last stage's best epoch (a one-epoch stage: its only epoch)
    for key, value in record.end_weights[4].items():
        assert torch.equal(model.state_dict()[key], value), key
    assert schedule.stages == [Stage(**{**s, "freeze": tuple(s.get("freeze", ()))}) for s in stages]


def test_stage_at_and_the_checks() -> None:
    stages = [Stage("pretrain", 2), Stage("recommend", 3)]
    assert [stage_at(stages, e)[0] for e in range(5)] == [0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="set trainer.max_epochs to 5"):
        stage_at(stages, 5)
    with pytest.raises(ValueError, match="choose 'pretrain' or 'recommend'"):
        Stage("finetune", 1)
    with pytest.raises(ValueError, match="needs data.task='recommend' and no data.alternate"):
        EHRDataModule(task="pretrain", stages=[{"task": "pretrain", "epochs": 1}], synthetic_patients=50)
    model, dm, trainer, _ = _tiny_stages([{"task": "recommend", "epochs": 1, "freeze": ["encoder.nothing"]}])
    with pytest.raises(ValueError, match="stage freeze 'encoder.nothing' matches no parameter"):
        trainer.fit(model, dm)


def test_code_table_is_kept_while_the_ontology_is_frozen() -> None:
    dm = EHRDataModule(synthetic_patients=60)
    config = BertConfig(vocab_size=dm.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=19)
    adapter = OntologyAdapter(config, dm.dx_codes, dm.rx_codes)
    trained = adapter.code_table()
    assert trained.requires_grad and adapter._cache == {}  # trained: recomputed every step, through the graph
    for name, p in adapter.named_parameters():
        p.requires_grad_(not name.startswith(("dx", "rx")))
    frozen = adapter.code_table()
    assert torch.equal(frozen, trained.detach()) and adapter._codes("dx") is adapter._codes("dx")
    with torch.no_grad():
        adapter.dx.nodes.mul_(2.0)  # a change in place (an optimiser step, load_state_dict) is seen
    assert not torch.equal(adapter.code_table(), frozen)


def test_length_buckets_give_the_vectors_of_one_padded_call() -> None:
    dm = EHRDataModule(task="pretrain", synthetic_patients=80, batch_size=48)
    config = BertConfig(vocab_size=dm.vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=19)
    model = GBertRecommendTask(config, functools.partial(OntologyAdapter, dx_codes=dm.dx_codes, rx_codes=dm.rx_codes)).eval()
    batch = next(iter(dm._loader("pretrain", "train", shuffle=True)))
    with torch.no_grad():
        dx, rx = model.visit_vectors(batch.visits)
        whole = model.encoder(batch.visits).last_hidden_state[:, 0]
    lengths = batch.visits.attention_mask.sum(1)
    assert lengths.min() < lengths.max()  # the batch mixes lengths, so the buckets differ
    torch.testing.assert_close(torch.cat([dx, rx]), whole, rtol=1e-5, atol=1e-5)


class LearningRates(pl.Callback):
    """The learning rate of every training step, in order."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append((type(batch).__name__, trainer.optimizers[0].param_groups[0]["lr"]))


def test_a_stage_trains_at_a_constant_rate_or_decays_over_its_own_steps() -> None:
    stages = [{"task": "pretrain", "epochs": 2, "batch_size": 32, "constant_lr": True},
              {"task": "recommend", "epochs": 2, "batch_size": 8, "lr": 5e-4}]
    model, dm, trainer, _ = _tiny_stages(stages)
    model.scheduler_factory = functools.partial(LinearWarmupDecay, warmup_steps=0)
    lrs = LearningRates()
    trainer.callbacks.append(lrs)
    trainer.fit(model, dm)
    pre = [lr for kind, lr in lrs.lrs if kind == "GBertPretrainBatch"]
    fine = [lr for kind, lr in lrs.lrs if kind == "GBertRecommendBatch"]
    assert [kind for kind, _ in lrs.lrs] == ["GBertPretrainBatch"] * len(pre) + ["GBertRecommendBatch"] * len(fine)
    assert len(pre) > 2 and pre == [1e-3] * len(pre)  # constant through both pretraining epochs
    # fine-tuning: a fresh schedule from the stage's rate, linearly down to 0 over the stage's own steps
    n = len(fine)
    torch.testing.assert_close(torch.tensor(fine), torch.tensor([5e-4 * (n - i) / n for i in range(n)]), rtol=1e-6, atol=1e-9)


def test_a_staged_config_trains_under_the_shipped_trainer_preset(tmp_path, monkeypatch) -> None:
    """The README's command (`-c configs/trainer/cpu.yaml`: TensorBoard and CSV loggers on): the model and the
    datamodule record the same schedule (Lightning refuses a run whose two records of a key differ, which every
    staged config hit), and the run's hparams.yaml holds the YAML's stages."""
    from multibert.cli import main

    monkeypatch.chdir(tmp_path)
    stages = yaml.safe_load((CONFIGS / "tiny_stages.yaml").read_text())["data"]["init_args"]["stages"]
    main(["fit", "-c", str(CONFIGS / "tiny_stages.yaml"), "-c", str(CONFIGS.parent / "trainer" / "cpu.yaml"),
          "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
          "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"])
    (run,) = (tmp_path / "runs" / "multibert").glob("version_*")
    recorded = yaml.safe_load((run / "hparams.yaml").read_text())["stages"]
    defaults = {"batch_size": None, "lr": None, "freeze": [], "constant_lr": False}
    assert recorded == [{**defaults, **s} for s in stages]
    assert "val/prauc" in (run / "metrics.csv").read_text().splitlines()[0]
