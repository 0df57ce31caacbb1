"""G-BERT (Shang et al., 2019, "Pre-training of Graph Augmented Transformers for Medication Recommendation",
arXiv 1906.00346): pretraining on single visits and medication recommendation over patients' visit histories.

Both tasks share the shared BERT :class:`~multibert.core.backbone.Backbone` behind the
:class:`~multibert.gbert.adapter.OntologyAdapter`; a visit's diagnosis and medication sequences are encoded in
one backbone call and read at ``[CLS]`` (no pooler, as in the authors' code).

- :class:`GBertPretrainTask`: masked code sets in, four multi-label heads out (:mod:`multibert.gbert.heads`).
- :class:`GBertRecommendTask`: predicts each visit t ≥ 2's medications from the past; initialised from a
  pretraining checkpoint (``init_from``) or from scratch (the paper's "P-" ablation). It also owns the pretraining
  heads, so G-BERT's alternating schedule (``data.alternate: [pretrain_epochs, finetune_epochs]``) runs as one fit:
  each epoch is a round of pretraining passes then fine-tuning passes, validation PR-AUC picks the best round's
  checkpoint, and ``multibert test --ckpt_path <best>`` scores it once on the test patients.

Metric names: ``{stage}/jaccard``, ``{stage}/prauc``, ``{stage}/f1`` and, with a DDI file, ``{stage}/ddi_rate``.
Deviations from the authors' code, on purpose: no answer leakage in fine-tuning (see :mod:`multibert.gbert.heads`),
diagnosis and medication sequences get types 0 / 1 in pretraining too (the authors give both type 0 there), and the
``[CLS]`` position is not masked out of attention.
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from torchmetrics import MeanMetric

from multibert.core.adapter import AdapterFactory
from multibert.core.batch import TokenBatch
from multibert.core.config import BertConfig
from multibert.core.losses import multilabel_bce
from multibert.core.optim import build_scheduler, parameter_groups
from multibert.core.task import EncoderTask
from multibert.gbert.batch import GBertPretrainBatch, GBertRecommendBatch
from multibert.gbert.ddi import DDIRate, load_ddi
from multibert.gbert.heads import MedicationHead, PretrainHeads, PretrainLogits
from multibert.gbert.losses import pretrain_loss
from multibert.gbert.metrics import average_precision, f1, jaccard
from multibert.gbert.schedule import Stage, StageSchedule, as_stages, stage_values
from multibert.gbert.writer import RecommendationWriter

log = logging.getLogger(__name__)


class GBertPretrainTask(EncoderTask):
    """G-BERT pretraining: self-prediction (dx→dx, rx→rx) and dual prediction (dx→rx, rx→dx) of masked visits.

    Logs ``{stage}/loss`` (sum of the four BCEs) and the PR-AUC of each head, ``{stage}/dx2dx_prauc``,
    ``/rx2dx_prauc``, ``/dx2rx_prauc``, ``/rx2rx_prauc`` (the authors keep the pretraining epoch with the best
    ``rx2rx`` PR-AUC on the validation visits).

    Args:
        config: encoder sizes (the paper: hidden 300, 2 layers, 4 heads, intermediate 300, relu, dropout 0.4).
        adapter: G-BERT's :class:`~multibert.gbert.adapter.OntologyAdapter` and its options (``use_graph``,
            ``graph_heads``, ...); the EHR datamodule links its ``dx_codes`` and ``rx_codes``.
        **kwargs: ``init_from``, ``freeze``, ``optimizer``, ``lr_scheduler`` of
            :class:`~multibert.core.task.EncoderTask` (the authors: Adam at 5e-4, constant).
    """

    #: the pretraining loss is the task's loss here; the recommender logs it apart from its own
    pretrain_loss_name = "loss"
    add_pooler = False  # the heads read [CLS] directly, as in the authors' code
    #: most groups of similar length the backbone encodes a batch's sequences in (see :meth:`visit_vectors`)
    length_buckets = 4

    def __init__(self, config: BertConfig, adapter: AdapterFactory | None = None, **kwargs: Any) -> None:
        if adapter is None:
            raise ValueError(
                "G-BERT reads visits of medical codes: set model.adapter to multibert.gbert.adapter.OntologyAdapter "
                "(the EHR datamodule links its dx_codes and rx_codes)"
            )
        super().__init__(config, adapter, **kwargs)
        codes = self.encoder.adapter
        if not (hasattr(codes, "dx_codes") and hasattr(codes, "rx_codes")):
            raise ValueError(f"G-BERT needs an adapter with code vocabularies (dx_codes, rx_codes); got {type(codes).__name__}")
        self.dx_codes, self.rx_codes = list(codes.dx_codes), list(codes.rx_codes)
        self.pretrain_heads = PretrainHeads(self.config, len(self.dx_codes), len(self.rx_codes))
        self.pretrain_metrics = torch.nn.ModuleDict(
            {f"{s}_{n}_prauc": MeanMetric() for s in ("val", "test") for n in PretrainLogits._fields}
        )

    def visit_vectors(self, visits: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``[CLS]`` vectors of the diagnosis and the medication sequences.

        The adapter runs once (one pass of the ontology graph); the backbone then encodes the sequences in up to
        ``length_buckets`` groups of similar length, each padded only to its own longest sequence. Visits hold 2 to
        40 codes, so one padded batch is mostly padding (about 2.4 padded tokens per real one at the paper's
        batch sizes); grouping cuts that to about 1.3 and the step time nearly in half. Padding never changes a
        real token's output (it is masked out of attention), so the vectors are those of one padded call.

        Shapes:
            visits.input_ids: (2B, T) → two (B, H).
        """
        embedded = self.encoder.adapter(visits)
        x, mask = embedded.embeddings, embedded.attention_mask  # (2B, T, H), (2B, T)
        lengths = mask.sum(1)  # (2B,)
        order = lengths.argsort()
        groups = order.tensor_split(min(self.length_buckets, max(1, len(order) // 16)))
        cls = []
        for group in groups:
            T = int(lengths[group].max())  # right-padded: the first T positions hold every real token
            cls.append(self.encoder.backbone(x[group, :T], mask[group, :T]).last_hidden_state[:, 0])  # (G, H)
        cls = torch.cat(cls)[order.argsort()]  # (2B, H), back in input order
        dx, rx = cls.chunk(2)  # (B, H), (B, H)
        return dx, rx

    def pretrain_step(self, batch: GBertPretrainBatch, stage: str) -> torch.Tensor:
        logits = self.pretrain_heads(*self.visit_vectors(batch.visits))
        loss = pretrain_loss(logits, batch.dx_labels, batch.rx_labels)
        self.log_metric(f"{stage}/{self.pretrain_loss_name}", loss, len(batch), prog_bar=True, add_dataloader_idx=False)
        if stage != "train":
            for name, scores in logits._asdict().items():
                metric = self.pretrain_metrics[f"{stage}_{name}_prauc"]
                metric.update(average_precision(scores.float(), batch.dx_labels if name.endswith("dx") else batch.rx_labels))
                self.log(f"{stage}/{name}_prauc", metric, on_step=False, on_epoch=True, batch_size=len(batch), add_dataloader_idx=False)
        return loss

    def shared_step(self, batch: GBertPretrainBatch, stage: str) -> torch.Tensor:
        return self.pretrain_step(batch, stage)

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.shared_step(batch, "val")  # a staged schedule validates both tasks: each batch says which

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # dropout draws from torch's global generator: saved, a resumed run draws the masks the run would have
        # drawn (the data draws nothing from it, see datamodules.ehr.loaders)
        checkpoint["torch_rng_state"] = torch.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "torch_rng_state" in checkpoint and self._trainer is not None and self.trainer.state.fn == "fit":
            torch.set_rng_state(checkpoint["torch_rng_state"])

    def code_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The learned diagnosis (Vd, H) and medication (Vr, H) code vectors (after the graph, if any)."""
        adapter = self.encoder.adapter
        with torch.no_grad():
            return adapter.dx().detach().cpu(), adapter.rx().detach().cpu()


class GBertRecommendTask(GBertPretrainTask):
    """G-BERT medication recommendation (fine-tuning), optionally alternating with pretraining rounds.

    Logs ``train/loss``, ``{val,test}/loss``, ``{val,test}/jaccard``, ``/prauc``, ``/f1`` (and ``/ddi_rate`` when
    ``ddi_path`` is set); the best checkpoint is the one with the highest ``val/prauc``. ``predict`` writes each
    target visit's recommended ATC codes with probabilities to ``predict_output`` (``.jsonl`` or ``.csv``).

    Args:
        config, adapter: see :class:`GBertPretrainTask`.
        threshold: probability above which a medication is recommended (the paper: 0.3).
        ddi_path: drug-drug-interaction file for the DDI rate (see :func:`~multibert.gbert.ddi.load_ddi`); linked
            from the datamodule's ``ddi_path``.
        stages: a staged schedule (:mod:`multibert.gbert.schedule`), linked from ``data.stages``: each stage trains
            with a fresh optimiser (and learning-rate schedule over the stage's steps) at the stage's learning rate.
        restore_best: with ``stages``, start each stage from the previous stage's best validation epoch and end
            with the last stage's (the authors' schedule).
        **kwargs: as :class:`GBertPretrainTask`; ``init_from`` a pretraining (or earlier fine-tuning) checkpoint,
            ``None`` trains from scratch (the paper's "P-").
    """

    pretrain_loss_name = "pretrain_loss"
    #: the metric a run's best checkpoint is chosen by (read by the trainer presets' checkpoint callback)
    best_checkpoint: ClassVar[dict[str, str]] = {
        "monitor": "val/prauc", "mode": "max", "filename": "best-epoch{epoch}-prauc{val/prauc:.4f}",
    }

    def __init__(
        self,
        config: BertConfig,
        adapter: AdapterFactory | None = None,
        threshold: float = 0.3,
        ddi_path: str | None = None,
        stages: list[Stage] | None = None,
        restore_best: bool = True,
        **kwargs: Any,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold={threshold} must lie strictly between 0 and 1")
        stages = stage_values(stages)  # plain values, equal to the datamodule's (save_hyperparameters reads this local)
        super().__init__(config, adapter, **kwargs)
        self.stages = as_stages(stages)
        self._schedule = StageSchedule(self.stages, restore_best)  # replaced by the one configure_callbacks hands out
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
        self.log_metric(f"{stage}/loss", loss, len(batch), prog_bar=True, add_dataloader_idx=False)
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
                self.log(f"{stage}/{name}", self.metrics[f"{stage}_{name}"], on_step=False, on_epoch=True, prog_bar=name == "prauc", batch_size=len(batch), add_dataloader_idx=False)
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
        for subject, hadm, p in zip(batch.subject_id.tolist(), batch.hadm_id.tolist(), probs, strict=True):
            chosen = torch.nonzero(p >= self.hparams.threshold).flatten()
            chosen = chosen[p[chosen].argsort(descending=True)]
            records.append({
                "SUBJECT_ID": subject,
                "HADM_ID": hadm,
                "recommended": [[self.rx_codes[i], round(float(p[i]), 4)] for i in chosen.tolist()],
            })
        return records

    def configure_optimizers(self) -> Any:
        """The configured optimiser over BERT's parameter groups and the schedule stepped every step: over the whole
        run, or with stages over the current stage's steps at the stage's learning rate (:class:`StageSchedule`
        calls this again when a stage starts)."""
        stage = self.stages[self._schedule.stage] if self.stages else None  # resumed: the checkpoint's stage
        if stage is not None:
            self.freeze_for(stage)
        optimizer = self.optimizer_factory(parameter_groups(self))
        if stage is not None and stage.lr is not None:
            for group in optimizer.param_groups:
                group["lr"] = stage.lr
        if self.scheduler_factory is None or (stage is not None and stage.constant_lr):
            return optimizer
        if self.trainer.ckpt_path is not None and self.trainer.train_dataloader is None:
            # resuming: the checkpoint restores the schedule's state, its length included. Estimating the length
            # here would build the training loader before Lightning restores the loop state, and the loader would
            # then never get its position back (Lightning 2.6): the resumed epoch would start over.
            steps = 1
        elif stage is None:
            steps = self.trainer.estimated_stepping_batches
        else:
            _ = self.trainer.estimated_stepping_batches  # builds the epoch's loader if none is, so its length is known
            steps = math.ceil(self.trainer.num_training_batches / self.trainer.accumulate_grad_batches) * stage.epochs
        scheduler = build_scheduler(self.scheduler_factory, optimizer, steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def freeze_for(self, stage: Stage) -> None:
        """Train every parameter but those the task's ``freeze`` or the stage's ``freeze`` names."""
        prefixes = tuple(self.hparams.get("freeze") or ()) + stage.freeze
        for prefix in stage.freeze:
            if not any(n.startswith(prefix) for n, _ in self.named_parameters()):
                raise ValueError(f"stage freeze {prefix!r} matches no parameter; names look like encoder.adapter.dx.nodes")
        for name, parameter in self.named_parameters():
            parameter.requires_grad_(not name.startswith(prefixes))

    def configure_callbacks(self) -> list[pl.Callback]:
        """Write predictions; with stages, the restarts at stage boundaries. (The checkpoint callback is the
        trainer's: a task's own ``ModelCheckpoint`` would replace the configured one, and with it the run folder that
        ``--ckpt_path last`` resumes from.)"""
        callbacks: list[pl.Callback] = [RecommendationWriter()]
        if self.stages:
            self._schedule = StageSchedule(self.stages, self.hparams.restore_best)
            callbacks.append(self._schedule)
        return callbacks
