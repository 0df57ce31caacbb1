"""Masked-LM + pair pretraining for any token adapter: BERT's MLM + NSP (Devlin et al., 2019) for text, and
VideoBERT's masked text / visual-word modelling + text-video alignment (Sun et al., 2019) with the video adapter.
"""

from __future__ import annotations

from typing import Any

import torch

from multibert.core.adapter import AdapterFactory
from multibert.core.config import BertConfig
from multibert.core.objectives import MaskedLM, ObjectiveOutput, PairObjective
from multibert.core.task import EncoderTask


class PretrainingTask(EncoderTask):
    """Pretrain an encoder with masked-LM and (optionally) a pair objective.

    Logs ``{stage}/loss``, ``{stage}/mlm_loss``, ``{stage}/mlm_acc``, ``{stage}/{pair_name}_loss``,
    ``{stage}/{pair_name}_acc`` for stage in train / val / test, and ``lr``.

    Args:
        config: encoder sizes.
        adapter: the input adapter (text by default); it must expose ``output_embeddings()``.
        mlm_weight: weight of the masked-LM loss.
        pair_weight: weight of the pair loss (NSP / alignment); 0 turns the objective off.
        pair_name: metric name of the pair objective (``nsp`` for text, ``align`` for video).
        **kwargs: ``init_from``, ``freeze``, ``optimizer``, ``lr_scheduler`` of :class:`~multibert.core.task.EncoderTask`.
    """

    def __init__(
        self,
        config: BertConfig,
        adapter: AdapterFactory | None = None,
        mlm_weight: float = 1.0,
        pair_weight: float = 1.0,
        pair_name: str = "nsp",
        **kwargs: Any,
    ) -> None:
        super().__init__(config, adapter, **kwargs)
        embedding = self.encoder.adapter.output_embeddings()
        if embedding is None:
            raise ValueError(f"{type(self.encoder.adapter).__name__} has no token embedding for the masked-LM head")
        self.mlm = MaskedLM(self.config, embedding)
        self.pair = PairObjective(self.config) if pair_weight > 0 else None

    def forward(self, batch: Any) -> tuple[ObjectiveOutput, ObjectiveOutput | None]:
        encoded = self.encoder(batch)
        mlm = self.mlm(encoded, batch)
        pair = self.pair(encoded, batch) if self.pair is not None and batch.pair_labels is not None else None
        return mlm, pair

    def shared_step(self, batch: Any, stage: str) -> torch.Tensor:
        mlm, pair = self(batch)
        loss = self.hparams.mlm_weight * mlm.loss
        self._log_objective(stage, "mlm", mlm)
        if pair is not None:
            loss = loss + self.hparams.pair_weight * pair.loss
            self._log_objective(stage, self.hparams.pair_name, pair)
        self.log_metric(f"{stage}/loss", loss, len(batch), prog_bar=True)
        return loss

    def _log_objective(self, stage: str, name: str, out: ObjectiveOutput) -> None:
        total = int(out.total)
        if total == 0:  # no example of this batch carries the objective's label (e.g. video-only examples)
            return
        self.log_metric(f"{stage}/{name}_loss", out.loss, total, prog_bar=name == "mlm")
        self.log_metric(f"{stage}/{name}_acc", out.correct.float() / total, total)
