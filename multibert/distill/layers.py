"""Which teacher layer teaches which student layer, and how the student starts.

- TinyBERT (Jiao et al., 2020): student layer m learns from teacher layer g(m) = k·m (:func:`uniform_layer_map`,
  or an explicit map checked by :func:`check_layer_map`); a learnable :class:`Projection` W maps student vectors
  into the teacher's width for the embedding and hidden-state terms.
- DistilBERT (Sanh et al., 2019): the student keeps the teacher's width and starts from every other teacher layer
  (:func:`init_student_from_teacher`).

Everything here imports torch only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from multibert.core.backbone import init_bert_weights

log = logging.getLogger(__name__)


class Projection(nn.Module):
    """TinyBERT's learnable map W (H_s → H_t) from student vectors into the teacher's space.

    Args:
        student_size: H_s.
        teacher_size: H_t.
        std: std of the normal weight init (the config's ``initializer_range``).

    Shapes:
        x: (..., H_s) → (..., H_t).
    """

    def __init__(self, student_size: int, teacher_size: int, std: float = 0.02) -> None:
        super().__init__()
        self.dense = nn.Linear(student_size, teacher_size)
        self.std = std
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_bert_weights(self.dense, self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(x)


# --------------------------------------------------------------------------------------------- layer maps
def uniform_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """TinyBERT's uniform map g(m) = k·m, k = L_t / L_s: the teacher layer (1-based) each student layer learns from.

    Raises if L_t is not a multiple of L_s (give the map explicitly then).
    """
    if student_layers < 1 or teacher_layers < student_layers or teacher_layers % student_layers:
        raise ValueError(
            f"a uniform layer map needs teacher layers ({teacher_layers}) to be a multiple of student layers "
            f"({student_layers}); set model.layer_map to one teacher layer (1..{teacher_layers}) per student layer"
        )
    k = teacher_layers // student_layers
    return [k * m for m in range(1, student_layers + 1)]


def check_layer_map(layer_map: Sequence[int], student_layers: int, teacher_layers: int, field: str) -> list[int]:
    """Validate an explicit map (one teacher layer, 1-based, per student layer)."""
    layer_map = [int(i) for i in layer_map]
    if len(layer_map) != student_layers or not all(1 <= i <= teacher_layers for i in layer_map):
        raise ValueError(
            f"{field}={layer_map} must name one teacher layer in 1..{teacher_layers} for each of the "
            f"{student_layers} student layers"
        )
    return layer_map


# --------------------------------------------------------------------------------------------- initialisation
def copy_matching(dst: nn.Module, src: nn.Module) -> tuple[list[str], list[str]]:
    """Copy every tensor of ``src`` into the same-named tensor of ``dst``.

    Equal shapes copy whole. An embedding table (``*embeddings.weight``) with the same width and fewer rows in
    ``dst`` (e.g. one token-type row instead of two) takes the leading rows. Returns ``(copied, skipped)`` names of ``dst``.
    """
    theirs = src.state_dict()
    copied, skipped = [], []
    with torch.no_grad():
        for name, tensor in dst.state_dict().items():
            other = theirs.get(name)
            if other is None:
                skipped.append(name)
            elif other.shape == tensor.shape:
                tensor.copy_(other)
                copied.append(name)
            elif _is_embedding_table(name) and other.size(1) == tensor.size(1) and other.size(0) > tensor.size(0):
                tensor.copy_(other[: tensor.size(0)])
                copied.append(name)
            else:
                skipped.append(name)
    return copied, skipped


def _is_embedding_table(name: str) -> bool:
    return name.endswith("embeddings.weight")


def init_student_from_teacher(student: nn.Module, teacher: nn.Module, layers: Sequence[int]) -> list[str]:
    """DistilBERT's initialisation: the student's embeddings, its i-th block from teacher block ``layers[i]``
    (0-based; DistilBERT took [0, 2, 4, 7, 9, 11] of 12) and the pooler when both have one.

    ``student`` and ``teacher`` are :class:`~multibert.core.encoder.Encoder` s of the same hidden and intermediate
    size. Returns the names of the student's tensors that were copied; everything the teacher could not provide
    is logged.
    """
    n_student, n_teacher = len(student.backbone.blocks), len(teacher.backbone.blocks)
    layers = [int(i) for i in layers]
    if len(layers) != n_student or not all(0 <= i < n_teacher for i in layers):
        raise ValueError(
            f"student_init_layers={layers} must list {n_student} teacher block indices in 0..{n_teacher - 1} "
            "(one per student layer)"
        )
    s_cfg, t_cfg = student.backbone.config, teacher.backbone.config
    for name in ("hidden_size", "intermediate_size", "num_attention_heads"):
        if getattr(s_cfg, name) != getattr(t_cfg, name):
            raise ValueError(
                f"initialising the student from teacher layers needs equal {name}: student has "
                f"{getattr(s_cfg, name)}, teacher {getattr(t_cfg, name)}"
            )
    copied, skipped = copy_matching(student.adapter, teacher.adapter)
    copied = [f"adapter.{n}" for n in copied]
    skipped = [f"adapter.{n}" for n in skipped]
    for i, j in enumerate(layers):
        student.backbone.blocks[i].load_state_dict(teacher.backbone.blocks[j].state_dict())
        copied += [f"backbone.blocks.{i}.{n}" for n in student.backbone.blocks[i].state_dict()]
    if student.pooler is not None:
        if teacher.pooler is not None:
            student.pooler.load_state_dict(teacher.pooler.state_dict())
            copied += [f"pooler.{n}" for n in student.pooler.state_dict()]
        else:
            skipped += [f"pooler.{n}" for n in student.pooler.state_dict()]
    log.info("student initialised from teacher blocks %s: %d tensors copied", layers, len(copied))
    if skipped:
        log.warning(
            "%d student tensors have no teacher counterpart and keep their initial values: %s", len(skipped), skipped[:8]
        )
    return copied
