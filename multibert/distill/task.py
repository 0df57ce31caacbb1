"""Distil any multibert model into a smaller one: DistilBERT (Sanh et al., 2019) and TinyBERT (Jiao et al., 2020).

A frozen teacher and a trainable student, each an adapter + backbone (+ heads). The student is this task's
``encoder`` (so checkpoints, ``multibert export`` and ``init_from`` treat it as any other encoder task); the teacher
sits under ``teacher`` and is built from

- a Hugging Face BERT directory (``config.json`` + weights; the MLM head ``cls.predictions.*`` if present),
- a multibert ``.ckpt`` of any :class:`~multibert.core.task.EncoderTask` (pretraining, G-BERT, classification,
  VideoBERT, ...): the teacher is that task's encoder with its ``mlm`` or classification ``head``, or
- a ``teacher_config`` alone (random weights; only useful for smoke tests).

Since the adapter is part of the encoder, the same task distils a text BERT, VideoBERT or G-BERT with no
per-modality code: by default the student uses the teacher's adapter class (``teacher_adapter`` falls back to
``adapter``), fed the same batch. Values the data decides for an adapter (G-BERT's code vocabularies, VideoBERT's
codebook) reach it through the datamodule's links into ``adapter.init_args``, as in every other task; a ``.ckpt``
teacher's adapter must read the same inputs (:meth:`~multibert.core.adapter.Adapter.check_compatible`).
``input_field`` names the batch field both encoders read (``visits`` for G-BERT batches, which wrap their
sequences in a :class:`~multibert.core.batch.TokenBatch`); ``None`` feeds the batch itself.

Which recipe runs is decided by the loss weights in the config (``configs/distill/*.yaml``); each term is a pure
function of :mod:`multibert.distill.losses`:

============================  ====================================================================  ==============
term (logged as)              what                                                                  DistilBERT / TinyBERT
============================  ====================================================================  ==============
``ce``        (alpha_ce)      T² · KL of the soft targets at temperature T                          5 / –
``hard``      (alpha_hard)    the student's own loss on the true targets (MLM labels or classes)    2 / –
``cos``       (alpha_cos)     1 − cos between last hidden states (same width only)                  1 / –
``embedding`` (alpha_embedding)  MSE(E_s W_e, E_t)                                                  – / 1
``attention`` (alpha_attention)  Σ_m MSE(A_m^s, A_g(m)^t), pre-softmax, padding masked              – / 1
``hidden``    (alpha_hidden)  Σ_m MSE(H_m^s W_h, H_g(m)^t)                                          – / 1
``prediction`` (alpha_prediction)  soft cross-entropy at temperature t                              – / 1
============================  ====================================================================  ==============

The teacher (built by :mod:`multibert.distill.teacher`) is built and its weights are (re)loaded from
``teacher_from`` when training starts (``setup``), and it is not written into checkpoints (a frozen BERT-base would triple every checkpoint): ``strict_loading`` is off so a
student checkpoint loads without it, and loading or exporting a student never needs the teacher's files.

Deviations from the papers are listed in :mod:`multibert.distill.losses`; in addition, DistilBERT's soft-target and MLM
terms are computed on the masked positions only (the Hugging Face script's ``restrict_ce_to_mask`` mode), because
the MLM decoder runs on masked positions only (:class:`~multibert.core.objectives.MaskedLM`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, NamedTuple

import torch

from multibert.core.adapter import Adapter, AdapterFactory
from multibert.core.batch import IGNORE_INDEX
from multibert.core.checkpoint import from_spec, to_spec
from multibert.core.config import BertConfig
from multibert.core.encoder import EncoderOutput
from multibert.core.heads import ClassificationHead
from multibert.core.losses import accuracy_counts, token_cross_entropy
from multibert.core.objectives import MaskedLM
from multibert.core.task import EncoderTask
from multibert.distill.layers import Projection, check_layer_map, init_student_from_teacher, uniform_layer_map
from multibert.distill.losses import attention_mse, cosine_hidden_loss, masked_mse, soft_cross_entropy, soft_target_kl
from multibert.distill.teacher import (
    Prediction,
    Predictor,
    build_teacher,
    load_hf_teacher,
    read_hf_teacher,
    teacher_from_checkpoint,
)

log = logging.getLogger(__name__)


class Predictions(NamedTuple):
    """logits: (N, V) or (B, C), the rows both models are scored on; labels: (N,) / (B,); hard_loss: scalar."""

    logits: torch.Tensor
    labels: torch.Tensor
    hard_loss: torch.Tensor


class DistillationTask(EncoderTask):
    """Train a student encoder to imitate a frozen teacher.

    Logs ``{stage}/loss`` and each active term as ``{stage}/loss_<term>`` (see the module table), and, when
    there is a prediction layer, ``{stage}/student_acc`` and ``{stage}/teacher_acc`` (masked-token or class
    accuracy) for stage in train / val / test.

    Args:
        config: the student's sizes (``vocab_size`` is linked from the datamodule).
        adapter: the student's input adapter (and the teacher's, unless ``teacher_adapter`` is given).
        teacher_from: the teacher's weights: a Hugging Face BERT directory or a multibert ``.ckpt``.
        teacher_config: the teacher's sizes; read from ``teacher_from`` when that is a directory or a ``.ckpt``.
            Its ``vocab_size`` follows the student's when the teacher has no checkpoint.
        teacher_adapter: the teacher's adapter factory for a Hugging Face / config teacher (default: ``adapter``).
        prediction: the prediction layer both models are compared on: ``mlm`` (masked tokens, reads
            ``batch.mlm_labels``), ``classification`` (pooled ``[CLS]``, reads ``batch.labels``) or ``none``
            (intermediate layers only, TinyBERT's general distillation).
        labels: the class names of the ``classification`` prediction layer (linked from a labelled datamodule).
        num_labels: the number of classes when ``labels`` is not given.
        input_field: the field of the batch that both encoders read (and masked-LM labels come from), e.g.
            ``visits`` for G-BERT batches; ``None``: the batch itself (text, VideoBERT).
        add_pooler: give the student BERT's pooler (DistilBERT drops it; classification needs it).
        student_token_types: feed the student the batch's segment ids; ``False`` hides them (DistilBERT has no
            token-type embeddings: set ``config.type_vocab_size: 1`` so the student keeps a single row).
        student_init_layers: DistilBERT's initialisation: 0-based teacher blocks to copy into the student's
            blocks (with the embeddings, pooler and MLM transform); needs equal widths. ``None``: no copy.
        layer_map: TinyBERT's map: for each student layer, the 1-based teacher layer it learns from;
            ``None``: the uniform g(m) = k·m.
        temperature: T of both soft-target terms (DistilBERT: 2; TinyBERT: 1).
        alpha_ce, alpha_hard, alpha_cos: DistilBERT's weights (paper: 5, 2, 1).
        alpha_embedding, alpha_attention, alpha_hidden, alpha_prediction: TinyBERT's weights.
        **kwargs: ``init_from``, ``freeze``, ``optimizer``, ``lr_scheduler`` of :class:`EncoderTask`; ``init_from``
            (e.g. the general-distilled student) is loaded after the teacher-layer copy, so it wins.
    """

    def __init__(
        self,
        config: BertConfig,
        adapter: AdapterFactory | None = None,
        teacher_from: str | None = None,
        teacher_config: BertConfig | None = None,
        teacher_adapter: AdapterFactory | None = None,
        prediction: Prediction = "mlm",
        labels: list[str] | None = None,
        num_labels: int | None = None,
        input_field: str | None = None,
        add_pooler: bool = True,
        student_token_types: bool = True,
        student_init_layers: list[int] | None = None,
        layer_map: list[int] | None = None,
        temperature: float = 1.0,
        alpha_ce: float = 0.0,
        alpha_hard: float = 0.0,
        alpha_cos: float = 0.0,
        alpha_embedding: float = 0.0,
        alpha_attention: float = 0.0,
        alpha_hidden: float = 0.0,
        alpha_prediction: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, adapter, **kwargs)  # the encoder reads add_pooler from the hyperparameters
        config = self.config  # a dict (from a checkpoint's hyperparameters) is a BertConfig from here on
        if prediction not in ("mlm", "classification", "none"):
            raise ValueError(f"prediction={prediction!r} must be 'mlm', 'classification' or 'none'")
        if teacher_from is None and teacher_config is None:
            raise ValueError(
                "a distillation task needs a teacher: set model.teacher_from (HF directory or .ckpt) or model.teacher_config"
            )
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        weights = (alpha_ce, alpha_hard, alpha_cos, alpha_embedding, alpha_attention, alpha_hidden, alpha_prediction)
        if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
            raise ValueError(f"the loss weights model.alpha_* must be >= 0 and not all 0, got {weights}")
        uses_logits = alpha_ce > 0 or alpha_hard > 0 or alpha_prediction > 0
        if prediction == "none" and uses_logits:
            raise ValueError("alpha_ce, alpha_hard and alpha_prediction need a prediction layer; set model.prediction")
        if prediction == "classification" and not add_pooler:
            raise ValueError("prediction='classification' reads the pooled [CLS]; set model.add_pooler: true")
        if labels is not None and num_labels is not None and num_labels != len(labels):
            raise ValueError(f"model.num_labels={num_labels} but {len(labels)} labels are given")
        self.labels = list(labels) if labels is not None else None
        self.num_labels = len(labels) if labels is not None else num_labels
        if prediction == "classification" and not self.num_labels:
            raise ValueError(
                "prediction='classification' needs model.labels (linked from the datamodule) or model.num_labels"
            )
        self.mlm = self.head = None
        if prediction == "mlm":
            embedding = self.encoder.adapter.output_embeddings()
            if embedding is None:
                raise ValueError(f"{type(self.encoder.adapter).__name__} has no token embedding for prediction='mlm'")
            self.mlm = MaskedLM(config, embedding)
        elif prediction == "classification":
            self.head = ClassificationHead(config, self.num_labels)
        # the teacher's adapter factory itself; the hyperparameters keep plain data (weights_only checkpoints)
        self.teacher_adapter_factory = from_spec(
            teacher_adapter if teacher_adapter is not None else self.hparams.adapter, Adapter, "model.teacher_adapter"
        )
        if teacher_adapter is not None and not isinstance(self.hparams.get("teacher_adapter"), dict):
            self.hparams["teacher_adapter"] = to_spec(teacher_adapter)
        if isinstance(teacher_config, BertConfig):
            self.hparams["teacher_config"] = dataclasses.asdict(teacher_config)
        # built by build_teacher when training starts (the teacher's sizes may live in its checkpoint)
        self.teacher: Predictor | None = None
        self.embedding_projection: Projection | None = None
        self.hidden_projection: Projection | None = None
        self.teacher_layers: list[int] = []
        self._teacher_loaded = False
        self._student_initialised = False
        self._teacher_state: dict[str, torch.Tensor] | None = None  # a HF teacher's tensors, read once
        # the frozen teacher is not saved with the student: let checkpoints load without its tensors
        self.strict_loading = False

    # ----------------------------------------------------------------------------------- teacher
    def configure_model(self) -> None:
        """Lightning's hook: build the teacher for training. Outside a Trainer (``load_from_checkpoint``,
        ``multibert export``) only the student is needed, so the teacher's files need not exist there."""
        if self._trainer is not None:
            self.build_teacher()

    def build_teacher(self) -> None:
        """Build the teacher (from its checkpoint or config), the projections and the layer map. Idempotent."""
        if self.teacher is not None:
            return
        hp = self.hparams
        given = hp.teacher_config
        if given is not None and not isinstance(given, BertConfig):
            given = BertConfig(**given)
        path = Path(hp.teacher_from) if hp.teacher_from else None
        if path is not None and path.is_file():
            self.teacher = teacher_from_checkpoint(path, hp.prediction, given)
            self._teacher_loaded = True
        else:
            if path is not None:
                t_config, self._teacher_state = read_hf_teacher(path, given)
            else:
                t_config = dataclasses.replace(given, vocab_size=self.config.vocab_size)
            self.teacher = build_teacher(
                t_config, self.teacher_adapter_factory, hp.prediction, self.num_labels, self.encoder.pooler is not None
            )
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.encoder.adapter.check_compatible(self.teacher.encoder.adapter, f"teacher {hp.teacher_from or '(config)'}")
        t_config = self.teacher.encoder.config
        L_s, L_t = self.config.num_hidden_layers, t_config.num_hidden_layers
        self.teacher_layers = (
            check_layer_map(hp.layer_map, L_s, L_t, "model.layer_map") if hp.layer_map else uniform_layer_map(L_s, L_t)
        )
        H_s, H_t, std = self.config.hidden_size, t_config.hidden_size, self.config.initializer_range
        if hp.alpha_cos > 0 and H_s != H_t:
            raise ValueError(f"the cosine term compares hidden states directly: student hidden_size={H_s}, teacher {H_t}")
        if hp.alpha_embedding > 0:
            self.embedding_projection = Projection(H_s, H_t, std)
        if hp.alpha_hidden > 0:
            self.hidden_projection = Projection(H_s, H_t, std)
        log.info("teacher: %d layers × %d; student: %d layers × %d; layer map %s", L_t, H_t, L_s, H_s, self.teacher_layers)

    def load_teacher(self) -> None:
        """Load a Hugging Face teacher's weights (a ``.ckpt`` teacher is loaded when built)."""
        state = self._teacher_state
        if state is None:
            _, state = read_hf_teacher(self.hparams.teacher_from)
        load_hf_teacher(self.teacher, state, str(self.hparams.teacher_from), self.hparams.prediction)
        self._teacher_state = None
        self._teacher_loaded = True

    def setup(self, stage: str) -> None:
        self.build_teacher()
        if self.hparams.teacher_from and not self._teacher_loaded:
            self.load_teacher()
        if self.hparams.student_init_layers is not None and not self._student_initialised:
            self.init_student_from_teacher(self.hparams.student_init_layers)
        super().setup(stage)  # freeze + init_from (after the layer copy, so a given student wins)

    def init_student_from_teacher(self, layers: list[int]) -> None:
        """DistilBERT's initialisation: embeddings, the named blocks, pooler and MLM transform from the teacher."""
        init_student_from_teacher(self.encoder, self.teacher.encoder, layers)
        if self.mlm is not None and self.teacher.mlm is not None:
            head, theirs = self.mlm.head, self.teacher.mlm.head
            for name in ("dense", "LayerNorm"):
                getattr(head, name).load_state_dict(getattr(theirs, name).state_dict())
            with torch.no_grad():
                head.bias.copy_(theirs.bias)
        self._student_initialised = True

    def train(self, mode: bool = True) -> "DistillationTask":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # the teacher never drops out
        return self

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("teacher.")]:
            del state[key]

    # ----------------------------------------------------------------------------------- forward
    def encoder_input(self, batch: Any) -> Any:
        """What both encoders read: ``batch.<input_field>``, or the batch itself when ``input_field`` is None."""
        field = self.hparams.get("input_field")
        if field is None:
            if dataclasses.is_dataclass(batch) and not hasattr(batch, "attention_mask"):
                inner = [f.name for f in dataclasses.fields(batch) if hasattr(getattr(batch, f.name), "attention_mask")]
                if inner:  # a batch that wraps its sequences, as G-BERT's do
                    raise ValueError(
                        f"{type(batch).__name__} wraps its encoder input in field(s) {inner}: set model.input_field "
                        f"(e.g. model.input_field: {inner[0]})"
                    )
            return batch
        if not hasattr(batch, field):
            raise ValueError(f"model.input_field={field!r}: {type(batch).__name__} has no field {field!r}")
        return getattr(batch, field)

    def _student_batch(self, batch: Any) -> Any:
        if self.hparams.student_token_types or not dataclasses.is_dataclass(batch):
            return batch
        if not any(f.name == "token_type_ids" for f in dataclasses.fields(batch)):
            return batch
        return dataclasses.replace(batch, token_type_ids=None)

    def _predict(self, model: Predictor | DistillationTask, encoded: EncoderOutput, batch: Any) -> Predictions | None:
        kind = self.hparams.prediction
        if kind == "mlm":
            tokens = self.encoder_input(batch)  # the token labels live with the token ids
            out = model.mlm(encoded, tokens)
            return Predictions(out.logits, tokens.mlm_labels[tokens.mlm_labels != IGNORE_INDEX], out.loss)
        if kind == "classification":
            labels = batch.labels
            if labels is None or labels.ndim != 1 or labels.is_floating_point():
                raise ValueError(
                    "prediction='classification' distils single-label classes: batch.labels must be (B,) class ids "
                    f"(got {None if labels is None else tuple(labels.shape)}); multi-label data is not supported"
                )
            if encoded.pooled_output.size(0) != labels.size(0):
                raise ValueError(
                    f"the batch has {encoded.pooled_output.size(0)} windows for {labels.size(0)} documents; distillation "
                    "compares one [CLS] per document: use data.long_documents: truncate"
                )
            logits = model.head(encoded.pooled_output)  # (B, C)
            return Predictions(logits, labels, token_cross_entropy(logits, labels))
        return None

    def losses(self, batch: Any) -> tuple[dict[str, torch.Tensor], Predictions | None, Predictions | None]:
        """Every active loss term (unweighted) and both models' predictions."""
        hp = self.hparams
        self.build_teacher()
        hidden = hp.alpha_embedding > 0 or hp.alpha_hidden > 0
        scores = hp.alpha_attention > 0
        inputs = self.encoder_input(batch)
        with torch.no_grad():
            t_enc = self.teacher.encoder(inputs, output_hidden_states=hidden, output_attention_scores=scores)
            t_pred = self._predict(self.teacher, t_enc, batch)
        s_enc = self.encoder(self._student_batch(inputs), output_hidden_states=hidden, output_attention_scores=scores)
        s_pred = self._predict(self, s_enc, batch)
        mask = s_enc.attention_mask
        terms: dict[str, torch.Tensor] = {}
        if hp.alpha_ce > 0:
            terms["ce"] = soft_target_kl(s_pred.logits, t_pred.logits, hp.temperature)
        if hp.alpha_hard > 0:
            terms["hard"] = s_pred.hard_loss
        if hp.alpha_cos > 0:
            terms["cos"] = cosine_hidden_loss(s_enc.last_hidden_state, t_enc.last_hidden_state, mask)
        if hp.alpha_embedding > 0:
            terms["embedding"] = masked_mse(self.embedding_projection(s_enc.hidden_states[0]), t_enc.hidden_states[0], mask)
        if hp.alpha_hidden > 0:
            terms["hidden"] = sum(
                masked_mse(self.hidden_projection(s_enc.hidden_states[m]), t_enc.hidden_states[g], mask)
                for m, g in enumerate(self.teacher_layers, start=1)
            )
        if hp.alpha_attention > 0:
            terms["attention"] = sum(
                attention_mse(s_enc.attention_scores[m], t_enc.attention_scores[g - 1], mask)
                for m, g in enumerate(self.teacher_layers)
            )
        if hp.alpha_prediction > 0:
            terms["prediction"] = soft_cross_entropy(s_pred.logits, t_pred.logits, hp.temperature)
        return terms, s_pred, t_pred

    def shared_step(self, batch: Any, stage: str) -> torch.Tensor:
        hp = self.hparams
        terms, s_pred, t_pred = self.losses(batch)
        loss = sum(getattr(hp, f"alpha_{name}") * value for name, value in terms.items())
        for name, value in terms.items():
            self.log_metric(f"{stage}/loss_{name}", value, len(batch))
        self.log_metric(f"{stage}/loss", loss, len(batch), prog_bar=True)
        if s_pred is not None:
            total = max(int(s_pred.labels.numel()), 1)
            for who, pred in (("student", s_pred), ("teacher", t_pred)):
                correct, _ = accuracy_counts(pred.logits, pred.labels)
                self.log_metric(f"{stage}/{who}_acc", correct.float() / total, total, prog_bar=who == "student")
        return loss

