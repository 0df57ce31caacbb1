"""Knowledge-distillation pieces: loss terms, projections, the layer map and student initialisation.

Two recipes share these parts (the Lightning task that combines them is :mod:`multibert.tasks.distillation`):

**DistilBERT** (Sanh et al., 2019, "DistilBERT, a distilled version of BERT: smaller, faster, cheaper and
lighter"; Hugging Face ``examples/research_projects/distillation``). The student keeps the teacher's width, takes
every other teacher layer as its initial weights, and trains on

    L = α_ce · T² · KL(p_teacher^T ‖ p_student^T) + α_mlm · L_mlm + α_cos · (1 − cos(h_s, h_t))

with p^T = softmax(z / T), T = 2 and α = 5 / 2 / 1 in the paper. The T² keeps the soft-target gradients on the
scale of the hard-target ones when T changes (Hinton et al., 2015).

**TinyBERT** (Jiao et al., 2020, "TinyBERT: Distilling BERT for Natural Language Understanding";
huawei-noah/Pretrained-Language-Model). The student may be narrower; student layer m learns from teacher layer
g(m) = k·m (g(0) = 0 is the embedding layer), with

    L_emb  = MSE(E_s W_e, E_t)                       (embedding output, learnable W_e: H_s → H_t)
    L_attn = 1/h Σ_i MSE(A_i^s, A_i^t)               (pre-softmax scores q·kᵀ/√d of each head)
    L_hidn = MSE(H_s W_h, H_t)                       (block outputs, learnable W_h shared by the layers)
    L_pred = −softmax(z_t / t) · log_softmax(z_s / t)  (soft cross-entropy at temperature t)

summed over the mapped layers.

Deviations, on purpose:

- Padding never enters a loss: the MSE and cosine terms average over real positions only, and the attention
  term over (real query, real key) pairs. TinyBERT's code zeroes padded key columns only (it detects them by
  the −10000 mask) and averages over every entry, padding included, so its loss shrinks as padding grows.
- :func:`soft_cross_entropy` sums over classes and averages over rows (a true cross-entropy per example);
  TinyBERT's code averages over classes too, which only rescales the term by 1 / V.

Everything here imports torch only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from multibert.backbone import init_bert_weights

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- loss terms
def _tempered_log_probs(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """log softmax(z / T) of both models, in float32 (shapes checked)."""
    _check_pair(student_logits, teacher_logits, "logits")
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (N, V)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)  # (N, V)
    return log_p_s, log_p_t


def soft_target_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """DistilBERT's soft-target loss: ``T² · KL(softmax(z_t/T) ‖ softmax(z_s/T))``, averaged over rows.

    Computed in float32. The T² factor is part of the term, so its weight α_ce means the same at every T.
    With no row (no masked token in the batch) the loss is an exact 0 that keeps a gradient path.

    Shapes:
        student_logits, teacher_logits: (N, V) → scalar.
    """
    log_p_s, log_p_t = _tempered_log_probs(student_logits, teacher_logits, temperature)
    if log_p_s.size(0) == 0:
        return student_logits.sum() * 0.0
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature**2


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """TinyBERT's prediction-layer loss: ``−Σ_v softmax(z_t/t)_v · log_softmax(z_s/t)_v``, averaged over rows.

    Shapes:
        student_logits, teacher_logits: (N, V) → scalar.
    """
    log_p_s, log_p_t = _tempered_log_probs(student_logits, teacher_logits, temperature)
    if log_p_s.size(0) == 0:
        return student_logits.sum() * 0.0
    return -(log_p_t.exp() * log_p_s).sum(-1).mean()


def cosine_hidden_loss(student: torch.Tensor, teacher: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """DistilBERT's cosine embedding loss (target +1): mean of ``1 − cos(h_s, h_t)`` over real positions.

    Shapes:
        student, teacher: (B, T, H); attention_mask: (B, T) → scalar.
    """
    _check_pair(student, teacher, "hidden states")
    keep = attention_mask.bool()  # (B, T)
    cos = F.cosine_similarity(student[keep].float(), teacher[keep].float(), dim=-1)  # (N,)
    return (1.0 - cos).mean() if cos.numel() else student.sum() * 0.0


def masked_mse(student: torch.Tensor, teacher: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the features of real positions (TinyBERT's embedding and hidden-state terms).

    Shapes:
        student, teacher: (B, T, H); attention_mask: (B, T) → scalar.
    """
    _check_pair(student, teacher, "hidden states")
    keep = attention_mask.bool()  # (B, T)
    if not keep.any():
        return student.sum() * 0.0
    return F.mse_loss(student[keep].float(), teacher[keep].float())


def attention_mse(student: torch.Tensor, teacher: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """TinyBERT's attention loss on pre-softmax scores, averaged over heads and (real query, real key) pairs.

    Shapes:
        student, teacher: (B, nh, T, T); attention_mask: (B, T) → scalar.
    """
    if student.shape != teacher.shape:
        raise ValueError(
            f"attention scores differ in shape: student {tuple(student.shape)}, teacher {tuple(teacher.shape)}; "
            "TinyBERT's attention loss needs the same num_attention_heads in student and teacher"
        )
    keep = attention_mask.bool()  # (B, T)
    pairs = (keep[:, :, None] & keep[:, None, :])[:, None].expand_as(student)  # (B, nh, T, T)
    if not pairs.any():
        return student.sum() * 0.0
    return F.mse_loss(student[pairs].float(), teacher[pairs].float())


def _check_pair(student: torch.Tensor, teacher: torch.Tensor, what: str) -> None:
    if student.shape != teacher.shape:
        raise ValueError(f"student and teacher {what} differ in shape: {tuple(student.shape)} vs {tuple(teacher.shape)}")


# --------------------------------------------------------------------------------------------- modules
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

    ``student`` and ``teacher`` are :class:`~multibert.model.Encoder` s of the same hidden and intermediate
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
