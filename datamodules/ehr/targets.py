"""The target visits of an admission table for G-BERT's baselines (:mod:`multibert.gbert.baselines`): every visit
t ≥ 2 of a patient with the history a baseline may read — visits 1..t-1 and visit t's diagnoses, never visit t's
medications or later visits.

The vocabularies and the patient split are those of :class:`datamodules.ehr.datamodule.EHRDataModule`, so the
baselines and G-BERT score the same visits.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse

from datamodules.ehr.tables import DX, RX
from multibert.gbert.baselines import TargetVisits


def target_visits(df: pd.DataFrame, subjects: set[int], dx_codes: list[str], rx_codes: list[str]) -> TargetVisits:
    """Every visit t ≥ 2 of the given patients (rows of ``df`` in visit order), with history features from visits
    1..t-1 only; codes outside the vocabularies are ignored."""
    dx_index = {c: i for i, c in enumerate(dx_codes)}
    rx_index = {c: i for i, c in enumerate(rx_codes)}
    table = df[df.SUBJECT_ID.isin(subjects)]
    subject, cur, past_d, past_r, prev, labels = [], [], [], [], [], []
    for sid, rows in table.groupby("SUBJECT_ID", sort=True):
        d = [[dx_index[c] for c in v if c in dx_index] for v in rows[DX]]
        r = [[rx_index[c] for c in v if c in rx_index] for v in rows[RX]]
        sum_d: dict[int, float] = {}
        sum_r: dict[int, float] = {}
        for t in range(len(d)):
            if t > 0:
                subject.append(sid)
                cur.append(dict.fromkeys(d[t], 1.0))
                past_d.append({i: n / t for i, n in sum_d.items()})
                past_r.append({i: n / t for i, n in sum_r.items()})
                prev.append(dict.fromkeys(r[t - 1], 1.0))
                labels.append(r[t])
            for i in set(d[t]):
                sum_d[i] = sum_d.get(i, 0.0) + 1
            for i in set(r[t]):
                sum_r[i] = sum_r.get(i, 0.0) + 1
    y = np.zeros((len(labels), len(rx_codes)), dtype=np.float32)
    for n, meds in enumerate(labels):
        y[n, meds] = 1.0
    Vd, Vr = len(dx_codes), len(rx_codes)
    return TargetVisits(np.asarray(subject), _csr(cur, Vd), _csr(past_d, Vd), _csr(past_r, Vr), _csr(prev, Vr), y)


def _csr(rows: list[dict[int, float]], width: int) -> sparse.csr_matrix:
    indptr = np.cumsum([0] + [len(r) for r in rows])
    indices = np.fromiter((i for r in rows for i in sorted(r)), dtype=np.int64, count=int(indptr[-1]))
    data = np.fromiter((r[i] for r in rows for i in sorted(r)), dtype=np.float64, count=int(indptr[-1]))
    return sparse.csr_matrix((data, indices, indptr), shape=(len(rows), width))
