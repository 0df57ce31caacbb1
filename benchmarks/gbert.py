"""G-BERT against its baselines on the SYNTHETIC cohort at the paper's scale (6,350 patients, 15,016 visits, 1,958
diagnosis and 145 medication codes; MIMIC-III's statistics, see datamodules/ehr/synthetic.py): the shipped recipe
and its ablations are trained with `multibert fit` (one thread), each kept at its best validation epoch, and scored
beside frequency, copy-previous-visit and logistic regression on the validation and the test patients. Prints both
tables; the last line printed is one JSON object with the rows, the wall times and the goals of issue 12:

- the recipe beats logistic regression on test Jaccard, PR-AUC and F1, each by at least 0.01;
- the paper's ordering holds on all three: G-BERT > G-BERT without pretraining (P-) > logistic regression;
- the recipe trains in under 2 hours.

    python benchmarks/gbert.py                         # recipe + P- (about 45 min on a 2-core CPU, 1 thread)
    python benchmarks/gbert.py --ablations             # + G- and G- P- (the paper's table; about 35 min more)
    python benchmarks/gbert.py --check                 # exit 1 when a goal is missed
    python benchmarks/gbert.py --smoke                 # the pipeline only: 400 patients, 3 batches per epoch (no goals)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from datamodules.ehr.datamodule import EHRDataModule
from multibert.commands.gbert_report import baseline_rows, fit_config, format_report, model_scores
from multibert.gbert.baselines import evaluate

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "gbert"
#: row name → config; the first is the recipe, the second its P- ablation
RECIPE = {"G-BERT": "recipe.yaml", "G-BERT P-": "recipe_nopretrain.yaml"}
ABLATIONS = {"G-BERT G-": "recipe_nograph.yaml", "G-BERT G- P-": "recipe_nograph_nopretrain.yaml"}
METRICS = ("jaccard", "prauc", "f1")
MARGIN = 0.01
BUDGET_S = 2 * 3600


def goals(rows: dict[str, dict], recipe_seconds: float) -> dict[str, object]:
    """Issue 12's goals from the test rows."""
    gbert, nopre, lr = rows["G-BERT"], rows["G-BERT P-"], rows["logistic regression"]
    margin = {m: round(gbert[m] - lr[m], 4) for m in METRICS}
    out = {
        "margin_over_lr": margin,
        "beats_lr_by_0.01": all(v >= MARGIN for v in margin.values()),
        "ordering_gbert_nopretrain_lr": all(gbert[m] > nopre[m] > lr[m] for m in METRICS),
        "recipe_seconds": round(recipe_seconds),
        "recipe_under_2h": recipe_seconds < BUDGET_S,
    }
    out["all_met"] = bool(out["beats_lr_by_0.01"] and out["ordering_gbert_nopretrain_lr"] and out["recipe_under_2h"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ablations", action="store_true", help="also train G- and G- P- (the paper's full table)")
    p.add_argument("--config", action="append", default=[], metavar="NAME=YAML", help="train another config as a row")
    p.add_argument("--fit_arg", action="append", default=[], help="extra `multibert fit` flag for every config")
    p.add_argument("--patients", type=int, default=6350, help="SYNTHETIC cohort size")
    p.add_argument("--smoke", action="store_true", help="400 patients, 3 training and 2 validation batches per epoch: the pipeline, no goals")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    patients = 400 if args.smoke else args.patients
    configs = {**RECIPE, **(ABLATIONS if args.ablations else {})}
    configs = {name: str(CONFIGS / file) for name, file in configs.items()}
    configs.update(dict(item.split("=", 1) for item in args.config))
    fit_args = ["--trainer.accelerator=cpu", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
                "--trainer.enable_model_summary=false", *args.fit_arg]
    if args.smoke:
        fit_args += ["--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2"]

    start = time.perf_counter()
    dm = EHRDataModule(batch_size=16, synthetic_patients=patients)
    cohort = {"patients": int(dm.table.SUBJECT_ID.nunique()), "visits": len(dm.table), "dx_codes": len(dm.dx_codes),
              "rx_codes": len(dm.rx_codes), "draw_seconds": round(time.perf_counter() - start, 1)}
    rows = {split: baseline_rows(dm, split, 0.3, 0.5, None) for split in ("val", "test")}
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="gbert-bench-") as tmp:
        for i, (name, config) in enumerate(configs.items()):
            start = time.perf_counter()
            model = fit_config(config, [f"--data.synthetic_patients={patients}"], fit_args, Path(tmp) / str(i))
            seconds[name] = time.perf_counter() - start
            for split in ("val", "test"):
                rows[split][name] = {**evaluate(*model_scores(model, dm, split)), "seconds": seconds[name]}
            print(f"{name}: trained in {seconds[name]:.0f} s; val {rows['val'][name]}", file=sys.stderr, flush=True)
    data = f"SYNTHETIC cohort ({patients} patients, seed 0; no patient data)"
    for split in ("val", "test"):
        print(format_report({"data": data, "split": split, "threshold": 0.3, "rows": rows[split]}) + "\n")
    result = {
        "benchmark": "gbert", "data": data, "device": f"cpu x{torch.get_num_threads()} threads", **cohort,
        "rows": {split: {n: {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for n, r in rs.items()}
                 for split, rs in rows.items()},
    }
    if not args.smoke:
        result["goals"] = goals(rows["test"], seconds["G-BERT"])
    print(json.dumps(result))
    if args.check and not args.smoke and not result["goals"]["all_met"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
