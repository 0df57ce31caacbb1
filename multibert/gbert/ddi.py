"""Drug-drug interactions for G-BERT's evaluation: reading an interaction file into an adjacency over the
medication vocabulary, and the DDI rate of GAMENet (Shang et al., AAAI 2019) as a torchmetrics metric.

Training reads one open form: a CSV / TSV of ATC code pairs (or a ``.npy`` matrix). GAMENet's two published forms
are converted to it once, by ``multibert gbert-prep``:

- ``ddi_A_final.pkl``, a pickled (V, V) 0/1 matrix whose rows follow GAMENet's medication vocabulary: the ATC
  codes in order of first appearance over the rows of its admission table (``data_final.pkl``, which G-BERT ships
  as ``data-multi-visit.pkl``). Unpickling runs code from the file, so :func:`read_ddi_pickle` needs an explicit
  ``allow_pickle=True``.
- its source, the TWOSIDES table ``drug-DDI.csv`` (columns ``STITCH 1``, ``STITCH 2``, ``Polypharmacy Side
  Effect``, ``Side Effect Name``) with ``drug-atc.csv`` (lines ``CID,ATC,ATC,...``, no header), read by
  :func:`read_twosides` with GAMENet's rule.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torchmetrics import Metric

from multibert.gbert.metrics import ddi_pair_counts
from multibert.gbert.ontology import normalize_atc

log = logging.getLogger(__name__)


class DDIRate(Metric):
    """GAMENet's DDI rate: interacting predicted pairs / all predicted pairs, summed over visits."""

    full_state_update = False

    def __init__(self, adjacency: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("adjacency", adjacency.float(), persistent=False)
        self.add_state("interacting", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("pairs", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor) -> None:
        interacting, pairs = ddi_pair_counts(pred, self.adjacency)
        self.interacting += interacting
        self.pairs += pairs

    def compute(self) -> torch.Tensor:
        return self.interacting / self.pairs.clamp(min=1)


def load_ddi(path: str | Path, rx_codes: Sequence[str]) -> torch.Tensor:
    """A symmetric (Vr, Vr) drug-drug-interaction adjacency over ``rx_codes``.

    Accepts ``.npy`` (a (Vr, Vr) matrix in ``rx_codes`` order, as GAMENet's ``ddi_A_final.pkl`` holds) or a
    CSV / TSV of ATC code pairs (two columns, no header or any header); a code longer than the vocabulary's level is
    cut to it (``N02BE01`` → ``N02B``). Pairs outside the vocabulary are counted and skipped.
    """
    path = Path(path)
    if path.suffix in (".pkl", ".pickle"):
        raise ValueError(
            f"{path}: a pickled DDI matrix (GAMENet's ddi_A_final.pkl) is not read during training; convert it once "
            "to ATC pairs (unpickling runs code: opt in for a file you trust): multibert gbert-prep --pickle "
            "data-multi-visit.pkl --allow_pickle true --ddi_pickle ddi_A_final.pkl --out DIR/visits.parquet, then "
            "--data.ddi_path DIR/ddi_pairs.csv"
        )
    index = {c: i for i, c in enumerate(rx_codes)}
    V = len(rx_codes)
    if path.suffix == ".npy":
        adj = torch.from_numpy(np.load(path, allow_pickle=False)).float()
        if adj.shape != (V, V):
            raise ValueError(f"{path}: DDI matrix has shape {tuple(adj.shape)}, expected ({V}, {V}) in rx_codes order")
    else:
        adj = torch.zeros(V, V)
        level = len(rx_codes[0])
        skipped = 0
        delimiter = "\t" if path.suffix in (".tsv", ".txt") else ","
        with open(path, newline="") as f:
            for n, row in enumerate(csv.reader(f, delimiter=delimiter)):
                if len(row) < 2:
                    raise ValueError(f"{path}: line {n + 1} has {len(row)} column(s); expected two ATC codes")
                if n == 0 and TWOSIDES_COLUMNS[0] in row:
                    raise ValueError(
                        f"{path}: a TWOSIDES table (drug-DDI.csv) names drugs by STITCH id; convert it once to ATC "
                        "pairs: multibert gbert-prep ... --twosides drug-DDI.csv --cid_to_atc drug-atc.csv"
                    )
                try:
                    a, b = (normalize_atc(c)[:level] for c in row[:2])
                except ValueError:
                    if n == 0:
                        continue  # a header
                    raise
                if a in index and b in index:
                    adj[index[a], index[b]] = adj[index[b], index[a]] = 1.0
                else:
                    skipped += 1
        if skipped:
            log.info("%s: %d interaction pairs name medications outside the vocabulary (skipped)", path, skipped)
    adj = ((adj + adj.T) > 0).float()
    adj.fill_diagonal_(0)
    return adj


# --------------------------------------------------------------------------------------- GAMENet's forms
TWOSIDES_COLUMNS = ("STITCH 1", "STITCH 2", "Polypharmacy Side Effect", "Side Effect Name")
Pairs = set[tuple[str, str]]


def gamenet_code_order(atc_lists: Iterable[Sequence[str]]) -> list[str]:
    """GAMENet's medication vocabulary order: codes by first appearance over the table's rows, in row order."""
    return list(dict.fromkeys(c for codes in atc_lists for c in codes))


def read_ddi_pickle(path: str | Path, codes: Sequence[str], allow_pickle: bool = False) -> Pairs:
    """The interacting pairs of a pickled (V, V) matrix (GAMENet's ``ddi_A_final.pkl``) whose rows follow ``codes``.

    Raises:
        ValueError: without ``allow_pickle``; when the pickle holds no (V, V) matrix with V = ``len(codes)``.
    """
    if not allow_pickle:
        raise ValueError(
            f"{path}: refusing to unpickle: loading a pickle runs arbitrary code from the file; pass "
            "--allow_pickle true only for a file you trust, such as GAMENet's ddi_A_final.pkl"
        )
    matrix = np.asarray(pd.read_pickle(path), dtype=float)
    V = len(codes)
    if matrix.shape != (V, V):
        raise ValueError(
            f"{path}: the DDI matrix has shape {matrix.shape}, but the admission table has {V} medication codes; "
            "GAMENet's matrix follows the code order of its own table (data_final.pkl = data-multi-visit.pkl, "
            "unchanged): convert it together with that table"
        )
    rows, cols = np.nonzero((matrix + matrix.T) > 0)
    return {(codes[i], codes[j]) for i, j in zip(rows.tolist(), cols.tolist()) if i < j}


def read_twosides(
    ddi_csv: str | Path, cid_to_atc: str | Path, codes: Sequence[str], topk: int = 40
) -> tuple[Pairs, dict[str, int]]:
    """Interacting ATC pairs from TWOSIDES, by GAMENet's rule.

    GAMENet counts the interaction rows of each side-effect type and keeps the ``topk`` (40) *least* frequent types
    (its comment calls them the severe ones); the drug pairs with such a side effect interact. Each STITCH compound
    id maps to the 4-character prefixes of its ATC codes in ``drug-atc.csv`` that are medication ``codes``; two
    different codes of an interacting compound pair form a pair. Ties in the side-effect counts are broken by the
    side-effect id (GAMENet's sort leaves them in arbitrary order).

    Returns:
        the pairs, and counts of what was read and kept.
    """
    level = len(codes[0]) if codes else 4
    vocabulary = set(codes)
    ddi = pd.read_csv(ddi_csv, dtype=str)
    missing = [c for c in TWOSIDES_COLUMNS if c not in ddi.columns]
    if missing:
        raise ValueError(f"{ddi_csv}: missing TWOSIDES column(s) {missing}; found {list(ddi.columns)}")
    effects = ddi.groupby(["Polypharmacy Side Effect", "Side Effect Name"]).size().reset_index(name="count")
    effects = effects.sort_values(["count", "Polypharmacy Side Effect"], ascending=[False, True], kind="stable")
    rare = set(effects["Side Effect Name"].iloc[-topk:])
    kept = ddi[ddi["Side Effect Name"].isin(rare)][["STITCH 1", "STITCH 2"]].drop_duplicates()
    atc: dict[str, set[str]] = {}
    with open(cid_to_atc, newline="") as f:
        for row in csv.reader(f):
            if row:
                atc.setdefault(row[0].strip(), set()).update(
                    a.strip().upper()[:level] for a in row[1:] if a.strip().upper()[:level] in vocabulary
                )
    pairs: Pairs = set()
    mapped = 0
    for c1, c2 in zip(kept["STITCH 1"], kept["STITCH 2"]):
        a_codes, b_codes = atc.get(c1, ()), atc.get(c2, ())
        mapped += bool(a_codes and b_codes)
        pairs.update((min(a, b), max(a, b)) for a in a_codes for b in b_codes if a != b)
    counts = {
        "TWOSIDES rows": len(ddi), "side-effect types": len(effects), "side-effect types kept (least frequent)":
        len(rare), "compound pairs with those side effects": len(kept),
        "compound pairs whose both compounds map to medication codes": mapped, "interacting medication pairs": len(pairs),
    }
    return pairs, counts


def write_ddi_pairs(pairs: Pairs, path: str | Path) -> Path:
    """Write the open form :func:`load_ddi` reads: a CSV ``atc_a,atc_b`` with one interacting pair per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("atc_a,atc_b\n" + "".join(f"{a},{b}\n" for a, b in sorted(pairs)))
    return path
