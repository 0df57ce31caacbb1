"""G-BERT (Shang et al., 2019, "Pre-training of Graph Augmented Transformers for Medication Recommendation",
arXiv 1906.00346): pretraining on single visits and medication recommendation over patients' visit histories.

Both tasks share the shared BERT :class:`~multibert.backbone.Backbone` behind the
:class:`~multibert.adapters.ontology.OntologyAdapter`; a visit's diagnosis and medication sequences are encoded in
one backbone call and read at ``[CLS]`` (no pooler, as in the authors' code).

- :class:`GBertPretrainTask`: masked code sets in, four multi-label heads out (:mod:`multibert.gbert`).
- :class:`GBertRecommendTask`: predicts each visit t ≥ 2's medications from the past; initialised from a
  pretraining checkpoint (``init_from``) or from scratch (the paper's "P-" ablation). It also owns the pretraining
  heads, so G-BERT's alternating schedule (``data.alternate: [pretrain_epochs, finetune_epochs]``) runs as one fit:
  each epoch is a round of pretraining passes then fine-tuning passes, validation PR-AUC picks the best round's
  checkpoint, and ``multibert test --ckpt_path <best>`` scores it once on the test patients.

Metric names: ``{stage}/jaccard``, ``{stage}/prauc``, ``{stage}/f1`` and, with a DDI file, ``{stage}/ddi_rate``.
Deviations from the authors' code, on purpose: no answer leakage in fine-tuning (see :mod:`multibert.gbert`),
diagnosis and medication sequences get types 0 / 1 in pretraining too (the authors give both type 0 there), and the
``[CLS]`` position is not masked out of attention.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint
from torchmetrics import MeanMetric, Metric

from datamodules.batch import TokenBatch
from datamodules.ehr import GBertPretrainBatch, GBertRecommendBatch
from multibert.adapters.ontology import OntologyAdapter, OntologyAdapterFactory
from multibert.config import BertConfig
from multibert.gbert import (
    MedicationHead,
    PretrainHeads,
    average_precision,
    ddi_pair_counts,
    f1,
    jaccard,
    multilabel_bce,
    pretrain_loss,
)
from multibert.ontology import normalize_atc
from multibert.tasks.base import EncoderTask, adapter_spec, resolve_adapter

log = logging.getLogger(__name__)


class GBertPretrainTask(EncoderTask):
    """G-BERT pretraining: self-prediction (dx→dx, rx→rx) and dual prediction (dx→rx, rx→dx) of masked visits.

    Logs ``{stage}/loss`` (sum of the four BCEs) and ``{stage}/dx2rx_prauc``, ``{stage}/rx2dx_prauc``.

    Args:
        config: encoder sizes (the paper: hidden 300, 2 layers, 4 heads, intermediate 300, relu, dropout 0.4).
        dx_codes: diagnosis vocabulary; linked from the datamodule.
        rx_codes: medication vocabulary; linked from the datamodule.
        adapter: the ontology adapter's class and options (``use_graph``, ``graph_heads``, ...).
        init_from, lr, weight_decay, betas, eps, warmup_steps, freeze: see :class:`~multibert.tasks.base.EncoderTask`.
    """

    #: the pretraining loss is the task's loss here; the recommender logs it apart from its own
    pretrain_loss_name = "loss"

    def __init__(
        self,
        config: BertConfig,
        dx_codes: list[str] | None = None,
        rx_codes: list[str] | None = None,
        adapter: OntologyAdapterFactory | dict | None = None,
        init_from: str | None = None,
        lr: float = 5e-4,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        warmup_steps: float = 0,
        freeze: list[str] | None = None,
    ) -> None:
        if not dx_codes or not rx_codes:
            raise ValueError(
                "dx_codes and rx_codes are empty: they come from the EHR datamodule (data: "
                "datamodules.ehr.EHRDataModule links them), or pass them as model.init_args"
            )
        factory = OntologyAdapter if adapter is None else resolve_adapter(adapter)
        super().__init__(
            config, lambda cfg: factory(cfg, dx_codes, rx_codes), False, init_from, lr, weight_decay, betas, eps,
            warmup_steps, freeze,
        )
        # plain data in the checkpoint: the adapter's class and options (the vocabularies are hparams of their own)
        self.hparams["adapter"] = adapter_spec(factory)
        self.dx_codes, self.rx_codes = list(dx_codes), list(rx_codes)
        self.pretrain_heads = PretrainHeads(self.config, len(dx_codes), len(rx_codes))
        self.pretrain_metrics = torch.nn.ModuleDict(
            {f"{s}_{n}": MeanMetric() for s in ("val", "test") for n in ("dx2rx_prauc", "rx2dx_prauc")}
        )

    def visit_vectors(self, visits: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``[CLS]`` vectors of the diagnosis and the medication sequences, encoded in one backbone call.

        Shapes:
            visits.input_ids: (2B, T) → two (B, H).
        """
        cls = self.encoder(visits).last_hidden_state[:, 0]  # (2B, H)
        dx, rx = cls.chunk(2)  # (B, H), (B, H)
        return dx, rx

    def pretrain_step(self, batch: GBertPretrainBatch, stage: str) -> torch.Tensor:
        logits = self.pretrain_heads(*self.visit_vectors(batch.visits))
        loss = pretrain_loss(logits, batch.dx_labels, batch.rx_labels)
        on_step = stage == "train"
        self.log(f"{stage}/{self.pretrain_loss_name}", loss, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=len(batch))
        if stage != "train":
            for key, scores, labels in (("dx2rx_prauc", logits.dx2rx, batch.rx_labels), ("rx2dx_prauc", logits.rx2dx, batch.dx_labels)):
                metric = self.pretrain_metrics[f"{stage}_{key}"]
                metric.update(average_precision(scores.float(), labels))
                self.log(f"{stage}/{key}", metric, on_step=False, on_epoch=True, batch_size=len(batch))
        return loss

    def shared_step(self, batch: GBertPretrainBatch, stage: str) -> torch.Tensor:
        return self.pretrain_step(batch, stage)

    def code_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The learned diagnosis (Vd, H) and medication (Vr, H) code vectors (after the graph, if any)."""
        adapter = self.encoder.adapter
        with torch.no_grad():
            return adapter.dx().detach().cpu(), adapter.rx().detach().cpu()


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


class GBertRecommendTask(GBertPretrainTask):
    """G-BERT medication recommendation (fine-tuning), optionally alternating with pretraining rounds.

    Logs ``train/loss``, ``{val,test}/loss``, ``{val,test}/jaccard``, ``/prauc``, ``/f1`` (and ``/ddi_rate`` when
    ``ddi_path`` is set); the best checkpoint is the one with the highest ``val/prauc``. ``predict`` writes each
    target visit's recommended ATC codes with probabilities to ``predict_output`` (``.jsonl`` or ``.csv``).

    Args:
        config, dx_codes, rx_codes, adapter: see :class:`GBertPretrainTask`.
        threshold: probability above which a medication is recommended (the paper: 0.3).
        ddi_path: drug-drug-interaction file for the DDI rate (see :func:`load_ddi`); linked from the datamodule's
            ``ddi_path``.
        init_from: a pretraining (or earlier fine-tuning) checkpoint; ``None`` trains from scratch ("P-").
        lr, weight_decay, betas, eps, warmup_steps, freeze: see :class:`~multibert.tasks.base.EncoderTask`.
    """

    pretrain_loss_name = "pretrain_loss"

    def __init__(
        self,
        config: BertConfig,
        dx_codes: list[str] | None = None,
        rx_codes: list[str] | None = None,
        adapter: OntologyAdapterFactory | dict | None = None,
        threshold: float = 0.3,
        ddi_path: str | None = None,
        init_from: str | None = None,
        lr: float = 5e-4,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        warmup_steps: float = 0,
        freeze: list[str] | None = None,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold={threshold} must lie strictly between 0 and 1")
        super().__init__(config, dx_codes, rx_codes, adapter, init_from, lr, weight_decay, betas, eps, warmup_steps, freeze)
        self.medication_head = MedicationHead(self.config, len(self.rx_codes))
        names = ("jaccard", "prauc", "f1")
        self.metrics = torch.nn.ModuleDict({f"{s}_{n}": MeanMetric() for s in ("val", "test") for n in names})
        if ddi_path is not None:
            adjacency = load_ddi(ddi_path, self.rx_codes)
            self.metrics.update({f"{s}_ddi_rate": DDIRate(adjacency) for s in ("val", "test")})

    def forward(self, batch: GBertRecommendBatch) -> torch.Tensor:
        """Medication logits of every target visit.

        Shapes:
            batch.visits.input_ids: (2 Nv, T) → (Nt, Vr).
        """
        dx, rx = self.visit_vectors(batch.visits)  # (Nv, H), (Nv, H)
        return self.medication_head(dx, rx, batch.first_visit, batch.target_visit)  # (Nt, Vr)

    def recommend_step(self, batch: GBertRecommendBatch, stage: str) -> torch.Tensor:
        logits = self(batch)
        loss = multilabel_bce(logits, batch.rx_labels)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=len(batch))
        if stage != "train":
            scores = torch.sigmoid(logits.float())
            pred = scores >= self.hparams.threshold
            values = {"jaccard": jaccard(pred, batch.rx_labels), "prauc": average_precision(scores, batch.rx_labels), "f1": f1(pred, batch.rx_labels)}
            for name, value in values.items():
                self.metrics[f"{stage}_{name}"].update(value)
            if f"{stage}_ddi_rate" in self.metrics:
                self.metrics[f"{stage}_ddi_rate"].update(pred)
                values["ddi_rate"] = None
            for name in values:
                self.log(f"{stage}/{name}", self.metrics[f"{stage}_{name}"], on_step=False, on_epoch=True, prog_bar=name == "prauc", batch_size=len(batch))
        return loss

    def shared_step(self, batch: GBertRecommendBatch | GBertPretrainBatch, stage: str) -> torch.Tensor:
        if isinstance(batch, GBertPretrainBatch):  # a pretraining pass of the alternating schedule
            return self.pretrain_step(batch, stage)
        return self.recommend_step(batch, stage)

    def predict_step(self, batch: GBertRecommendBatch, batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        """One record per target visit: subject, admission, recommended ``[code, probability]`` pairs (highest
        first) and the probability of every code above the threshold."""
        probs = torch.sigmoid(self(batch).float()).cpu()  # (Nt, Vr)
        records = []
        for subject, hadm, p in zip(batch.subject_id.tolist(), batch.hadm_id.tolist(), probs):
            chosen = torch.nonzero(p >= self.hparams.threshold).flatten()
            chosen = chosen[p[chosen].argsort(descending=True)]
            records.append({
                "SUBJECT_ID": subject,
                "HADM_ID": hadm,
                "recommended": [[self.rx_codes[i], round(float(p[i]), 4)] for i in chosen.tolist()],
            })
        return records

    def configure_callbacks(self) -> list[pl.Callback]:
        """Keep the checkpoint with the best validation PR-AUC (and the last); write predictions."""
        best = ModelCheckpoint(
            monitor="val/prauc", mode="max", save_top_k=1, save_last=True,
            filename="best-epoch{epoch}-prauc{val/prauc:.4f}", auto_insert_metric_name=False,
        )
        return [best, RecommendationWriter()]


class RecommendationWriter(BasePredictionWriter):
    """Writes ``predict_step`` records as JSON lines (``.jsonl``) or CSV rows (``.csv``: SUBJECT_ID, HADM_ID,
    ATC, probability — one row per recommended code).

    Args:
        output: the file; ``None`` takes the datamodule's ``predict_output`` (a data setting rather than a model
            one, because ``multibert predict --ckpt_path`` restores the model's arguments from the checkpoint).
    """

    def __init__(self, output: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.output = None if output is None else Path(output)

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.output is None:
            self.output = Path(getattr(trainer.datamodule, "predict_output", None) or "recommendations.jsonl")
        if self.output.suffix not in (".jsonl", ".csv"):
            raise ValueError(f"predict_output={str(self.output)!r}: use a .jsonl or .csv file")
        if trainer.world_size > 1:
            self.output = self.output.with_name(f"{self.output.stem}.rank{trainer.global_rank}{self.output.suffix}")
        self.output.parent.mkdir(parents=True, exist_ok=True)
        with open(self.output, "w", newline="") as f:
            if self.output.suffix == ".csv":
                csv.writer(f).writerow(["SUBJECT_ID", "HADM_ID", "ATC", "probability"])

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx) -> None:
        with open(self.output, "a", newline="") as f:
            if self.output.suffix == ".jsonl":
                f.writelines(json.dumps(r) + "\n" for r in prediction)
            else:
                w = csv.writer(f)
                for r in prediction:
                    w.writerows([r["SUBJECT_ID"], r["HADM_ID"], code, p] for code, p in r["recommended"])

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        log.info("recommendations written to %s", self.output)
