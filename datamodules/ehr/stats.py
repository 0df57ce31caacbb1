"""Aggregate statistics of an EHR admission table in the G-BERT / GAMENet layout (one row per admission, visits of
a patient in chronological order; columns ``SUBJECT_ID``, ``HADM_ID``, ``ICD9_CODE``, ``ATC4``).

Pure functions of the table, so the same code reports a real MIMIC-III-derived table and the SYNTHETIC cohort of
:mod:`datamodules.ehr.synthetic` side by side. :data:`TARGETS` holds the statistics of the real table that G-BERT (Shang et
al., 2019, arXiv 1906.00346) and GAMENet use, as issue 12 lists them.

Definitions:
    - codes per visit: the length of a visit's (de-duplicated) code list; p90 is numpy's linear-interpolated 90th
      percentile.
    - top-k share: occurrences of the k most frequent codes / all occurrences.
    - rank-frequency slope: least-squares slope of log(count) on log(rank) over ranks ``lo .. hi`` (1-based).
    - continuity: over every pair of consecutive visits (t-1, t) of a patient, the mean of
      ``|A_t ∩ A_{t-1}| / |A_t|`` ("share of a visit's codes that were also at the previous visit") and the mean
      Jaccard ``|A_t ∩ A_{t-1}| / |A_t ∪ A_{t-1}|``.
    - sibling signal: for each rare diagnosis (3-30 occurrences), the correlation between the medication lift
      (mean medication multi-hot minus the table's mean) of the visits that carry it and the lift of the visits
      that carry another code of its ICD-9 category; averaged, and beside it the same against a code of a random
      other category. "Same" well above "other" means that a rare code's medication signal can be read from its
      ontology neighbours.
    - same-category lift: among pairs of distinct diagnoses in one visit, the share that share a 3-character ICD-9
      category, divided by the share expected if the visit's codes were drawn independently with the table's code
      frequencies. Above 1 means that diagnoses of one category co-occur.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np
import pandas as pd

from datamodules.ehr.tables import DX, RX
from multibert.gbert.ontology import icd9_category, icd9_path

#: Statistics of the real table (issue 12, item 2) with the tolerance the synthetic cohort is held to.
#: ``(target, tolerance)``: a statistic passes when ``|value - target| <= tolerance``. Tolerances are a few percent
#: of the target (the visit histogram is met exactly by construction): every generator seed tried (0-4) passes,
#: the project's previous synthetic cohort fails most of them. Two are wider on purpose: the largest medication
#: list is a noisy extreme (±6), and medication continuity and consecutive Jaccard (±0.025) because the real pair
#: (0.55, 0.37) does not fit the real copy-previous baseline (Jaccard 0.396 on the test visits, i.e. the same
#: per-pair Jaccard on a subset): their exact definition in the source is unknown, and the generator sits between
#: the two (≈ 0.565, 0.387).
TARGETS: dict[str, tuple[float, float]] = {
    "patients": (6350, 0),
    "visits": (15016, 150),
    "visits_per_patient_mean": (2.37, 0.03),
    "patients_1_visit": (920, 10),
    "patients_2_visits": (3784, 10),
    "patients_3_visits": (945, 10),
    "patients_4_visits": (373, 10),
    "patients_5_visits": (158, 10),
    "patients_6_visits": (69, 10),
    "patients_7plus_visits": (100, 10),
    "max_visits": (29, 0),
    "dx_per_visit_mean": (13.6, 0.5),
    "dx_per_visit_median": (13, 1),
    "dx_per_visit_p90": (23, 1.5),
    "dx_per_visit_max": (39, 0),
    "rx_per_visit_mean": (13.9, 0.5),
    "rx_per_visit_median": (14, 1),
    "rx_per_visit_p90": (21, 1.5),
    "rx_per_visit_max": (36, 6),
    "dx_distinct": (1958, 20),
    "dx_top10_share": (0.166, 0.015),
    "dx_top100_share": (0.52, 0.02),
    "dx_rank_slope_1_200": (-0.74, 0.05),
    "rx_distinct": (145, 0),
    "rx_top10_share": (0.44, 0.02),
    "rx_top100_share": (0.996, 0.003),
    "rx_continuity": (0.55, 0.025),
    "rx_consecutive_jaccard": (0.37, 0.025),
    "dx_continuity": (0.32, 0.02),
}


def visits_per_patient(df: pd.DataFrame) -> pd.Series:
    """Number of admissions of each patient (indexed by SUBJECT_ID)."""
    return df.groupby("SUBJECT_ID", sort=False).size()


def visit_histogram(df: pd.DataFrame, top: int = 7) -> dict[str, int]:
    """Patients with 1, 2, ..., ``top - 1`` visits and with ``top`` or more (``"7+"``), plus the maximum."""
    counts = visits_per_patient(df)
    out = {str(k): int((counts == k).sum()) for k in range(1, top)}
    out[f"{top}+"] = int((counts >= top).sum())
    out["max"] = int(counts.max())
    return out


def codes_per_visit(df: pd.DataFrame, column: str) -> dict[str, float]:
    """Mean, median, 90th percentile and maximum of the number of codes per visit."""
    n = df[column].map(len).to_numpy()
    return {
        "mean": float(n.mean()), "median": float(np.median(n)), "p90": float(np.percentile(n, 90)), "max": int(n.max()),
    }


def code_counts(df: pd.DataFrame, column: str) -> pd.Series:
    """Occurrences of each code over all visits, most frequent first (ties by code, so the order is stable)."""
    counts = Counter(c for codes in df[column] for c in codes)
    s = pd.Series(counts, dtype="int64")
    return s.iloc[np.lexsort((s.index.to_numpy(), -s.to_numpy()))]


def top_share(counts: pd.Series, k: int) -> float:
    """Share of all occurrences taken by the ``k`` most frequent codes (``counts`` sorted descending)."""
    return float(counts.iloc[:k].sum() / counts.sum())


def rank_slope(counts: pd.Series, lo: int = 1, hi: int = 200) -> float:
    """Least-squares slope of log(count) on log(rank) over ranks ``lo..hi`` (``counts`` sorted descending)."""
    y = np.log(counts.iloc[lo - 1 : hi].to_numpy(dtype=float))
    x = np.log(np.arange(lo, lo + len(y), dtype=float))
    return float(np.polyfit(x, y, 1)[0])


def consecutive_pairs(df: pd.DataFrame, column: str) -> Iterable[tuple[set[str], set[str]]]:
    """(previous visit's codes, this visit's codes) for every visit after a patient's first."""
    subjects = df["SUBJECT_ID"].to_numpy()
    codes = [set(v) for v in df[column]]
    for i in range(1, len(codes)):
        if subjects[i] == subjects[i - 1]:
            yield codes[i - 1], codes[i]


def continuity(df: pd.DataFrame, column: str) -> dict[str, float]:
    """Mean share of a visit's codes also at the previous visit, and mean Jaccard of consecutive code sets."""
    share, jac = [], []
    for prev, cur in consecutive_pairs(df, column):
        inter = len(prev & cur)
        share.append(inter / len(cur) if cur else 0.0)
        union = len(prev | cur)
        jac.append(inter / union if union else 0.0)
    return {"share": float(np.mean(share)), "jaccard": float(np.mean(jac))}


def same_category_lift(df: pd.DataFrame) -> float:
    """How much more often two diagnoses of one visit share an ICD-9 category than independent draws would."""
    same = pairs = 0
    for codes in df[DX]:
        cats = Counter(icd9_category(c) for c in codes)
        n = len(codes)
        pairs += n * (n - 1) // 2
        same += sum(m * (m - 1) // 2 for m in cats.values())
    counts = code_counts(df, DX)
    p = counts / counts.sum()
    by_cat = p.groupby(p.index.map(icd9_category)).sum()
    expected = float((by_cat**2).sum() - (p**2).sum()) / float(1 - (p**2).sum())
    return (same / pairs) / expected


def sibling_signal(df: pd.DataFrame, lo: int = 3, hi: int = 30, seed: int = 0) -> dict[str, float]:
    """Mean correlation of a rare code's medication lift with its category siblings' and with another category's."""
    rx_codes = sorted({c for v in df[RX] for c in v})
    rx_index = {c: i for i, c in enumerate(rx_codes)}
    R = np.zeros((len(df), len(rx_codes)))
    for n, meds in enumerate(df[RX]):
        R[n, [rx_index[c] for c in meds]] = 1.0
    base = R.mean(0)
    visits_of: dict[str, list[int]] = {}
    for n, codes in enumerate(df[DX]):
        for c in codes:
            visits_of.setdefault(c, []).append(n)
    by_category: dict[str, set[int]] = {}
    for c, rows in visits_of.items():
        by_category.setdefault(icd9_category(c), set()).update(rows)
    categories = sorted(by_category)
    rng = np.random.default_rng(seed)

    def lift(rows) -> np.ndarray:
        return R[sorted(rows)].mean(0) - base

    same, other = [], []
    for c in sorted(visits_of):
        rows = set(visits_of[c])
        siblings = by_category[icd9_category(c)] - rows
        if not lo <= len(rows) <= hi or len(siblings) < 20:
            continue
        elsewhere = by_category[categories[rng.integers(len(categories))]] - rows
        if len(elsewhere) < 20:
            continue
        own = lift(rows)
        same.append(np.corrcoef(own, lift(siblings))[0, 1])
        other.append(np.corrcoef(own, lift(elsewhere))[0, 1])
    return {"same": float(np.nanmean(same)), "other": float(np.nanmean(other)), "codes": len(same)}


def code_kinds(df: pd.DataFrame) -> dict[str, int]:
    """Distinct diagnosis codes that are V codes, E codes, and unknown to the project's ICD-9 tree."""
    codes = set(code_counts(df, DX).index)
    return {
        "V": sum(c.startswith("V") for c in codes),
        "E": sum(c.startswith("E") for c in codes),
        "unknown_to_tree": sum(not icd9_path(c)[1] for c in codes),
    }


def cohort_stats(df: pd.DataFrame) -> dict[str, float]:
    """Every statistic of :data:`TARGETS` (same keys), plus the ontology-structure extras."""
    counts = visits_per_patient(df)
    hist = visit_histogram(df)
    dx, rx = code_counts(df, DX), code_counts(df, RX)
    stats: dict[str, float] = {
        "patients": len(counts),
        "visits": len(df),
        "visits_per_patient_mean": float(counts.mean()),
        **{f"patients_{k}_visit{'s' if k != '1' else ''}": v for k, v in hist.items() if k not in ("7+", "max")},
        "patients_7plus_visits": hist["7+"],
        "max_visits": hist["max"],
    }
    for name, column, counted in (("dx", DX, dx), ("rx", RX, rx)):
        stats.update({f"{name}_per_visit_{k}": v for k, v in codes_per_visit(df, column).items()})
        stats[f"{name}_distinct"] = len(counted)
        stats[f"{name}_top10_share"] = top_share(counted, 10)
        stats[f"{name}_top100_share"] = top_share(counted, 100)
    stats["dx_rank_slope_1_200"] = rank_slope(dx)
    rx_cont, dx_cont = continuity(df, RX), continuity(df, DX)
    stats["rx_continuity"] = rx_cont["share"]
    stats["rx_consecutive_jaccard"] = rx_cont["jaccard"]
    stats["dx_continuity"] = dx_cont["share"]
    stats["dx_consecutive_jaccard"] = dx_cont["jaccard"]
    stats["dx_same_category_lift"] = same_category_lift(df)
    signal = sibling_signal(df)
    stats["rare_dx_sibling_rx_corr"] = signal["same"]
    stats["rare_dx_other_rx_corr"] = signal["other"]
    stats["rare_dx_codes"] = signal["codes"]
    stats.update({f"dx_distinct_{k}": v for k, v in code_kinds(df).items()})
    return stats


def compare(
    stats: dict[str, float], targets: dict[str, tuple[float, float]] = TARGETS,
) -> list[tuple[str, float, float, float, bool]]:
    """``(name, target, tolerance, value, within)`` for every target statistic."""
    return [(k, t, tol, stats[k], abs(stats[k] - t) <= tol + 1e-12) for k, (t, tol) in targets.items()]
