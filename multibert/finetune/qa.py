"""Extractive question answering, BERT's SQuAD fine-tuning (Devlin et al., 2019, §4.2-4.3; Google's
``run_squad.py``).

A linear span head scores every token as answer start and end; the loss is the mean of the two cross-entropies.
An answer is decoded per question over all its windows: among the ``n_best_size`` best starts and ends of each
window (context tokens only, end ≥ start, at most ``max_answer_length`` tokens) the best ``start + end`` logit sum
wins. For SQuAD v2.0 the null score is the smallest ``[CLS]`` start + end sum over the windows, and "" (no
answer) is predicted when ``null − best > null_score_diff_threshold``, as in BERT's v2.0 recipe.

Exact match and F1 are the official SQuAD script's (:func:`multibert.finetune.metrics.squad_scores`), averaged over the
questions of each validation / test epoch. ``multibert predict`` writes ``{question_id: answer}`` JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torchmetrics

from multibert.core.config import BertConfig
from multibert.finetune.batch import QABatch
from multibert.finetune.heads import SpanHead, SpanLogits
from multibert.finetune.losses import span_loss
from multibert.finetune.metrics import squad_scores
from multibert.finetune.task import FinetuneTask, write_json


def best_answer(
    start_logits: Sequence[torch.Tensor],
    end_logits: Sequence[torch.Tensor],
    offsets: Sequence[Sequence[tuple[int, int] | None]],
    context: str,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    allow_null: bool = False,
    null_score_diff_threshold: float = 0.0,
) -> tuple[str, float]:
    """The answer text of one question from the logits of its windows, and its score (null: the null score).

    Args:
        start_logits, end_logits: one (T,) tensor per window.
        offsets: per window, T entries: the context character span of each token, ``None`` elsewhere.
        context: the context string the offsets point into.
        n_best_size: start / end candidates per window.
        max_answer_length: longest answer in tokens.
        allow_null: SQuAD v2.0: answer "" when the ``[CLS]`` span beats the best span by the threshold.
        null_score_diff_threshold: the margin (BERT's ``null_score_diff_threshold``, 0 by default).
    """
    best_text, best_score = "", float("-inf")
    null_score = float("inf")
    for start, end, offs in zip(start_logits, end_logits, offsets):
        start, end = start.float().cpu(), end.float().cpu()
        null_score = min(null_score, float(start[0] + end[0]))
        valid = torch.tensor([o is not None for o in offs[: start.numel()]])
        if not valid.any():
            continue
        masked_s = start.masked_fill(~valid, float("-inf"))
        masked_e = end.masked_fill(~valid, float("-inf"))
        k = min(n_best_size, int(valid.sum()))
        top_s = masked_s.topk(k).indices.tolist()
        top_e = masked_e.topk(k).indices.tolist()
        for i in top_s:
            for j in top_e:
                if j < i or j - i + 1 > max_answer_length:
                    continue
                score = float(start[i] + end[j])
                if score > best_score:
                    best_score = score
                    best_text = context[offs[i][0] : offs[j][1]]
    if allow_null and (best_score == float("-inf") or null_score - best_score > null_score_diff_threshold):
        return "", null_score
    return best_text, best_score


class QuestionAnsweringTask(FinetuneTask):
    """Fine-tune an encoder for SQuAD-style span extraction.

    Logs ``{stage}/loss`` and, per validation / test epoch, ``{stage}/exact`` and ``{stage}/f1`` (percent).

    Args:
        config: encoder sizes (``vocab_size`` is linked from the datamodule).
        version_2_with_negative: allow "no answer" (linked from the datamodule).
        n_best_size: start / end candidates per window when decoding (BERT: 20).
        max_answer_length: longest answer in tokens (BERT: 30).
        null_score_diff_threshold: v2.0 margin for predicting "no answer" (BERT: 0.0; tune it on dev data).
        **kwargs: ``adapter``, ``init_from``, ``freeze``, ``optimizer``, ``lr_scheduler`` of
            :class:`~multibert.core.task.EncoderTask`.
    """

    prediction_suffix = ".json"
    add_pooler = False  # the heads read every token, not the pooled [CLS]

    def __init__(
        self,
        config: BertConfig,
        version_2_with_negative: bool = False,
        n_best_size: int = 20,
        max_answer_length: int = 30,
        null_score_diff_threshold: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, **kwargs)
        self.head = SpanHead(self.config)
        self.exact = torch.nn.ModuleDict({s: torchmetrics.MeanMetric() for s in ("val", "test")})
        self.f1 = torch.nn.ModuleDict({s: torchmetrics.MeanMetric() for s in ("val", "test")})

    def forward(self, batch: QABatch) -> SpanLogits:
        """Shapes:
        batch.input_ids: (F, T) → start, end: (F, T).
        """
        encoded = self.encoder(batch)
        return self.head(encoded.last_hidden_state, encoded.attention_mask)

    def answers(self, batch: QABatch, logits: SpanLogits) -> list[str]:
        """The decoded answer of each question of the batch."""
        hp = self.hparams
        out = []
        for i in range(len(batch)):
            rows = (batch.owner == i).nonzero().flatten().tolist()
            text, _ = best_answer(
                [logits.start[r] for r in rows], [logits.end[r] for r in rows], [batch.offsets[r] for r in rows],
                batch.contexts[i], hp.n_best_size, hp.max_answer_length, hp.version_2_with_negative,
                hp.null_score_diff_threshold,
            )
            out.append(text)
        return out

    def shared_step(self, batch: QABatch, stage: str) -> torch.Tensor:
        logits = self(batch)
        loss = span_loss(logits.start, logits.end, batch.start_positions, batch.end_positions)
        self.log_loss(stage, loss, len(batch))
        if stage != "train":
            for prediction, gold in zip(self.answers(batch, logits), batch.answers):
                em, f1 = squad_scores(prediction, gold)
                self.exact[stage].update(torch.tensor(100.0 * em))
                self.f1[stage].update(torch.tensor(100.0 * f1))
        return loss

    def epoch_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        if self.exact[stage].update_count == 0:
            return {}
        out = {"exact": self.exact[stage].compute(), "f1": self.f1[stage].compute()}
        self.exact[stage].reset()
        self.f1[stage].reset()
        return out

    def predict_records(self, batch: QABatch) -> list[tuple[str, str]]:
        return list(zip(batch.ids, self.answers(batch, self(batch))))

    def write_predictions(self, records: list[tuple[str, str]], path: Path) -> None:
        write_json(dict(records), path)

