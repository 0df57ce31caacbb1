"""The frozen teacher of a distillation: an encoder with the head that makes its predictions, built from

- a multibert ``.ckpt`` of any :class:`~multibert.core.task.EncoderTask` (pretraining, G-BERT, classification,
  VideoBERT, ...): that task's encoder with its ``mlm`` or classification ``head``
  (:func:`teacher_from_checkpoint`);
- a Hugging Face BERT directory (``config.json`` + weights; the MLM head ``cls.predictions.*`` or a sequence
  classifier ``classifier.*`` if present): :func:`read_hf_teacher` gives its config, :func:`build_teacher` the
  model, :func:`load_hf_teacher` maps and loads its tensors;
- a config alone (random weights; only useful for smoke tests): :func:`build_teacher`.

The task (:mod:`multibert.distill.task`) decides when; this module knows how.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from multibert.core.adapter import AdapterFactory
from multibert.core.config import BertConfig
from multibert.core.convert import check_architecture, hf_to_multibert, load_into, read_hf_checkpoint
from multibert.core.encoder import Encoder
from multibert.core.heads import ClassificationHead
from multibert.core.objectives import MaskedLM
from multibert.core.task import EncoderTask

log = logging.getLogger(__name__)

Prediction = Literal["mlm", "classification", "none"]


class Predictor(nn.Module):
    """An encoder with the head that makes its predictions: the teacher's (and the student's) layout.

    Args:
        encoder: adapter + backbone (+ pooler).
        mlm: masked-LM objective tied to the encoder's token embedding, or ``None``.
        head: sequence classifier on the pooled vector, or ``None`` (named as in
            :class:`~multibert.finetune.classification.SequenceClassificationTask`, so checkpoints line up).
    """

    def __init__(self, encoder: Encoder, mlm: MaskedLM | None = None, head: ClassificationHead | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.mlm = mlm
        self.head = head


def teacher_from_checkpoint(path: str | Path, prediction: Prediction, config: BertConfig | None = None) -> Predictor:
    """The encoder and the ``mlm`` / classification ``head`` of any multibert task checkpoint.

    Args:
        path: the ``.ckpt``.
        prediction: the prediction layer the distillation compares; the checkpoint must have it.
        config: sizes the user stated for the teacher; they must equal the checkpoint's.
    """
    task = EncoderTask.from_checkpoint(path)
    if config is not None:
        check_architecture(config, task.encoder.config, str(path))
    mlm, head = getattr(task, "mlm", None), getattr(task, "head", None)
    if prediction == "mlm" and not isinstance(mlm, MaskedLM):
        raise ValueError(f"teacher {path} ({type(task).__name__}) has no masked-LM head (mlm); set model.prediction")
    if prediction == "classification" and not isinstance(head, ClassificationHead):
        raise ValueError(f"teacher {path} ({type(task).__name__}) has no sequence-classification head; set model.prediction")
    log.info("teacher: %s from %s", type(task).__name__, path)
    return Predictor(task.encoder, mlm if prediction == "mlm" else None, head if prediction == "classification" else None)


def read_hf_teacher(path: str | Path, config: BertConfig | None = None) -> tuple[BertConfig, dict[str, torch.Tensor]]:
    """A Hugging Face teacher's config (dropout off: the teacher only predicts) and its tensors, read once."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model.teacher_from={path} is neither a Hugging Face BERT directory nor a .ckpt file")
    theirs, state = read_hf_checkpoint(path)
    if config is not None:
        check_architecture(config, theirs, str(path))
    return dataclasses.replace(theirs, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0), state


def build_teacher(
    config: BertConfig, adapter: AdapterFactory, prediction: Prediction, num_labels: int | None, add_pooler: bool
) -> Predictor:
    """A teacher with fresh weights in the student's layout (weights come from :func:`load_hf_teacher`)."""
    encoder = Encoder(config, adapter(config), add_pooler=add_pooler or prediction == "classification")
    mlm = MaskedLM(config, encoder.adapter.output_embeddings()) if prediction == "mlm" else None
    head = ClassificationHead(config, num_labels) if prediction == "classification" else None
    return Predictor(encoder, mlm, head)


def load_hf_teacher(teacher: Predictor, state: dict[str, torch.Tensor], source: str, prediction: Prediction) -> None:
    """Load a Hugging Face checkpoint's tensors into a teacher built by :func:`build_teacher`.

    ``BertForPreTraining`` / ``BertForMaskedLM`` directories give the MLM head; a ``BertForSequenceClassification``
    directory gives the classifier (``classifier.*`` → ``head.classifier.*``). A prediction layer the checkpoint
    lacks is an error (a teacher that predicts from random weights teaches nothing); other missing tensors are
    reported.
    """
    mapped, unused = hf_to_multibert(state, teacher.encoder.config.num_hidden_layers)
    for p in ("weight", "bias"):
        if f"classifier.{p}" in unused:
            mapped[f"head.classifier.{p}"] = state[f"classifier.{p}"]
            unused.remove(f"classifier.{p}")
    own = teacher.state_dict()
    unused += sorted(k for k in mapped if k not in own)
    missing = load_into(teacher, {k: v for k, v in mapped.items() if k in own}, source)
    if prediction == "mlm" and any(k.startswith("mlm.head.dense") for k in missing):
        raise ValueError(
            f"teacher {source} has no masked-LM head (cls.predictions.*), so it makes no token predictions; "
            "use a BertForPreTraining / BertForMaskedLM checkpoint or set model.prediction: none"
        )
    if prediction == "classification" and any(k.startswith("head.") for k in missing):
        raise ValueError(
            f"teacher {source} has no sequence classifier (classifier.*); use a fine-tuned "
            "BertForSequenceClassification directory or a classification .ckpt"
        )
    if missing:
        log.warning("teacher %s: %d tensors not in the checkpoint keep random values: %s", source, len(missing), missing[:6])
    if unused:
        log.info("teacher %s: %d checkpoint tensors unused: %s", source, len(unused), unused[:6])
