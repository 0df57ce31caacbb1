"""Sequence classification on BERT's pooled ``[CLS]`` vector (Devlin et al., 2019, §4.1), single- or multi-label.

- docBERT (Adhikari et al., 2019, "DocBERT: BERT for Document Classification"): fine-tune BERT on documents
  truncated to 512 tokens, softmax cross-entropy for single-label sets, sigmoid BCE for multi-label ones
  (Reuters, AAPD), lr 2e-5. The recipe is ``configs/finetune/docbert.yaml``.
- patentBERT (Lee & Hsiang, 2019): the first claim of a patent, 128 tokens, multi-label CPC subclasses such as
  ``H04L``, sigmoid outputs; precision@1 and F1. The recipe is ``configs/finetune/patentbert.yaml``.

Long documents can also be split into sliding windows (:class:`datamodules.finetune.labels.LabelledTextDataModule` with
``long_documents="windows"``) whose pooled ``[CLS]`` vectors are averaged or max-pooled into one document vector
before the classifier (``window_pooling``). This is an addition to docBERT, which truncates; with one window per
document both give the same logits.

``multibert predict`` writes JSONL records ``{"id", "label", "score"}`` (multi-label: ``{"id", "labels",
"scores"}``) to ``data.predictions_out``.

Metrics, over each validation / test epoch: single-label accuracy and macro-F1; multi-label micro-F1 (decisions by
``threshold`` on the sigmoid, or the ``top_k`` best labels) and precision@``precision_at``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torchmetrics

from multibert.core.config import BertConfig
from multibert.core.heads import ClassificationHead
from multibert.core.losses import multilabel_bce, token_cross_entropy
from multibert.finetune.batch import ClassificationBatch
from multibert.finetune.heads import pool_windows
from multibert.finetune.metrics import class_counts, macro_f1, micro_f1, multilabel_decisions, precision_at_k
from multibert.finetune.task import FinetuneTask, write_jsonl


class ClassCounts(torchmetrics.Metric):
    """Per-class TP / FP / FN counts and a precision@k sum, summed over batches and devices."""

    full_state_update = False

    def __init__(self, num_labels: int) -> None:
        super().__init__()
        self.num_labels = num_labels
        self.add_state("counts", torch.zeros(3, num_labels, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("p_at_k", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor, p_at_k: torch.Tensor | None = None) -> None:
        self.counts += class_counts(pred, target, self.num_labels)
        self.n += target.size(0)
        if p_at_k is not None:
            self.p_at_k += p_at_k.double().sum()

    def compute(self) -> dict[str, torch.Tensor]:
        return {"counts": self.counts, "p_at_k": self.p_at_k, "n": self.n}


class SequenceClassificationTask(FinetuneTask):
    """Fine-tune an encoder to classify (long) texts.

    Args:
        config: encoder sizes (``vocab_size`` is linked from the datamodule).
        labels: the label vocabulary (linked from the datamodule; saved in the checkpoint, so predictions map
            back to label strings).
        num_labels: number of classes when ``labels`` is not given.
        multi_label: sigmoid + BCE over independent labels instead of softmax + cross-entropy.
        threshold: multi-label decision threshold on the sigmoid.
        top_k: multi-label decisions are the ``top_k`` best labels instead (e.g. 1 for "the main class").
        precision_at: ``k`` of the precision@k metric (multi-label).
        window_pooling: how the windows of one document are combined: ``mean``, ``max`` or ``first``.
        classifier_dropout: dropout before the classifier (default ``config.hidden_dropout_prob``).
        **kwargs: ``adapter``, ``init_from``, ``freeze``, ``optimizer``, ``lr_scheduler`` of
            :class:`~multibert.core.task.EncoderTask`.
    """

    prediction_suffix = ".jsonl"

    def __init__(
        self,
        config: BertConfig,
        labels: list[str] | None = None,
        num_labels: int | None = None,
        multi_label: bool = False,
        threshold: float = 0.5,
        top_k: int | None = None,
        precision_at: int = 1,
        window_pooling: Literal["mean", "max", "first"] = "mean",
        classifier_dropout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, **kwargs)
        if labels is None and num_labels is None:
            raise ValueError("give model.labels (linked from the datamodule) or model.num_labels")
        if labels is not None and num_labels is not None and num_labels != len(labels):
            raise ValueError(f"model.num_labels={num_labels} but {len(labels)} labels are given")
        self.labels = list(labels) if labels is not None else [str(i) for i in range(num_labels)]
        self.num_labels = len(self.labels)
        if window_pooling not in ("mean", "max", "first"):
            raise ValueError(f"model.window_pooling={window_pooling!r}; expected 'mean', 'max' or 'first'")
        self.multi_label = multi_label
        self.head = ClassificationHead(self.config, self.num_labels, classifier_dropout)
        self.metrics = torch.nn.ModuleDict({s: ClassCounts(self.num_labels) for s in ("val", "test")})

    def forward(self, batch: ClassificationBatch) -> torch.Tensor:
        """Shapes:
        batch.input_ids: (W, T), batch.owner: (W,) → logits (B, num_labels).
        """
        encoded = self.encoder(batch)
        vectors = encoded.pooled_output  # (W, H)
        document = pool_windows(vectors, batch.owner, len(batch), self.hparams.window_pooling)  # (B, H)
        return self.head(document)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return multilabel_bce(logits, labels) if self.multi_label else token_cross_entropy(logits, labels)

    def decisions(self, logits: torch.Tensor) -> torch.Tensor:
        """(B,) class ids, or (B, C) {0, 1} multi-label decisions."""
        if self.multi_label:
            return multilabel_decisions(logits, self.hparams.threshold, self.hparams.top_k)
        return logits.argmax(-1)

    def shared_step(self, batch: ClassificationBatch, stage: str) -> torch.Tensor:
        if batch.labels is None:
            raise ValueError(f"the {stage} data has no labels")
        logits = self(batch)
        loss = self.loss(logits, batch.labels)
        self.log_loss(stage, loss, len(batch))
        pred = self.decisions(logits.detach())
        if stage == "train":
            hit = (pred == batch.labels.long()).float().mean() if not self.multi_label else None
            if hit is not None:
                self.log("train/acc", hit, on_step=True, on_epoch=False, batch_size=len(batch))
        else:
            p_at_k = precision_at_k(logits, batch.labels, self.hparams.precision_at) if self.multi_label else None
            self.metrics[stage].update(pred, batch.labels.long(), p_at_k)
        return loss

    def epoch_metrics(self, stage: str) -> dict[str, float]:
        state = self.metrics[stage].compute()
        self.metrics[stage].reset()
        counts, n = state["counts"], max(int(state["n"]), 1)
        if self.multi_label:
            return {
                "micro_f1": micro_f1(counts),
                "macro_f1": macro_f1(counts),
                f"p@{self.hparams.precision_at}": float(state["p_at_k"]) / n,
            }
        return {"acc": float(counts[0].sum()) / n, "macro_f1": macro_f1(counts)}

    # ----------------------------------------------------------------- prediction
    def predict_records(self, batch: ClassificationBatch) -> list[dict]:
        logits = self(batch).float()
        pred = self.decisions(logits)
        scores = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, -1)
        records = []
        for i, ident in enumerate(batch.ids):
            if self.multi_label:
                chosen = [self.labels[j] for j in pred[i].nonzero().flatten().tolist()]
                records.append({"id": ident, "labels": chosen, "scores": {l: round(float(s), 5) for l, s in zip(self.labels, scores[i]) if l in chosen}})
            else:
                label = self.labels[int(pred[i])]
                records.append({"id": ident, "label": label, "score": round(float(scores[i, int(pred[i])]), 5)})
        return records

    def write_predictions(self, records: list[dict], path: Path) -> None:
        write_jsonl(records, path)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.check_saved_labels(checkpoint, "labels")
