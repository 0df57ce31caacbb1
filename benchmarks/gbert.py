"""G-BERT benchmark on the SYNTHETIC cohort at the paper's scale (6,350 patients, ~15k visits, ~1,960 diagnosis and
145 medication codes) with the paper's model size (hidden 300, 2 layers, 4 heads, intermediate 300, GAT 4 × 75).

Measures seconds per pretraining epoch and per fine-tuning epoch, peak memory, and the metric table after a short
schedule (pretraining epochs, then fine-tuning epochs from those weights; the best validation PR-AUC epoch is
scored once on test). The last line printed is one JSON object.

    python benchmarks/gbert.py                       # CPU, 1 pretraining + 2 fine-tuning epochs
    python benchmarks/gbert.py --accelerator gpu --pretrain_epochs 3 --finetune_epochs 5

For scale: the authors' code on a 2-core CPU needs about 11 s per pretraining batch of 64 visits and about 2.2 h per
fine-tuning epoch (one patient per step).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import resource
import sys
import tempfile
import time
import warnings

import lightning.pytorch as pl
import torch

from datamodules.ehr.datamodule import EHRDataModule
from multibert.core.config import BertConfig
from multibert.core.optim import AdamW, LinearWarmupDecay
from multibert.gbert.adapter import OntologyAdapter
from multibert.gbert.task import GBertPretrainTask, GBertRecommendTask

#: the shipped G-BERT configs' optimisation (configs/gbert/*.yaml)
OPTIMISATION = dict(
    optimizer=functools.partial(AdamW, lr=5e-4, eps=1e-8, weight_decay=0.0),
    lr_scheduler=functools.partial(LinearWarmupDecay, warmup_steps=0),
)


class EpochTimer(pl.Callback):
    """Wall seconds of each training epoch, the validation that Lightning runs inside the epoch excluded."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.steps: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._step = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync(pl_module)
        self.steps.append(time.perf_counter() - self._step)

    def median_step(self) -> float:
        """Median seconds of one training step (forward, backward, optimiser), the first 2 steps excluded."""
        steps = sorted(self.steps[2:] or self.steps)
        return steps[len(steps) // 2]

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        self._start, self._val = time.perf_counter(), 0.0

    def on_validation_start(self, trainer, pl_module) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        self._val += time.perf_counter() - self._val_start

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        self.seconds.append(time.perf_counter() - self._start - self._val)

    @staticmethod
    def _sync(pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()


def trainer(args, epochs: int, root: str, timer: EpochTimer) -> pl.Trainer:
    return pl.Trainer(
        accelerator=args.accelerator, devices=1, precision=args.precision, max_epochs=epochs, logger=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer], default_root_dir=root,
        limit_train_batches=args.limit_batches, limit_val_batches=args.limit_val_batches, num_sanity_val_steps=0,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--accelerator", default="cpu")
    p.add_argument("--precision", default="32-true")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--patients", type=int, default=6350)
    p.add_argument("--pretrain_epochs", type=int, default=1)
    p.add_argument("--finetune_epochs", type=int, default=2)
    p.add_argument("--pretrain_batch", type=int, default=64, help="visits per pretraining batch (paper: 64)")
    p.add_argument("--finetune_batch", type=int, default=16, help="patients per fine-tuning batch")
    p.add_argument("--limit_batches", type=float, default=1.0, help="share of training batches per epoch (smoke runs)")
    p.add_argument("--limit_val_batches", type=float, default=1.0, help="share of validation batches (smoke runs)")
    p.add_argument("--seed", type=int, default=1203)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    pl.seed_everything(args.seed, verbose=False)
    config = BertConfig(vocab_size=1, hidden_size=300, num_hidden_layers=2, num_attention_heads=4, intermediate_size=300,
                        hidden_act="relu", hidden_dropout_prob=0.4, attention_probs_dropout_prob=0.1)
    t0 = time.perf_counter()
    pre_dm = EHRDataModule(task="pretrain", batch_size=args.pretrain_batch, synthetic_patients=args.patients, seed=args.seed)
    fine_dm = EHRDataModule(task="recommend", batch_size=args.finetune_batch, synthetic_patients=args.patients, seed=args.seed)
    data_s = time.perf_counter() - t0
    table = pre_dm.table
    cohort = {
        "patients": int(table.SUBJECT_ID.nunique()), "visits": len(table), "dx_codes": len(pre_dm.dx_codes),
        "rx_codes": len(pre_dm.rx_codes), "train_visits": len(pre_dm.dataset("pretrain", "train")),
        "train_patients_multi": len(fine_dm.dataset("recommend", "train")),
    }
    if args.accelerator == "gpu":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as root:
        pre_timer, fine_timer = EpochTimer(), EpochTimer()
        adapter = functools.partial(OntologyAdapter, dx_codes=pre_dm.dx_codes, rx_codes=pre_dm.rx_codes)
        pretrain = GBertPretrainTask(config, adapter, **OPTIMISATION)
        trainer(args, args.pretrain_epochs, root, pre_timer).fit(pretrain, pre_dm)
        model = GBertRecommendTask(config, adapter, **OPTIMISATION)
        missing = model.load_state_dict(pretrain.state_dict(), strict=False).missing_keys
        assert all(k.startswith(("medication_head", "metrics")) for k in missing), missing
        fine = trainer(args, args.finetune_epochs, root, fine_timer)
        fine.fit(model, fine_dm)
        val_best = float(fine.checkpoint_callback.best_model_score)
        test = fine.test(model, fine_dm, ckpt_path="best", verbose=False)[0]
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if args.accelerator == "gpu" else None
    result = {
        "benchmark": "gbert", "data": "SYNTHETIC cohort", "device": args.accelerator,
        "device_name": torch.cuda.get_device_name() if args.accelerator == "gpu" else f"cpu x{torch.get_num_threads()} threads",
        **cohort, "data_prep_s": round(data_s, 2),
        "pretrain_epoch_s": [round(s, 2) for s in pre_timer.seconds],
        "pretrain_batches_per_epoch": len(pre_dm.train_dataloader()),
        "pretrain_step_median_s": round(pre_timer.median_step(), 3),
        "finetune_step_median_s": round(fine_timer.median_step(), 3),
        # with --limit_batches < 1 the epoch ran only that share of its batches: the full epoch, extrapolated
        "pretrain_epoch_s_full": round(pre_timer.seconds[-1] / args.limit_batches, 1),
        "finetune_epoch_s_full": round(fine_timer.seconds[-1] / args.limit_batches, 1),
        "limit_batches": args.limit_batches,
        "finetune_epoch_s": [round(s, 2) for s in fine_timer.seconds],
        "finetune_batches_per_epoch": len(fine_dm.train_dataloader()),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_gpu_mib": None if peak_gpu is None else round(peak_gpu, 1),
        "val_best_prauc": round(val_best, 4),
        **{k: round(v, 4) for k, v in test.items()},
    }
    print("\n".join(f"{k:>28}: {v}" for k, v in result.items()), file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
