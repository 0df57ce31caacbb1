"""Distillation benchmark: how much smaller and faster the DistilBERT and TinyBERT shapes are than BERT-base on this
CPU, what the distillation outputs cost the backbone, and how much of a teacher's quality a distilled student keeps
on the shipped WordNet definitions task (45 classes).

    python benchmarks/distill.py                      # everything, a few minutes on 2 cores
    python benchmarks/distill.py --skip-quality       # sizes and speeds only (~1 minute)

Part 1 (one process, float32, ``--threads`` torch threads, inference under ``torch.inference_mode``, batch ×
sequence length as given): parameters and encoder forward time (embeddings + backbone + pooler, random token ids,
no padding) of BERT-base, DistilBERT (6 × 768, one token-type row, no pooler) and TinyBERT-4 (4 × 312, FFN 1200,
12 heads). The models run interleaved, ``--repeats`` times each, and the median counts, so load from other
processes hits all of them alike. The same part times the BERT-base backbone with and without
``output_hidden_states`` + ``output_attention_scores`` and against ``transformers``' ``BertModel`` (SDPA) as the
reference for the normal path.

Part 2 (``multibert fit`` in-process, in a temporary folder): a small teacher is fine-tuned on WordNet, a narrower
student is distilled from it with TinyBERT's terms (intermediate + prediction layer in one stage), and the same
student is trained on the labels alone; all three are scored on the full validation split.

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from multibert.core.config import BertConfig  # noqa: E402
from multibert.core.encoder import Encoder  # noqa: E402
from multibert.core.text_adapter import TextAdapter  # noqa: E402

SHAPES = {
    "bert-base": (BertConfig.from_name("base"), True),
    "distilbert": (BertConfig.from_name("base", num_hidden_layers=6, type_vocab_size=1), False),
    "tinybert-4": (BertConfig(hidden_size=312, num_hidden_layers=4, num_attention_heads=12, intermediate_size=1200), True),
}
#: what the papers report against BERT-base (parameters ×, inference speed ×)
PAPER = {"distilbert": (110 / 66, 1.6), "tinybert-4": (7.5, 9.4)}


def encoder_macs_per_token(config: BertConfig, seq: int) -> int:
    """Multiply-adds per token of the transformer blocks: q, k, v, output and FFN projections plus q·kᵀ and the
    weighted sum of values over ``seq`` keys (embeddings and pooler are negligible)."""
    H, F = config.hidden_size, config.intermediate_size
    return config.num_hidden_layers * (4 * H * H + 2 * H * F + 2 * seq * H)


def speed(batch: int, seq: int, repeats: int) -> dict:
    from multibert.core.batch import TokenBatch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (batch, seq), generator=g)
    data = TokenBatch(ids, torch.ones_like(ids), None)
    models = {}
    for name, (config, pooler) in SHAPES.items():
        config = BertConfig(**{**config.__dict__, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
        models[name] = Encoder(config, TextAdapter(config), add_pooler=pooler).eval()
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for m in models.values():
            m(data)  # warm-up
        for _ in range(repeats):  # interleaved: a burst of load elsewhere hits every model alike
            for name, m in models.items():
                t = time.perf_counter()
                m(data)
                times[name].append(time.perf_counter() - t)
    median = {name: statistics.median(v) for name, v in times.items()}
    return {"params": params, "seconds": median}


def backbone_paths(batch: int, seq: int, repeats: int) -> dict:
    """BERT-base (embeddings + backbone): the normal path vs with the distillation outputs vs transformers'
    ``BertModel`` with SDPA attention, on the same padded batch."""
    from transformers import BertConfig as HFConfig
    from transformers import BertModel

    from multibert.core.batch import TokenBatch

    config = BertConfig.from_name("base", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ours = Encoder(config, TextAdapter(config), add_pooler=False).eval()
    hf = BertModel(HFConfig(**{**config.to_hf_dict(), "attn_implementation": "sdpa"}), add_pooling_layer=False).eval()
    ids = torch.randint(1000, 30000, (batch, seq), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[0, seq // 2 :] = 0  # some padding, so the masked attention path runs
    data = TokenBatch(ids, mask, None)
    calls = {
        "normal": lambda: ours(data),
        "distill_outputs": lambda: ours(data, output_hidden_states=True, output_attention_scores=True),
        "transformers": lambda: hf(input_ids=ids, attention_mask=mask),
    }
    results: dict[str, list[float]] = {name: [] for name in calls}
    with torch.inference_mode():
        for fn in calls.values():
            fn()
        for _ in range(repeats):
            for name, fn in calls.items():
                t = time.perf_counter()
                fn()
                results[name].append(time.perf_counter() - t)
    return {name: statistics.median(v) for name, v in results.items()}


# ----------------------------------------------------------------------------------------------- quality
def _fit(args: list[str]) -> None:
    from multibert.cli import main

    argv, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI warns when args and a command line are both present
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            main(["fit", *args, "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"])
    finally:
        sys.argv = argv


def _last(path: Path, key: str) -> float:
    rows = [r for r in csv.DictReader(open(path)) if r.get(key)]
    return float(rows[-1][key])


def quality(steps: int, workdir: Path) -> dict:
    import yaml

    wordnet = ROOT / "datamodules" / "data" / "wordnet"
    data = {
        "class_path": "datamodules.finetune.labels.LabelledTextDataModule",
        "init_args": {
            "train_file": str(wordnet / "senses_train.jsonl"),
            "val_file": str(wordnet / "senses_val.jsonl"),
            "train_vocab_size": 4000,
            "max_seq_length": 64,
            "batch_size": 32,
        },
    }
    teacher_cfg = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512,
                       max_position_embeddings=64, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    student_cfg = dict(teacher_cfg, hidden_size=64, num_hidden_layers=2, intermediate_size=256)
    finetune = "multibert.finetune.classification.SequenceClassificationTask"
    os.chdir(workdir)

    def run(name: str, class_path: str, init_args: dict) -> Path:
        logger = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": name, "name": "csv"}}
        trainer = {"max_steps": steps, "val_check_interval": steps, "check_val_every_n_epoch": None,
                   "log_every_n_steps": 10, "default_root_dir": name,
                   "logger": [logger]}
        optimizer = {"class_path": "multibert.core.optim.AdamW", "init_args": {"lr": 1e-3}}
        schedule = {"class_path": "multibert.core.optim.LinearWarmupDecay", "init_args": {"warmup_steps": 0.1}}
        model = {"class_path": class_path, "init_args": {"optimizer": optimizer, "lr_scheduler": schedule, **init_args}}
        run_config = {"seed_everything": 1, "model": model, "data": data, "trainer": trainer}
        Path(f"{name}.yaml").write_text(yaml.safe_dump(run_config))
        t = time.perf_counter()
        _fit(["-c", f"{name}.yaml"])
        runs[name] = {"seconds": round(time.perf_counter() - t, 1)}
        return next(Path(name).rglob("metrics.csv"))

    runs: dict[str, dict] = {}
    runs_acc = {}
    runs_acc["teacher"] = _last(run("teacher", finetune, {"config": teacher_cfg}), "val/acc")
    runs_acc["student_alone"] = _last(run("student_alone", finetune, {"config": student_cfg}), "val/acc")
    teacher_ckpt = sorted(Path("teacher").rglob("*.ckpt"))[-1]
    metrics = run("student_distilled", "multibert.distill.task.DistillationTask", {
        "config": student_cfg, "teacher_from": str(teacher_ckpt), "prediction": "classification", "temperature": 1.0,
        "alpha_embedding": 1.0, "alpha_attention": 1.0, "alpha_hidden": 1.0, "alpha_prediction": 1.0,
        "betas": [0.9, 0.999],
    })
    runs_acc["student_distilled"] = _last(metrics, "val/student_acc")
    runs_acc["teacher_in_distillation_run"] = _last(metrics, "val/teacher_acc")
    for name, acc in runs_acc.items():
        runs.setdefault(name, {})["val_acc"] = acc
    return {
        "task": "WordNet definitions -> 45 lexicographer classes (senses_*.jsonl), full validation split",
        "steps": steps,
        "teacher_shape": f"{teacher_cfg['num_hidden_layers']} x {teacher_cfg['hidden_size']}",
        "student_shape": f"{student_cfg['num_hidden_layers']} x {student_cfg['hidden_size']}",
        "runs": runs,
        "share_distilled": runs_acc["student_distilled"] / runs_acc["teacher"],
        "share_alone": runs_acc["student_alone"] / runs_acc["teacher"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quality-steps", type=int, default=600)
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    sp = speed(args.batch, args.seq, args.repeats)
    bb = backbone_paths(args.batch, args.seq, args.repeats)
    base_p, base_t = sp["params"]["bert-base"], sp["seconds"]["bert-base"]
    print(f"CPU, {args.threads} thread(s), float32, batch {args.batch} × {args.seq} tokens, median of {args.repeats}")
    header = ("model", "params (M)", "smaller ×", "forward (s)", "faster ×", "FLOPs ×", "paper ×/×")
    print(f"{header[0]:<12}" + "".join(f"{h:>{w}}" for h, w in zip(header[1:], (12, 11, 13, 10, 9, 12))))
    shapes = {}
    base_macs = encoder_macs_per_token(SHAPES["bert-base"][0], args.seq)
    for name, (config, _) in SHAPES.items():
        p, t = sp["params"][name], sp["seconds"][name]
        flops = base_macs / encoder_macs_per_token(config, args.seq)
        paper = PAPER.get(name)
        shapes[name] = {"params": p, "seconds": t, "param_ratio": base_p / p, "speedup": base_t / t, "flop_ratio": flops}
        ref = f"{paper[0]:.1f}/{paper[1]:.1f}" if paper else "-"
        print(f"{name:<12}{p / 1e6:>12.1f}{base_p / p:>11.2f}{t:>13.3f}{base_t / t:>10.2f}{flops:>9.2f}{ref:>12}")
    print(
        f"BERT-base encoder: normal path {bb['normal']:.3f} s, with hidden states + attention scores "
        f"{bb['distill_outputs']:.3f} s ({bb['distill_outputs'] / bb['normal']:.2f}×), transformers BertModel (SDPA) "
        f"{bb['transformers']:.3f} s (ours/theirs {bb['normal'] / bb['transformers']:.2f})"
    )
    result = {
        "device": "cpu", "threads": args.threads, "batch": args.batch, "seq": args.seq, "shapes": shapes,
        "backbone_seconds": bb,
        "distill_outputs_overhead": bb["distill_outputs"] / bb["normal"],
        "normal_path_vs_transformers": bb["normal"] / bb["transformers"],
    }
    if not args.skip_quality:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ.setdefault("MULTIBERT_CACHE", str(Path(tmp) / "cache"))
            q = quality(args.quality_steps, Path(tmp))
            os.chdir(ROOT)
        print(f"quality: {q['task']}; {q['steps']} steps per run")
        print(f"{'run':<30}{'shape':>10}{'val acc':>9}{'share':>8}{'time (s)':>10}")
        teacher_acc = q["runs"]["teacher"]["val_acc"]
        for name, shape in (("teacher", q["teacher_shape"]), ("student_alone", q["student_shape"]),
                            ("student_distilled", q["student_shape"])):
            r = q["runs"][name]
            print(f"{name:<30}{shape:>10}{r['val_acc']:>9.3f}{r['val_acc'] / teacher_acc:>8.2f}{r['seconds']:>10.0f}")
        result["quality"] = q
    print(json.dumps(result))


if __name__ == "__main__":
    main()
