"""Drug-drug interactions for G-BERT's evaluation: reading an interaction file into an adjacency over the
medication vocabulary, and the DDI rate of GAMENet (Shang et al., AAAI 2019) as a torchmetrics metric.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
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
