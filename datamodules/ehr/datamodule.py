"""EHR visits for G-BERT (Shang et al., 2019, arXiv 1906.00346): pretraining and medication-recommendation batches.

``__init__`` only checks its arguments (files exist); the table (:mod:`datamodules.ehr.tables`) is read on first
use, once per process: the code vocabularies (sorted diagnosis and medication codes) are computed then and flow into
the model through ``model_links`` (``dx_codes``, ``rx_codes``), which the CLI reads before building the model. Visits are
tokenised into one joint id space: ``0 [PAD]``, ``1 [CLS]``, ``2 [MASK]``, then the diagnosis codes, then the
medication codes. A visit becomes two sequences, ``[CLS]`` + its diagnoses (type 0) and ``[CLS]`` + its
medications (type 1); code order inside a sequence carries no meaning (the adapter adds no position embedding).

- ``pretrain`` batches hold visits of the training patients (single-visit patients included, as in G-BERT) and of
  the pretraining-only tables ``pretrain_paths`` (e.g. the authors' ``data-single-visit.pkl``), masked
  with BERT's 80/10/10 rule (random replacements drawn from the same code type — the authors' code draws
  diagnosis replacements from the medication vocabulary), and the multi-hot sets to predict.
- ``recommend`` batches hold whole patients (many per batch, not one): every visit's two sequences, where each
  patient starts, and for every visit t ≥ 2 its medication set as the target. Single-visit patients are skipped
  (counted).

Patient-level splits come from ``train-id.txt`` / ``eval-id.txt`` / ``test-id.txt`` beside the table when present,
else a seeded 2/3 : 1/6 : 1/6 split of the multi-visit patients. Admissions of validation or test patients never
reach pretraining: rows of the ``pretrain_paths`` tables whose patient is in the validation or test split, or whose
admission is already in the main table, are dropped and counted. With no ``path`` the SYNTHETIC cohort
(:mod:`datamodules.ehr.synthetic`) is generated in memory (a warning says so): the embedded default for quickstart
and tests.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, Sequence

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from torchdata.stateful_dataloader import StatefulDataLoader

from datamodules.ehr.loaders import RoundLoader, stateful_loader
from datamodules.ehr.synthetic import generate_cohort
from datamodules.ehr.tables import DX, RX, read_admissions, read_split_ids, split_patients
from datamodules.masking import mask_tokens
from multibert.core.batch import TokenBatch
from multibert.gbert.batch import CLS_ID, MASK_ID, NUM_SPECIAL, PAD_ID, GBertPretrainBatch, GBertRecommendBatch
from multibert.gbert.schedule import Stage, as_stages, stage_at, stage_values

log = logging.getLogger(__name__)

def _pad(seqs: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id sequences: (S, T) ids and (S, T) mask."""
    T = max(len(s) for s in seqs)
    ids = np.zeros((len(seqs), T), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
    ids_t = torch.from_numpy(ids)
    return ids_t, (ids_t != PAD_ID).long()


def _visit_tokens(dx: Sequence[np.ndarray], rx: Sequence[np.ndarray]) -> TokenBatch:
    """Diagnosis sequences then medication sequences, each ``[CLS]`` + codes; types 0 and 1."""
    ids, mask = _pad([np.concatenate([[CLS_ID], d]) for d in dx] + [np.concatenate([[CLS_ID], r]) for r in rx])
    types = torch.zeros_like(ids)
    types[len(dx):] = 1  # (2B, T)
    return TokenBatch(ids, mask, types)


def _multi_hot(sets: Sequence[np.ndarray], offset: int, size: int) -> torch.Tensor:
    out = torch.zeros(len(sets), size)
    for i, s in enumerate(sets):
        out[i, torch.from_numpy(s - offset)] = 1.0
    return out


# --------------------------------------------------------------------------------------------------- datasets
class VisitDataset(Dataset):
    """Single visits (pretraining): item = (diagnosis ids, medication ids) in the joint id space."""

    def __init__(self, visits: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.visits = visits

    def __len__(self) -> int:
        return len(self.visits)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        """``key``: (epoch, index) from :class:`~datamodules.sampling.EpochSampler` (an index means epoch 0);
        the visit's masks are drawn from it."""
        key = (0, key) if isinstance(key, int) else key
        dx, rx = self.visits[key[1]]
        return dx, rx, key


class PatientDataset(Dataset):
    """Patients (recommendation): item = (subject id, [(hadm id, dx ids, rx ids), ...]) with 2+ visits."""

    def __init__(self, patients: list[tuple[int, list[tuple[int, np.ndarray, np.ndarray]]]]) -> None:
        self.patients = patients

    def __len__(self) -> int:
        return len(self.patients)

    def __getitem__(self, key: int | tuple[int, int]):
        return self.patients[key if isinstance(key, int) else key[1]]


@dataclass
class PretrainCollator:
    """Masks each code sequence (15 %, 80/10/10, replacements of the same code type) and builds the labels."""

    num_dx: int
    num_rx: int
    mask_prob: float = 0.15
    seed: int = 0

    def __call__(self, items: list[tuple[np.ndarray, np.ndarray, tuple[int, int]]]) -> GBertPretrainBatch:
        dx_range = np.arange(NUM_SPECIAL, NUM_SPECIAL + self.num_dx)
        rx_range = np.arange(NUM_SPECIAL + self.num_dx, NUM_SPECIAL + self.num_dx + self.num_rx)
        masked_dx, masked_rx = [], []
        for dx, rx, (epoch, index) in items:
            # a visit's masks are a function of (seed, epoch, visit): the same in a resumed run, whatever the batch
            rng = np.random.default_rng([self.seed, epoch, index])
            for codes, pool, out in ((dx, dx_range, masked_dx), (rx, rx_range, masked_rx)):
                ids, _ = mask_tokens(
                    codes, rng, mask_token_id=MASK_ID, maskable=np.ones(len(codes), bool),
                    replacement_ids=pool, mask_prob=self.mask_prob,
                )
                out.append(ids)
        return GBertPretrainBatch(
            _visit_tokens(masked_dx, masked_rx),
            _multi_hot([d for d, _, _ in items], NUM_SPECIAL, self.num_dx),
            _multi_hot([r for _, r, _ in items], NUM_SPECIAL + self.num_dx, self.num_rx),
        )


@dataclass
class RecommendCollator:
    """Flattens the patients' visits and marks each patient's 2nd and later visits as targets."""

    num_dx: int
    num_rx: int

    def __call__(self, patients) -> GBertRecommendBatch:
        dx, rx, first, targets, subjects, hadms = [], [], [], [], [], []
        for subject, visits in patients:
            start = len(dx)
            for t, (hadm, d, r) in enumerate(visits):
                if t > 0:
                    targets.append(len(dx))
                    subjects.append(subject)
                    hadms.append(hadm)
                dx.append(d)
                rx.append(r)
                first.append(start)
        target = torch.tensor(targets, dtype=torch.long)
        return GBertRecommendBatch(
            _visit_tokens(dx, rx),
            torch.tensor(first, dtype=torch.long),
            target,
            _multi_hot([rx[i] for i in targets], NUM_SPECIAL + self.num_dx, self.num_rx),
            torch.tensor(subjects, dtype=torch.long),
            torch.tensor(hadms, dtype=torch.long),
        )


@functools.lru_cache(maxsize=4)
def _synthetic_cohort(num_patients: int, seed: int) -> pd.DataFrame:
    """The synthetic cohort, drawn once per process for each size and seed (it is deterministic; nothing below
    modifies the table in place)."""
    return generate_cohort(num_patients=num_patients, seed=seed)


# --------------------------------------------------------------------------------------------------- datamodule
class EHRDataModule(pl.LightningDataModule):
    """G-BERT data: pretraining visits or recommendation patients from one admission table.

    Args:
        path: admission table (``.parquet``, ``.jsonl``, or the authors' ``.pkl`` with ``allow_pickle``); ``None``
            generates the SYNTHETIC cohort.
        allow_pickle: confirm that a ``.pkl`` table is trusted (unpickling runs code from the file).
        pretrain_paths: more admission tables used for pretraining only (the authors add ``data-single-visit.pkl``);
            their patients in the validation or test split are left out, and counted.
        task: ``pretrain`` (visit batches) or ``recommend`` (patient batches).
        batch_size: visits per pretraining batch, patients per recommendation batch.
        alternate: ``(pretrain_epochs, finetune_epochs)`` for G-BERT's alternating schedule: with task
            ``recommend``, each training round (one Lightning epoch) runs this many passes over the pretraining
            visits and then over the training patients; validation follows each round.
        stages: a staged schedule (:mod:`multibert.gbert.schedule`; the authors' one is
            ``configs/gbert/authors.yaml``): each epoch trains on its stage's task and batch size, and validation
            scores both tasks; needs task ``recommend`` and ``trainer.reload_dataloaders_every_n_epochs: 1``. Linked
            to the task, which restarts its optimiser at every stage.
        max_codes: longest code list kept per visit (the rest is dropped and counted); ``None`` keeps all.
        mask_prob: share of codes masked in pretraining.
        seed: seed of the patient split when no split files are found.
        split_dir: folder with ``train-id.txt`` / ``eval-id.txt`` / ``test-id.txt``; default: the table's folder.
        predict_path: table to recommend for in ``predict`` (codes outside the vocabulary are dropped and counted);
            default: the test split.
        predict_output: where ``multibert predict`` writes the recommendations (``.jsonl`` or ``.csv``).
        ddi_path: drug-drug-interaction file for the DDI rate, handed to the recommender (a data setting, so that
            ``multibert test --ckpt_path ... --data.ddi_path F`` can add it to a checkpoint trained without it).
        synthetic_patients: size of the synthetic cohort when ``path`` is ``None``.
        synthetic_seed: seed of the synthetic cohort.
        num_workers: DataLoader workers.
    """

    #: Data-decided model arguments (see :mod:`multibert.cli`).
    model_links: ClassVar[dict[str, str]] = {
        "dx_codes": "adapter.init_args.dx_codes", "rx_codes": "adapter.init_args.rx_codes",
        "vocab_size": "config.vocab_size", "ddi_path": "ddi_path", "stages": "stages",
    }

    def __init__(
        self,
        path: str | None = None,
        allow_pickle: bool = False,
        pretrain_paths: list[str] | None = None,
        task: Literal["pretrain", "recommend"] = "recommend",
        batch_size: int = 64,
        alternate: tuple[int, int] | None = None,
        stages: list[Stage] | None = None,
        max_codes: int | None = None,
        mask_prob: float = 0.15,
        seed: int = 1203,
        split_dir: str | None = None,
        predict_path: str | None = None,
        predict_output: str = "recommendations.jsonl",
        ddi_path: str | None = None,
        synthetic_patients: int = 6350,
        synthetic_seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if task not in ("pretrain", "recommend"):
            raise ValueError(f"task={task!r}: choose 'pretrain' or 'recommend'")
        if alternate is not None and (task != "recommend" or min(alternate) < 0 or sum(alternate) == 0):
            raise ValueError(f"alternate={alternate}: needs task='recommend' and two non-negative epoch counts")
        if stages and (task != "recommend" or alternate is not None):
            raise ValueError("data.stages needs data.task='recommend' and no data.alternate (the stages replace it)")
        #: the staged schedule, as plain values (the task receives it through model_links), or None
        self.stages = stages = stage_values(stages)  # (before save_hyperparameters: the task records the same)
        self.save_hyperparameters()
        self.predict_output = predict_output
        for name, given in (("path", path), ("predict_path", predict_path), ("ddi_path", ddi_path),
                            *((f"pretrain_paths[{i}]", p) for i, p in enumerate(pretrain_paths or []))):
            if given is not None and not Path(given).is_file():
                raise FileNotFoundError(f"data.{name}: {given} does not exist")
        if split_dir is not None and not Path(split_dir).is_dir():
            raise FileNotFoundError(f"data.split_dir: {split_dir} is not a folder")
        self.ddi_path = ddi_path
        #: what was substituted for data the user did not give (read by the CLI), else None
        self.synthetic_data = (
            f"no data.path given: the SYNTHETIC G-BERT cohort ({synthetic_patients} patients, seed {synthetic_seed})"
            if path is None else None
        )
        self._datasets: dict[str, Dataset] = {}

    # ----------------------------------------------------------------------------------------- tables (lazy)
    @functools.cached_property
    def table(self) -> pd.DataFrame:
        """The admission table, read (or, without ``path``, generated) on first use."""
        if self.hparams.path is None:
            table = _synthetic_cohort(self.hparams.synthetic_patients, self.hparams.synthetic_seed)
            log.warning(
                "EHRDataModule: no path given, using the SYNTHETIC cohort (%d patients, %d admissions, seed %d), "
                "not patient data; pass --data.path to train on your table",
                table.SUBJECT_ID.nunique(), len(table), self.hparams.synthetic_seed,
            )
            return table
        return read_admissions(self.hparams.path, allow_pickle=self.hparams.allow_pickle)

    @functools.cached_property
    def splits(self) -> dict[str, set[int]]:
        """SUBJECT_IDs per split: the split files, else a seeded split of the table."""
        folder = self.hparams.split_dir or (Path(self.hparams.path).parent if self.hparams.path else None)
        splits = read_split_ids(folder) if folder is not None else None
        return splits if splits is not None else split_patients(self.table, self.hparams.seed)

    @functools.cached_property
    def pretrain_table(self) -> pd.DataFrame | None:
        """The ``pretrain_paths`` admissions that may pretrain: no validation or test patient, no admission twice."""
        if not self.hparams.pretrain_paths:
            return None
        held_out = self.splits["val"] | self.splits["test"]
        seen = set(self.table.HADM_ID.tolist())
        kept, counts = [], Counter()
        for path in self.hparams.pretrain_paths:
            extra = read_admissions(path, allow_pickle=self.hparams.allow_pickle, order=False)
            leak = extra.SUBJECT_ID.isin(held_out)
            again = ~leak & extra.HADM_ID.isin(seen)
            counts["admissions of validation/test patients"] += int(leak.sum())
            counts["admissions already in the main table or an earlier pretraining table"] += int(again.sum())
            extra = extra[~leak & ~again]
            seen.update(extra.HADM_ID.tolist())
            counts["admissions added to pretraining"] += len(extra)
            kept.append(extra)
        log.warning("pretrain_paths %s: %s", list(self.hparams.pretrain_paths), dict(counts))
        return pd.concat(kept, ignore_index=True)

    def _tables(self) -> list[pd.DataFrame]:
        return [self.table] + ([self.pretrain_table] if self.pretrain_table is not None else [])

    @functools.cached_property
    def dx_codes(self) -> list[str]:
        """The diagnosis vocabulary: every code of the table and of the admitted pretraining tables, sorted."""
        return sorted({c for t in self._tables() for v in t[DX] for c in v})

    @functools.cached_property
    def rx_codes(self) -> list[str]:
        """The medication vocabulary, as :attr:`dx_codes`."""
        return sorted({c for t in self._tables() for v in t[RX] for c in v})

    @functools.cached_property
    def dx_index(self) -> dict[str, int]:
        return {c: NUM_SPECIAL + i for i, c in enumerate(self.dx_codes)}

    @functools.cached_property
    def rx_index(self) -> dict[str, int]:
        return {c: NUM_SPECIAL + len(self.dx_codes) + i for i, c in enumerate(self.rx_codes)}

    @property
    def vocab_size(self) -> int:
        """Rows of the joint id space: 3 special tokens + diagnosis codes + medication codes."""
        return NUM_SPECIAL + len(self.dx_codes) + len(self.rx_codes)

    # ----------------------------------------------------------------------------------------- building
    def _encode(self, codes: Sequence[str], index: dict[str, int], counter: dict[str, int], kind: str) -> np.ndarray:
        ids = [index[c] for c in codes if c in index]
        counter[f"unknown {kind} codes"] += len(codes) - len(ids)
        if self.hparams.max_codes is not None and len(ids) > self.hparams.max_codes:
            counter[f"{kind} codes beyond max_codes"] += len(ids) - self.hparams.max_codes
            ids = ids[: self.hparams.max_codes]
        return np.asarray(ids, dtype=np.int64)

    def _patients(self, table: pd.DataFrame, source: str) -> list[tuple[int, list[tuple[int, np.ndarray, np.ndarray]]]]:
        counter: dict[str, int] = {k: 0 for k in ("unknown dx codes", "unknown rx codes", "dx codes beyond max_codes",
                                                  "rx codes beyond max_codes", "visits left empty")}
        patients = []
        for subject, rows in table.groupby("SUBJECT_ID", sort=True):
            visits = []
            for hadm, dx, rx in zip(rows.HADM_ID, rows[DX], rows[RX]):
                d = self._encode(dx, self.dx_index, counter, "dx")
                r = self._encode(rx, self.rx_index, counter, "rx")
                if len(d) == 0 or len(r) == 0:
                    counter["visits left empty"] += 1
                    continue
                visits.append((int(hadm), d, r))
            if visits:
                patients.append((int(subject), visits))
        counts = {k: v for k, v in counter.items() if v}
        if counts:
            log.warning("%s: %s", source, counts)
        return patients

    def _split_table(self, name: str) -> pd.DataFrame:
        ids = self.splits[name]
        if name == "train":
            # patients listed in no split file (the authors' files list multi-visit patients only) pretrain
            listed = self.splits["train"] | self.splits["val"] | self.splits["test"]
            mask = self.table.SUBJECT_ID.isin(ids) | ~self.table.SUBJECT_ID.isin(listed)
        else:
            mask = self.table.SUBJECT_ID.isin(ids)
        return self.table[mask]

    def dataset(self, kind: Literal["pretrain", "recommend"], split: str) -> Dataset:
        """The pretraining visits or the recommendation patients (2+ visits) of one split."""
        key = f"{kind}/{split}"
        if key not in self._datasets:
            if split == "predict":
                table = read_admissions(self.hparams.predict_path, self.hparams.allow_pickle) if self.hparams.predict_path else self._split_table("test")
            else:
                table = self._split_table(split)
            if kind == "pretrain" and split == "train" and self.pretrain_table is not None:
                table = pd.concat([table, self.pretrain_table], ignore_index=True)  # pretraining-only admissions
            patients = self._patients(table, f"{split} split")
            if kind == "pretrain":
                self._datasets[key] = VisitDataset([(d, r) for _, visits in patients for _, d, r in visits])
            else:
                multi = [p for p in patients if len(p[1]) > 1]
                if len(multi) < len(patients):
                    log.info("%s split: %d single-visit patients skipped for recommendation (they pretrain)", split, len(patients) - len(multi))
                if not multi:
                    raise ValueError(f"the {split} split has no patient with 2 or more visits to recommend for")
                self._datasets[key] = PatientDataset(multi)
        return self._datasets[key]

    def _loader(
        self, kind: Literal["pretrain", "recommend"], split: str, shuffle: bool, batch_size: int | None = None,
    ) -> StatefulDataLoader:
        n_dx, n_rx = len(self.dx_codes), len(self.rx_codes)
        seed = self.hparams.seed
        collate = PretrainCollator(n_dx, n_rx, self.hparams.mask_prob, seed) if kind == "pretrain" else RecommendCollator(n_dx, n_rx)
        # sharded here under DDP: Lightning keeps a DistributedSampler it is given (and never sees a round's loaders)
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)
        return stateful_loader(
            self.dataset(kind, split), batch_size or self.hparams.batch_size, collate, shuffle, seed, world, rank,
            self.hparams.num_workers,
        )

    # ----------------------------------------------------------------------------------------- loaders
    def train_dataloader(self) -> StatefulDataLoader | RoundLoader:
        if self.stages:
            return self._stage_loader()
        if self.hparams.alternate is None:
            return self._loader(self.hparams.task, "train", shuffle=True)
        pre, fine = self.hparams.alternate
        return RoundLoader([self._loader("pretrain", "train", True)] * pre + [self._loader("recommend", "train", True)] * fine)

    def _stage_loader(self) -> StatefulDataLoader:
        """The training loader of the current epoch's stage (built anew every epoch)."""
        if self.trainer is not None and self.trainer.reload_dataloaders_every_n_epochs != 1:
            raise ValueError(
                "data.stages gives each stage its own loader: set trainer.reload_dataloaders_every_n_epochs: 1 "
                f"(it is {self.trainer.reload_dataloaders_every_n_epochs})"
            )
        _, stage = stage_at(as_stages(self.stages), self.trainer.current_epoch if self.trainer is not None else 0)
        return self._loader(stage.task, "train", shuffle=True, batch_size=stage.batch_size)

    def val_dataloader(self) -> StatefulDataLoader | list[StatefulDataLoader]:
        recommend = self._loader(self.hparams.task, "val", shuffle=False)
        if self.stages and any(s["task"] == "pretrain" for s in self.stages):
            return [recommend, self._loader("pretrain", "val", shuffle=False)]  # each stage's best is scored by its task
        return recommend

    def test_dataloader(self) -> StatefulDataLoader:
        return self._loader(self.hparams.task, "test", shuffle=False)

    def predict_dataloader(self) -> StatefulDataLoader:
        return self._loader("recommend", "predict", shuffle=False)
