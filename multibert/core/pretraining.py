"""Masked-LM + pair pretraining for any token adapter: BERT's MLM + NSP (Devlin et al., 2019) for text, and
VideoBERT's masked text / visual-word modelling + text-video alignment (Sun et al., 2019) with the video adapter.

**Regimes.** VideoBERT trains one model on three kinds of examples — text-only, video-only and text-video — and
its objective is a weighted sum of the three regimes' objectives. A datamodule that mixes regimes yields a
:class:`RegimeTokenBatch` (each example's regime id) and links the regime names; the task then computes, for each
regime r present in the batch, ``L_r = mlm_weight · MLM_r + pair_weight · pair_r`` (MLM_r: mean over the masked
tokens of r's examples; pair_r: mean over r's examples that carry a pair label) and trains on
``Σ_r regime_weights[r] · L_r``, logging every ``{stage}/{regime}_loss``, ``{stage}/{regime}_mlm_loss`` and
``{stage}/{regime}_{pair_name}_loss``. A plain :class:`~multibert.core.batch.TokenBatch` (text BERT) takes the
single-regime path: ``mlm_weight · MLM + pair_weight · pair``, exactly as before regimes existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from multibert.core.adapter import AdapterFactory
from multibert.core.batch import IGNORE_INDEX, TokenBatch
from multibert.core.config import BertConfig
from multibert.core.objectives import MaskedLM, ObjectiveOutput, PairObjective
from multibert.core.task import EncoderTask


@dataclass
class RegimeTokenBatch(TokenBatch):
    """A :class:`~multibert.core.batch.TokenBatch` whose examples each belong to one training regime.

    Attributes:
        regimes: (B,) the regime of each example: an index into the task's ``regime_names``.
    """

    regimes: torch.Tensor | None = None


class PretrainingTask(EncoderTask):
    """Pretrain an encoder with masked-LM and (optionally) a pair objective.

    Logs ``{stage}/loss``, ``{stage}/mlm_loss``, ``{stage}/mlm_acc``, ``{stage}/{pair_name}_loss``,
    ``{stage}/{pair_name}_acc`` for stage in train / val / test, and ``lr``; with regimes, each regime's losses too.

    Args:
        config: encoder sizes.
        adapter: the input adapter (text by default); it must expose ``output_embeddings()``.
        mlm_weight: weight of the masked-LM loss.
        pair_weight: weight of the pair loss (NSP / alignment); 0 turns the objective off.
        pair_name: metric name of the pair objective (``nsp`` for text, ``align`` for video).
        regime_names: the regimes a :class:`RegimeTokenBatch` indexes (linked from the datamodule, e.g.
            ``[text_only, video_only, text_video]``).
        regime_weights: weight of each regime's loss in the sum, by name (a regime not listed weighs 1).
        **kwargs: ``init_from``, ``freeze``, ``optimizer``, ``lr_scheduler`` of :class:`~multibert.core.task.EncoderTask`.
    """

    def __init__(
        self,
        config: BertConfig,
        adapter: AdapterFactory | None = None,
        mlm_weight: float = 1.0,
        pair_weight: float = 1.0,
        pair_name: str = "nsp",
        regime_names: list[str] | None = None,
        regime_weights: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, adapter, **kwargs)
        embedding = self.encoder.adapter.output_embeddings()
        if embedding is None:
            raise ValueError(f"{type(self.encoder.adapter).__name__} has no token embedding for the masked-LM head")
        self.mlm = MaskedLM(self.config, embedding)
        self.pair = PairObjective(self.config) if pair_weight > 0 else None
        unknown = sorted(set(regime_weights or {}) - set(regime_names or []))
        if unknown:
            raise ValueError(
                f"model.regime_weights names regimes {unknown} that are not in regime_names {regime_names} "
                "(the datamodule links regime_names)"
            )
        if any(w < 0 for w in (regime_weights or {}).values()):
            raise ValueError(f"model.regime_weights must be >= 0, got {regime_weights}")

    def forward(self, batch: Any) -> tuple[ObjectiveOutput, ObjectiveOutput | None]:
        encoded = self.encoder(batch)
        mlm = self.mlm(encoded, batch)
        pair = self.pair(encoded, batch) if self.pair is not None and batch.pair_labels is not None else None
        return mlm, pair

    def shared_step(self, batch: Any, stage: str) -> torch.Tensor:
        mlm, pair = self(batch)
        self._log_objective(stage, "mlm", mlm)
        if pair is not None:
            self._log_objective(stage, self.hparams.pair_name, pair)
        regimes = batch.regimes if isinstance(batch, RegimeTokenBatch) else None
        if regimes is None or not self.hparams.regime_names:
            loss = self.hparams.mlm_weight * mlm.loss
            if pair is not None:
                loss = loss + self.hparams.pair_weight * pair.loss
        else:
            loss = self._regime_loss(batch, regimes, mlm, pair, stage)
        self.log_metric(f"{stage}/loss", loss, len(batch), prog_bar=True)
        return loss

    def _regime_loss(
        self, batch: RegimeTokenBatch, regimes: torch.Tensor, mlm: ObjectiveOutput, pair: ObjectiveOutput | None,
        stage: str,
    ) -> torch.Tensor:
        """``Σ_r w_r · (mlm_weight · MLM_r + pair_weight · pair_r)`` over the regimes present in the batch."""
        hp = self.hparams
        selected = batch.mlm_labels != IGNORE_INDEX  # (B, T)
        token_regime = regimes[:, None].expand_as(selected)[selected]  # (M,) regime of each masked token
        token_ce = F.cross_entropy(mlm.logits.float(), batch.mlm_labels[selected], reduction="none")  # (M,)
        if pair is not None:
            pair_valid = batch.pair_labels != IGNORE_INDEX  # (B,)
            pair_ce = F.cross_entropy(pair.logits.float(), batch.pair_labels.clamp_min(0), reduction="none")  # (B,)
        loss = mlm.logits.sum() * 0.0  # a zero that keeps the graph when no regime has a label
        for r, name in enumerate(hp.regime_names):
            in_r = token_regime == r
            rows = regimes == r
            if not rows.any():
                continue
            regime_loss = loss * 0.0
            if in_r.any():
                mlm_r = token_ce[in_r].mean()
                regime_loss = regime_loss + hp.mlm_weight * mlm_r
                self.log_metric(f"{stage}/{name}_mlm_loss", mlm_r, int(in_r.sum()))
            if pair is not None and (rows & pair_valid).any():
                pair_r = pair_ce[rows & pair_valid].mean()
                regime_loss = regime_loss + hp.pair_weight * pair_r
                self.log_metric(f"{stage}/{name}_{hp.pair_name}_loss", pair_r, int((rows & pair_valid).sum()))
            self.log_metric(f"{stage}/{name}_loss", regime_loss, int(rows.sum()))
            loss = loss + (hp.regime_weights or {}).get(name, 1.0) * regime_loss
        return loss

    def _log_objective(self, stage: str, name: str, out: ObjectiveOutput) -> None:
        total = int(out.total)
        if total == 0:  # no example of this batch carries the objective's label (e.g. video-only examples)
            return
        self.log_metric(f"{stage}/{name}_loss", out.loss, total, prog_bar=name == "mlm")
        self.log_metric(f"{stage}/{name}_acc", out.correct.float() / total, total)
