"""Simple baselines for G-BERT's medication recommendation (Shang et al., 2019, arXiv 1906.00346), scored exactly as
the G-BERT task scores itself, so that a user can ask "does G-BERT beat the simple baselines on my data?".

Task: for every visit t ≥ 2 of a patient (a *target visit*), predict its medication set from the patient's earlier
visits and visit t's diagnoses; visit t's own medications and later visits are never read. The data layer builds the
:class:`TargetVisits` of a split (:func:`datamodules.ehr.targets.target_visits`); ``multibert gbert-report`` prints
the table.

Baselines (each a pure, deterministic function of the training and scored target visits):

- **frequency**: every target visit gets the same scores, each medication's rate among the training target visits;
- **copy previous**: score 1 for the previous visit's medications, 0 for the rest (ties are scored as
  ``sklearn.metrics.average_precision_score`` scores them: one threshold per distinct score);
- **logistic regression**: one-vs-rest L2-regularised logistic regression (C = 0.5) on [multi-hot current
  diagnoses, mean multi-hot of past diagnoses, mean multi-hot of past medications], fitted on the training target
  visits with scikit-learn's ``liblinear`` solver (a trust-region Newton method: deterministic, single-threaded,
  about 4 s for 145 medications at MIMIC-III scale; a torch linear layer would need an iterative optimiser, a
  learning rate and a stopping rule to reach the same optimum). A medication that never or always occurs in
  training gets a constant score (its training rate).

Metrics (:mod:`multibert.gbert.metrics`, the functions the model's ``multibert test`` uses): per target visit, the
Jaccard and F1 of the set predicted at ``score >= threshold`` and PR-AUC = the visit's average precision, then
averaged; the DDI rate over all predicted pairs when an adjacency is given.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse

from multibert.gbert.metrics import average_precision, ddi_pair_counts, f1, jaccard


@dataclass
class TargetVisits:
    """The target visits of a set of patients and what a baseline may read about each.

    Attributes:
        subject: (N,) patient of each target visit.
        current_dx: (N, Vd) multi-hot diagnoses of the target visit.
        past_dx: (N, Vd) mean multi-hot diagnoses of the patient's earlier visits.
        past_rx: (N, Vr) mean multi-hot medications of the earlier visits.
        previous_rx: (N, Vr) multi-hot medications of the visit just before.
        labels: (N, Vr) multi-hot medications of the target visit (the answer; never a feature).
    """

    subject: np.ndarray
    current_dx: sparse.csr_matrix
    past_dx: sparse.csr_matrix
    past_rx: sparse.csr_matrix
    previous_rx: sparse.csr_matrix
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.subject)

    def features(self) -> sparse.csr_matrix:
        """[current dx, mean past dx, mean past rx]: (N, 2 Vd + Vr)."""
        return sparse.hstack([self.current_dx, self.past_dx, self.past_rx], format="csr")


def frequency_scores(train: TargetVisits, scored: TargetVisits) -> np.ndarray:
    """Each medication's rate among the training target visits, the same for every scored visit: (N, Vr)."""
    return np.broadcast_to(train.labels.mean(0), scored.labels.shape).copy()


def copy_previous_scores(scored: TargetVisits) -> np.ndarray:
    """1 for the previous visit's medications, 0 otherwise: (N, Vr)."""
    return scored.previous_rx.toarray().astype(np.float32)


def logistic_scores(train: TargetVisits, scored: TargetVisits, C: float = 0.5) -> np.ndarray:
    """One-vs-rest logistic regression on [current dx, mean past dx, mean past rx]: (N, Vr) probabilities.

    liblinear (primal trust-region Newton, ``dual=False``) solves each label's L2-regularised problem to its
    tolerance without random shuffling, so the scores are reproducible; the intercept is regularised as liblinear
    does.

    Raises:
        ConvergenceWarning (as an error): a label whose fit did not converge would be a wrong row.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    x_train, x_scored = train.features(), scored.features()
    rates = train.labels.mean(0)
    scores = np.empty(scored.labels.shape, dtype=np.float64)
    for j in range(train.labels.shape[1]):
        if rates[j] in (0.0, 1.0):  # nothing to separate
            scores[:, j] = rates[j]
            continue
        model = LogisticRegression(C=C, solver="liblinear", dual=False, max_iter=1000)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ConvergenceWarning)
            model.fit(x_train, train.labels[:, j])
        scores[:, j] = model.predict_proba(x_scored)[:, 1]
    return scores


def evaluate(
    scores: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, threshold: float = 0.3,
    ddi: torch.Tensor | None = None,
) -> dict[str, float]:
    """Mean per-visit Jaccard, PR-AUC and F1, the DDI rate with an adjacency (Vr, Vr), and the number of visits.

    Shapes:
        scores, labels: (N, Vr).
    """
    s = torch.as_tensor(np.asarray(scores), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.float32)
    pred = s >= threshold
    out = {
        "jaccard": float(jaccard(pred, y).mean()),
        "prauc": float(average_precision(s, y).mean()),
        "f1": float(f1(pred, y).mean()),
    }
    if ddi is not None:
        interacting, pairs = ddi_pair_counts(pred, ddi)
        out["ddi_rate"] = float(interacting / pairs.clamp(min=1))  # as the task's DDIRate
    out["visits"] = len(y)
    return out
