"""``multibert gbert-report``: G-BERT beside the simple baselines, on one admission table, in the paper's table.

Every row scores the same target visits (each patient's 2nd and later visits, of the validation or test patients)
with the same functions (:func:`multibert.gbert.baselines.evaluate`): Jaccard, PR-AUC and F1 at the threshold, the
DDI rate when a DDI file is given, and the number of target visits. Rows:

- the baselines of :mod:`multibert.gbert.baselines` (frequency, copy previous visit, logistic regression), fitted on
  the training patients;
- G-BERT checkpoints (``--checkpoints '{"G-BERT": "runs/.../best.ckpt"}'``), scored as they are;
- G-BERT configs trained here (``--fit '{"G-BERT": "configs/gbert/recipe.yaml", "G-BERT P-": ...}'``): each is
  trained with ``multibert fit`` on the same data, its best validation epoch (``val/prauc``) is kept and scored.
  The paper's ablations are configs: ``recipe_nopretrain.yaml`` (P-), ``recipe_nograph.yaml`` (G-) and
  ``recipe_nograph_nopretrain.yaml`` (G- P-).

Without ``--path`` the data is the SYNTHETIC cohort (:mod:`datamodules.ehr.synthetic`), and the table says so.

    multibert gbert-report                                        # baselines on the SYNTHETIC cohort, test split
    multibert gbert-report --path visits.parquet --split val --stats true
    multibert gbert-report --path visits.parquet --fit '{"G-BERT": "configs/gbert/recipe.yaml"}'
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch

from datamodules.ehr.datamodule import EHRDataModule
from datamodules.ehr.stats import TARGETS, cohort_stats
from datamodules.ehr.targets import target_visits
from multibert.gbert import baselines
from multibert.gbert.ddi import load_ddi
from multibert.gbert.task import GBertRecommendTask

log = logging.getLogger(__name__)

#: The paper's rows (Shang et al., 2019, Table 3): MIMIC-III's test patients, another table than the one scored here,
#: with code that leaks targets (see the README); shown for scale only.
PAPER = {"G-BERT, paper (MIMIC-III)": (0.457, 0.696, 0.615), "G-BERT P-, paper (MIMIC-III)": (0.424, 0.670, 0.584)}


def baseline_rows(dm: EHRDataModule, split: str, threshold: float, C: float, ddi: torch.Tensor | None) -> dict[str, dict]:
    """The three baselines, fitted on the training patients and scored on ``split``."""
    train = target_visits(dm.table, dm.splits["train"], dm.dx_codes, dm.rx_codes)
    scored = target_visits(dm.table, dm.splits[split], dm.dx_codes, dm.rx_codes)
    rows = {}
    for name, score in (
        ("frequency", lambda: baselines.frequency_scores(train, scored)),
        ("copy previous visit", lambda: baselines.copy_previous_scores(scored)),
        ("logistic regression", lambda: baselines.logistic_scores(train, scored, C)),
    ):
        start = time.perf_counter()
        rows[name] = {**baselines.evaluate(score(), scored.labels, threshold, ddi), "seconds": time.perf_counter() - start}
    return rows


@torch.no_grad()
def model_scores(model: GBertRecommendTask, dm: EHRDataModule, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and true medication sets of every target visit of ``split`` (model in eval mode)."""
    for name in ("dx_codes", "rx_codes"):
        if list(getattr(model, name)) != list(getattr(dm, name)):
            raise ValueError(f"the model's {name} differ from this table's: score a model on the table it was trained on")
    model.eval()
    loader = dm.val_dataloader() if split == "val" else dm.test_dataloader()
    loader = loader[0] if isinstance(loader, list) else loader
    scores, labels = [], []
    for batch in loader:
        scores.append(torch.sigmoid(model(batch).float()))
        labels.append(batch.rx_labels)
    return torch.cat(scores).numpy(), torch.cat(labels).numpy()


def fit_config(config: str, data_args: list[str], fit_args: list[str], work_dir: Path) -> GBertRecommendTask:
    """Train one config with ``multibert fit`` on the report's data; return its best validation epoch's model."""
    from multibert.cli import MultiBertCLI  # the command layer's entry point (imports Lightning's CLI machinery)

    best = [
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint", f"--trainer.callbacks.dirpath={work_dir}",
        "--trainer.callbacks.monitor=val/prauc", "--trainer.callbacks.mode=max",
        "--trainer.callbacks.filename=best-{epoch}",
    ]
    cli = MultiBertCLI(
        pl.LightningModule, pl.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False,
        args=["-c", config, *data_args, *fit_args, *best], save_config_callback=None,
    )
    if not isinstance(cli.model, GBertRecommendTask):
        raise ValueError(f"{config} trains a {type(cli.model).__name__}; the report scores GBertRecommendTask configs")
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    (checkpoint,) = [c for c in cli.trainer.checkpoint_callbacks if c.dirpath == str(work_dir)]
    return GBertRecommendTask.load_from_checkpoint(checkpoint.best_model_path, map_location="cpu", weights_only=True)


def gbert_report(
    path: str | None = None,
    allow_pickle: bool = False,
    split: Literal["val", "test"] = "test",
    ddi_path: str | None = None,
    checkpoints: dict[str, str] | None = None,
    fit: dict[str, str] | None = None,
    fit_args: list[str] | None = None,
    threshold: float = 0.3,
    C: float = 0.5,
    seed: int = 1203,
    split_dir: str | None = None,
    synthetic_patients: int = 6350,
    synthetic_seed: int = 0,
    stats: bool = False,
    output: str | None = None,
) -> dict[str, Any]:
    """Print G-BERT beside the baselines on one admission table (see the module docstring).

    Args:
        path: admission table (``.parquet``, ``.jsonl``, ``.pkl`` with ``allow_pickle``); none: the SYNTHETIC cohort.
        allow_pickle: read a trusted ``.pkl`` table (unpickling runs code from the file).
        split: the patients scored: ``test`` (once per final model) or ``val`` (for tuning).
        ddi_path: drug-drug-interaction file: adds the DDI rate column.
        checkpoints: row name → a G-BERT recommendation checkpoint to score.
        fit: row name → a G-BERT config to train on this data first (its best ``val/prauc`` epoch is scored).
        fit_args: more ``multibert fit`` flags for every ``fit`` config (e.g. ``--trainer.max_epochs=2``).
        threshold: score at which a medication is recommended (the paper: 0.3).
        C: inverse L2 strength of the logistic regression.
        seed: seed of the patient split when the table has no split files (the datamodule's default).
        split_dir: folder with the split files; default: the table's folder.
        synthetic_patients, synthetic_seed: the SYNTHETIC cohort, without ``path``.
        stats: also print the table's statistics beside the real MIMIC-III table's.
        output: also write the rows as JSON to this file.

    Returns:
        ``{"data": ..., "split": ..., "rows": {name: {"jaccard", "prauc", "f1", ["ddi_rate"], "visits", "seconds"}}}``.
    """
    dm = EHRDataModule(path=path, allow_pickle=allow_pickle, seed=seed, split_dir=split_dir, batch_size=16,
                       synthetic_patients=synthetic_patients, synthetic_seed=synthetic_seed)
    source = path or f"SYNTHETIC cohort ({synthetic_patients} patients, seed {synthetic_seed}; no patient data)"
    ddi = load_ddi(ddi_path, dm.rx_codes) if ddi_path else None
    rows = baseline_rows(dm, split, threshold, C, ddi)
    models = dict(checkpoints or {})
    data_args = [f"--data.{k}={v}" for k, v in (("path", path), ("allow_pickle", allow_pickle), ("seed", seed),
                 ("split_dir", split_dir), ("synthetic_patients", synthetic_patients),
                 ("synthetic_seed", synthetic_seed)) if v is not None]
    with tempfile.TemporaryDirectory(prefix="gbert-report-") as tmp:
        for i, (name, config) in enumerate((fit or {}).items()):
            start = time.perf_counter()
            model = fit_config(config, data_args, list(fit_args or []), Path(tmp) / str(i))
            models[name] = (model, time.perf_counter() - start)
        for name, model in models.items():
            fitted = isinstance(model, tuple)
            model, seconds = model if fitted else (GBertRecommendTask.load_from_checkpoint(model, map_location="cpu", weights_only=True), 0.0)
            start = time.perf_counter()
            scores, labels = model_scores(model, dm, split)
            rows[name] = {**baselines.evaluate(scores, labels, threshold, ddi), "seconds": seconds + time.perf_counter() - start}
    report = {"data": source, "split": split, "threshold": threshold, "rows": rows}
    if stats:
        report["stats"] = cohort_stats(dm.table)
    print(format_report(report))
    if output:
        Path(output).write_text(json.dumps(report, indent=1))
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as a Markdown table (and the statistics table when present)."""
    rows = report["rows"]
    ddi = any("ddi_rate" in r for r in rows.values())
    lines = [f"# {report['data']}: {report['split']} split, threshold {report['threshold']}", "",
             "| model | Jaccard | PR-AUC | F1 |" + (" DDI rate |" if ddi else "") + " target visits | seconds |",
             "|---|---|---|---|" + ("---|" if ddi else "") + "---|---|"]
    for name, r in rows.items():
        cells = [f"{r['jaccard']:.4f}", f"{r['prauc']:.4f}", f"{r['f1']:.4f}"] + ([f"{r.get('ddi_rate', float('nan')):.4f}"] if ddi else [])
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['visits']} | {r['seconds']:.0f} |")
    lines += [f"| {name} | {j:.3f} | {p:.3f} | {f:.3f} |" + (" |" if ddi else "") + " 1,220 | |"
              for name, (j, p, f) in PAPER.items()]
    if "stats" in report:
        lines += ["", "| statistic | MIMIC-III | ± | this table |", "|---|---|---|---|"]
        for name, value in report["stats"].items():
            target, tol = TARGETS.get(name, ("", ""))
            lines.append(f"| {name} | {target} | {tol} | {value if isinstance(value, int) else round(value, 4)} |")
    return "\n".join(lines)
