"""Token classification / NER, BERT's CoNLL-2003 fine-tuning (Devlin et al., 2019, §5.3): a linear layer on every
token's final hidden state, trained and evaluated on the first WordPiece of each word (no CRF).

Evaluation is entity-level (conlleval / seqeval default mode, :func:`multibert.finetune.metrics.entity_counts`): the tags
predicted on first pieces are mapped back to words (words cut by truncation are predicted ``O``), chunks are
read from BIO, and precision / recall / F1 are micro-averaged over the entities of each validation / test epoch.
Token accuracy over first pieces is logged too. ``multibert predict`` writes CoNLL ``word tag`` lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchmetrics

from multibert.core.config import BertConfig
from multibert.core.heads import ClassificationHead
from multibert.core.losses import accuracy_counts, token_cross_entropy
from multibert.finetune.batch import TokenTagBatch
from multibert.finetune.metrics import entity_counts, f1_from_counts
from multibert.finetune.task import FinetuneTask


class TokenClassificationTask(FinetuneTask):
    """Fine-tune an encoder to tag words (NER and other BIO tagging).

    Args:
        config: encoder sizes (``vocab_size`` is linked from the datamodule).
        labels: the tag vocabulary (linked from the datamodule; saved in the checkpoint).
        classifier_dropout: dropout before the classifier (default ``config.hidden_dropout_prob``).
        **kwargs: ``adapter``, ``init_from``, ``freeze``, ``optimizer``, ``lr_scheduler`` of
            :class:`~multibert.core.task.EncoderTask`.
    """

    prediction_suffix = ".conll"
    add_pooler = False  # the heads read every token, not the pooled [CLS]

    def __init__(
        self,
        config: BertConfig,
        labels: list[str] | None = None,
        classifier_dropout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, **kwargs)
        if not labels:
            raise ValueError("model.labels (the tag vocabulary) is required; it is linked from the datamodule")
        self.labels = list(labels)
        self.head = ClassificationHead(self.config, len(self.labels), classifier_dropout)
        self.entities = torch.nn.ModuleDict({
            s: torchmetrics.SumMetric() for s in ("val_correct", "val_pred", "val_gold", "test_correct", "test_pred", "test_gold")
        })
        self.token_acc = torch.nn.ModuleDict({s: torchmetrics.MeanMetric() for s in ("val", "test")})

    def forward(self, batch: TokenTagBatch) -> torch.Tensor:
        """Shapes:
        batch.input_ids: (B, T) → logits (B, T, num_tags).
        """
        return self.head(self.encoder(batch).last_hidden_state)

    def word_tags(self, batch: TokenTagBatch, logits: torch.Tensor) -> list[list[str]]:
        """Predicted tag of every word of each sentence (``O`` for words without a first piece)."""
        pred = logits.argmax(-1).cpu()  # (B, T)
        word_index = batch.word_index.cpu()  # (B, T)
        out = []
        for i, words in enumerate(batch.words):
            tags = ["O"] * len(words)
            positions = (word_index[i] >= 0).nonzero().flatten()
            for t in positions.tolist():
                tags[int(word_index[i, t])] = self.labels[int(pred[i, t])]
            out.append(tags)
        return out

    def shared_step(self, batch: TokenTagBatch, stage: str) -> torch.Tensor:
        logits = self(batch)
        flat_logits = logits.flatten(0, 1)  # (B·T, num_tags)
        flat_labels = batch.labels.flatten()  # (B·T,)
        loss = token_cross_entropy(flat_logits, flat_labels)
        self.log_loss(stage, loss, len(batch))
        if stage != "train":
            correct, total = accuracy_counts(flat_logits, flat_labels)
            self.token_acc[stage].update(correct.float() / total.clamp(min=1), weight=total.float())
            c, p, g = entity_counts(self.word_tags(batch, logits), batch.tags)
            for name, value in (("correct", c), ("pred", p), ("gold", g)):
                self.entities[f"{stage}_{name}"].update(torch.tensor(float(value)))
        return loss

    def epoch_metrics(self, stage: str) -> dict[str, float | torch.Tensor]:
        if self.token_acc[stage].update_count == 0:
            return {}
        counts = [self.entities[f"{stage}_{n}"].compute() for n in ("correct", "pred", "gold")]
        precision, recall, f1 = f1_from_counts(*(float(c) for c in counts))
        out = {"precision": precision, "recall": recall, "f1": f1, "token_acc": self.token_acc[stage].compute()}
        for n in ("correct", "pred", "gold"):
            self.entities[f"{stage}_{n}"].reset()
        self.token_acc[stage].reset()
        return out

    def predict_records(self, batch: TokenTagBatch) -> list[list[tuple[str, str]]]:
        tags = self.word_tags(batch, self(batch))
        return [list(zip(words, t)) for words, t in zip(batch.words, tags)]

    def write_predictions(self, records: list[list[tuple[str, str]]], path: Path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            for sentence in records:
                f.writelines(f"{word} {tag}\n" for word, tag in sentence)
                f.write("\n")

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.check_saved_labels(checkpoint, "tags")
