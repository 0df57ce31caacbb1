"""G-BERT's typed batches: the contract between :mod:`datamodules.ehr` (which builds them) and
:mod:`multibert.gbert.task` (which reads them). This module imports torch only.

A visit becomes two sequences in one joint id space: ``0 [PAD]``, ``1 [CLS]``, ``2 [MASK]``, then the diagnosis
codes, then the medication codes (the :data:`NUM_SPECIAL` special ids come first).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from multibert.core.batch import TokenBatch

#: ``[PAD]``, ``[CLS]``, ``[MASK]`` precede the codes in the joint id space.
PAD_ID, CLS_ID, MASK_ID = 0, 1, 2
NUM_SPECIAL = 3


@dataclass
class GBertPretrainBatch:
    """Masked visits and the sets G-BERT's four pretraining heads predict.

    Attributes:
        visits: ``2B`` sequences: rows ``[0, B)`` are the diagnosis sequences, rows ``[B, 2B)`` the medication
            sequences of the same visits (``input_ids`` (2B, T), ``attention_mask`` (2B, T), ``token_type_ids``
            (2B, T)).
        dx_labels: (B, Vd) multi-hot of each visit's true diagnoses.
        rx_labels: (B, Vr) multi-hot of each visit's true medications.
    """

    visits: TokenBatch
    dx_labels: torch.Tensor
    rx_labels: torch.Tensor

    def __len__(self) -> int:
        return self.dx_labels.size(0)


@dataclass
class GBertRecommendBatch:
    """Whole patients, visits flattened in order.

    Attributes:
        visits: ``2 Nv`` sequences: rows ``[0, Nv)`` diagnoses, ``[Nv, 2 Nv)`` medications of the same visits.
        first_visit: (Nv,) flat index of the first visit of each visit's patient.
        target_visit: (Nt,) flat indices of the visits whose medications are predicted (each patient's 2nd on).
        rx_labels: (Nt, Vr) multi-hot of the true medications of each target visit.
        subject_id: (Nt,) patient of each target; hadm_id: (Nt,) admission of each target.
    """

    visits: TokenBatch
    first_visit: torch.Tensor
    target_visit: torch.Tensor
    rx_labels: torch.Tensor
    subject_id: torch.Tensor
    hadm_id: torch.Tensor

    def __len__(self) -> int:
        return self.target_visit.size(0)
