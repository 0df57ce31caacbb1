"""The SYNTHETIC MIMIC-III-like cohort against the real table's statistics, and G-BERT's baselines and report.

Tolerances are those of :data:`datamodules.ehr.stats.TARGETS` (a few percent of each target; see there). The
paper-scale cohort is drawn once per session (the datamodule caches it; about 3 s on a free core).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score

from datamodules.ehr.datamodule import EHRDataModule
from datamodules.ehr.stats import TARGETS, code_counts, cohort_stats, continuity, rank_slope, top_share
from datamodules.ehr.synthetic import generate_cohort, visit_counts
from datamodules.ehr.targets import target_visits
from multibert.commands.gbert_report import baseline_rows, format_report, model_scores
from multibert.gbert.baselines import copy_previous_scores, evaluate, frequency_scores
from multibert.gbert.ontology import OntologyTree, normalize_atc, normalize_icd9


@pytest.fixture(scope="module")
def paper_scale() -> EHRDataModule:
    """The datamodule's default: the SYNTHETIC cohort at the paper's scale (drawn once per process)."""
    return EHRDataModule(batch_size=16)


@pytest.fixture(scope="module")
def cohort(paper_scale: EHRDataModule) -> pd.DataFrame:
    return paper_scale.table


@pytest.fixture(scope="module")
def stats(cohort: pd.DataFrame) -> dict[str, float]:
    return cohort_stats(cohort)


@pytest.mark.parametrize("name", list(TARGETS))
def test_statistic_meets_the_real_table(stats: dict[str, float], name: str) -> None:
    target, tolerance = TARGETS[name]
    assert abs(stats[name] - target) <= tolerance + 1e-12, f"{name}: {stats[name]:.4f}, target {target} ± {tolerance}"


def test_labelled_synthetic_fast_and_deterministic(cohort: pd.DataFrame) -> None:
    assert cohort.attrs["synthetic"] is True and "SYNTHETIC" in cohort.attrs["note"]
    start = time.perf_counter()
    again = generate_cohort(num_patients=1000, seed=5)
    assert time.perf_counter() - start < 5.0  # about 0.8 s on one free core (the paper's scale: about 3 s)
    pd.testing.assert_frame_equal(again, generate_cohort(num_patients=1000, seed=5))
    again = generate_cohort(num_patients=300, seed=5)
    pd.testing.assert_frame_equal(again, generate_cohort(num_patients=300, seed=5))
    assert not again.equals(generate_cohort(num_patients=300, seed=6))


def test_layout_and_code_strings(cohort: pd.DataFrame) -> None:
    assert list(cohort.columns) == ["SUBJECT_ID", "HADM_ID", "ICD9_CODE", "ATC4"]
    assert cohort.HADM_ID.is_unique and cohort.SUBJECT_ID.is_monotonic_increasing
    dx = code_counts(cohort, "ICD9_CODE").index
    rx = code_counts(cohort, "ATC4").index
    assert all(normalize_icd9(c) == c for c in dx) and all(len(c) == 4 and normalize_atc(c) == c for c in rx)
    assert all(len(set(v)) == len(v) for v in cohort.ICD9_CODE) and all(len(set(v)) == len(v) for v in cohort.ATC4)
    assert sum(c.startswith("V") for c in dx) >= 50 and sum(c.startswith("E") for c in dx) >= 50
    tree = OntologyTree.build(list(dx), "icd9")  # some codes hang outside the known sections, as in real data
    assert 1 <= tree.num_unplaced <= 20


def test_visit_histogram_is_exact_and_scales() -> None:
    counts = visit_counts(6350, np.random.default_rng(0))
    assert np.bincount(counts)[1:7].tolist() == [920, 3784, 945, 373, 158, 69]
    assert (counts >= 7).sum() == 101 and counts.max() == 29 and abs(counts.sum() - 15016) <= 10
    small = visit_counts(635, np.random.default_rng(0))
    assert len(small) == 635 and abs((small == 1).sum() - 92) <= 1


def test_ontology_structure_carries_signal(stats: dict[str, float]) -> None:
    # diagnoses of one ICD-9 category co-occur more than their frequencies alone would make them
    assert stats["dx_same_category_lift"] > 1.2
    # a rare code's medications look like its category siblings' medications, not like another category's
    assert stats["rare_dx_codes"] >= 300
    assert stats["rare_dx_sibling_rx_corr"] > stats["rare_dx_other_rx_corr"] + 0.1


def test_statistics_hand_computed() -> None:
    df = pd.DataFrame({
        "SUBJECT_ID": [1, 1, 1, 2],
        "HADM_ID": [10, 11, 12, 20],
        "ICD9_CODE": [["A1", "A2"], ["A1"], ["A1", "B1", "B2"], ["A2"]],
        "ATC4": [["X", "Y"], ["X"], ["X", "Z"], ["Y"]],
    })
    counts = code_counts(df, "ICD9_CODE")
    assert counts.index.tolist() == ["A1", "A2", "B1", "B2"] and counts.tolist() == [3, 2, 1, 1]
    assert top_share(counts, 1) == pytest.approx(3 / 7)
    # pairs (visit 10 → 11) and (11 → 12): shares 1/1 and 1/2; Jaccards 1/2 and 1/2
    assert continuity(df, "ATC4") == pytest.approx({"share": 0.75, "jaccard": 0.5})
    assert rank_slope(pd.Series([8.0, 4.0, 8 / 3, 2.0]), 1, 4) == pytest.approx(-1.0)


def test_baselines_read_only_the_past_and_score_ties_as_sklearn() -> None:
    df = generate_cohort(num_patients=200, seed=1)
    dx_codes, rx_codes = sorted({c for v in df.ICD9_CODE for c in v}), sorted({c for v in df.ATC4 for c in v})
    patients = set(df.SUBJECT_ID)
    before = target_visits(df, patients, dx_codes, rx_codes)
    # change the last visit of every patient's medications: no feature of any target visit may move
    changed = df.copy()
    last = changed.groupby("SUBJECT_ID").tail(1).index
    changed.loc[last, "ATC4"] = pd.Series([[rx_codes[0]]] * len(last), index=last)
    after = target_visits(changed, patients, dx_codes, rx_codes)
    for name in ("current_dx", "past_dx", "past_rx", "previous_rx"):
        assert (getattr(before, name) != getattr(after, name)).nnz == 0, name
    # copy-previous scores tie at 1 and 0; the project's average precision must equal sklearn's on every row
    scores = copy_previous_scores(before)
    ours = evaluate(scores, before.labels)["prauc"]
    rows = [average_precision_score(y, s) for y, s in zip(before.labels, scores, strict=True) if y.any()]
    assert ours == pytest.approx(np.mean(rows), abs=1e-6)
    assert frequency_scores(before, before)[0] == pytest.approx(before.labels.mean(0))
    # F1 uses precision 0 when nothing is predicted; the DDI rate counts interacting predicted pairs
    assert evaluate(np.zeros((1, 3)), np.array([[1.0, 0, 0]]))["f1"] == 0.0
    ddi = torch.tensor([[0.0, 1, 0], [1, 0, 0], [0, 0, 0]])
    assert evaluate(np.array([[0.9, 0.8, 0.7]]), np.array([[1.0, 0, 0]]), ddi=ddi)["ddi_rate"] == pytest.approx(1 / 3)


def test_baselines_rank_as_on_mimic(paper_scale: EHRDataModule) -> None:
    """As on the real table: logistic regression > copy previous > frequency on Jaccard; copy has the lowest PR-AUC;
    and the values are MIMIC-III's (test split: LR 0.439 / 0.670 / 0.600, 1,220 target visits)."""
    rows = baseline_rows(paper_scale, "test", 0.3, 0.5, None)
    lr, copy, freq = (rows[k] for k in ("logistic regression", "copy previous visit", "frequency"))
    assert lr["jaccard"] > copy["jaccard"] > freq["jaccard"] - 0.005  # copy and frequency are 0.03 apart on MIMIC-III
    assert lr["prauc"] > freq["prauc"] > copy["prauc"] + 0.15
    assert 0.40 <= lr["jaccard"] <= 0.47 and 0.62 <= lr["prauc"] <= 0.70 and 0.57 <= lr["f1"] <= 0.63
    assert 1300 <= lr["visits"] <= 1600
    assert "SYNTHETIC" in format_report({"data": "SYNTHETIC cohort", "split": "test", "threshold": 0.3, "rows": rows})


def test_report_scores_a_model_as_multibert_test_does(tmp_path) -> None:
    """The report's G-BERT row (one scoring function for every row) equals the task's own test metrics."""
    import functools

    import lightning.pytorch as pl

    from multibert.core.config import BertConfig
    from multibert.gbert.adapter import OntologyAdapter
    from multibert.gbert.task import GBertRecommendTask

    dm = EHRDataModule(synthetic_patients=150, batch_size=8)
    config = BertConfig(vocab_size=dm.vocab_size, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=29)
    model = GBertRecommendTask(config, functools.partial(OntologyAdapter, dx_codes=dm.dx_codes, rx_codes=dm.rx_codes))
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.fit(model, dm)
    ours = evaluate(*model_scores(model, dm, "test"))
    theirs = trainer.test(model, dm, verbose=False)[0]
    for name in ("jaccard", "prauc", "f1"):
        assert ours[name] == pytest.approx(theirs[f"test/{name}"], abs=1e-5), name
    assert ours["visits"] == len(target_visits(dm.table, dm.splits["test"], dm.dx_codes, dm.rx_codes))
