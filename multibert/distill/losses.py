"""Knowledge-distillation loss terms, as pure functions.

Two recipes share these terms (the Lightning task that combines them is :mod:`multibert.distill.task`; the layer
map, the projections and DistilBERT's initialisation are :mod:`multibert.distill.layers`):

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

import torch
import torch.nn.functional as F


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
