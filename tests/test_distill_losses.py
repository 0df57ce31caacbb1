"""Distillation pieces (multibert/distill/losses.py): each loss term against a hand computation on tiny tensors, the T²
scaling, projections, layer maps and DistilBERT's layer initialisation."""

from __future__ import annotations

import math

import pytest
import torch

from multibert.core.config import BertConfig
from multibert.core.encoder import Encoder
from multibert.core.text_adapter import TextAdapter
from multibert.distill.layers import (
    Projection,
    check_layer_map,
    copy_matching,
    init_student_from_teacher,
    uniform_layer_map,
)
from multibert.distill.losses import attention_mse, cosine_hidden_loss, masked_mse, soft_cross_entropy, soft_target_kl


def _softmax(row: list[float]) -> list[float]:
    e = [math.exp(x) for x in row]
    return [x / sum(e) for x in e]


def test_soft_target_kl_matches_hand_computation_with_t_squared():
    s = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 2.0]])
    t = torch.tensor([[2.0, 0.0, 1.0], [0.0, 0.0, 3.0]])
    T = 2.0
    expected = 0.0
    for srow, trow in zip(s.tolist(), t.tolist()):
        ps, pt = _softmax([x / T for x in srow]), _softmax([x / T for x in trow])
        expected += sum(b * math.log(b / a) for a, b in zip(ps, pt))
    expected = expected / 2 * T**2
    assert soft_target_kl(s, t, T).item() == pytest.approx(expected, rel=1e-5)


def test_soft_target_kl_scales_by_t_squared_and_vanishes_on_equal_logits():
    s, t = torch.randn(5, 7), torch.randn(5, 7)
    T = 3.0
    raw = torch.nn.functional.kl_div((s / T).log_softmax(-1), (t / T).softmax(-1), reduction="batchmean")
    assert soft_target_kl(s, t, T).item() == pytest.approx(9.0 * raw.item(), rel=1e-5)
    assert soft_target_kl(t, t, T).item() == pytest.approx(0.0, abs=1e-6)
    # the T² keeps the gradient scale: for large T, T²·KL → ½·mean Σ((z_s − z̄_s) − (z_t − z̄_t))² / V
    big = soft_target_kl(s, t, 100.0).item()
    centred = (s - s.mean(-1, keepdim=True)) - (t - t.mean(-1, keepdim=True))
    assert big == pytest.approx((centred.pow(2).sum(-1) / 7 / 2).mean().item(), rel=3e-2)


def test_soft_cross_entropy_matches_hand_computation():
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[0.0, 1.0], [3.0, 0.0]])
    T = 0.5
    expected = 0.0
    for srow, trow in zip(s.tolist(), t.tolist()):
        ps, pt = _softmax([x / T for x in srow]), _softmax([x / T for x in trow])
        expected -= sum(b * math.log(a) for a, b in zip(ps, pt))
    assert soft_cross_entropy(s, t, T).item() == pytest.approx(expected / 2, rel=1e-5)


def test_empty_rows_give_zero_with_gradient():
    s = torch.zeros(0, 4, requires_grad=True)
    for fn in (soft_target_kl, soft_cross_entropy):
        loss = fn(s, torch.zeros(0, 4), 2.0)
        loss.backward()
        assert loss.item() == 0.0 and s.grad is not None


def test_cosine_loss_ignores_padding():
    s = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [5.0, 5.0]]])
    t = torch.tensor([[[0.0, 1.0], [1.0, 1.0], [-5.0, 5.0]]])
    mask = torch.tensor([[1, 1, 0]])
    # position 0: cos 0 → 1; position 1: cos 1 → 0; position 2 is padding
    assert cosine_hidden_loss(s, t, mask).item() == pytest.approx(0.5, abs=1e-6)


def test_masked_mse_averages_real_positions_only():
    s = torch.tensor([[[1.0, 2.0], [0.0, 0.0]], [[3.0, 3.0], [100.0, 100.0]]])
    t = torch.tensor([[[0.0, 0.0], [0.0, 2.0]], [[3.0, 1.0], [0.0, 0.0]]])
    mask = torch.tensor([[1, 1], [1, 0]])
    # squared errors of real positions: (1 + 4) + (0 + 4) + (0 + 4) over 6 features
    assert masked_mse(s, t, mask).item() == pytest.approx(13 / 6)


def test_attention_mse_masks_padded_queries_and_keys():
    s = torch.zeros(1, 2, 3, 3)
    t = torch.zeros(1, 2, 3, 3)
    t[0, 0, 0, 1] = 2.0  # real pair: counts
    t[0, 1, 1, 0] = 1.0  # real pair: counts
    t[0, 0, 2, 0] = 50.0  # padded query: ignored
    t[0, 1, 0, 2] = 50.0  # padded key: ignored
    mask = torch.tensor([[1, 1, 0]])
    # 2 heads × 2 × 2 real pairs = 8 entries; squared error 4 + 1
    assert attention_mse(s, t, mask).item() == pytest.approx(5 / 8)
    with pytest.raises(ValueError, match="num_attention_heads"):
        attention_mse(torch.zeros(1, 4, 3, 3), t, mask)


def test_projection_shapes_and_gradient():
    proj = Projection(48, 384, std=0.02)
    x = torch.randn(2, 5, 48)
    y = proj(x)
    assert y.shape == (2, 5, 384)
    assert proj.dense.weight.shape == (384, 48)
    y.sum().backward()
    assert proj.dense.weight.grad is not None and proj.dense.weight.grad.abs().sum() > 0


def test_uniform_layer_map_is_k_times_m():
    assert uniform_layer_map(4, 12) == [3, 6, 9, 12]
    assert uniform_layer_map(6, 12) == [2, 4, 6, 8, 10, 12]
    assert uniform_layer_map(2, 6) == [3, 6]
    with pytest.raises(ValueError, match="layer_map"):
        uniform_layer_map(5, 12)
    assert check_layer_map([1, 6], 2, 6, "model.layer_map") == [1, 6]
    with pytest.raises(ValueError, match="model.layer_map"):
        check_layer_map([0, 7], 2, 6, "model.layer_map")


def _encoder(layers: int, type_vocab_size: int = 2, pooler: bool = True) -> Encoder:
    cfg = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                     intermediate_size=37, max_position_embeddings=16, type_vocab_size=type_vocab_size)
    return Encoder(cfg, TextAdapter(cfg), add_pooler=pooler)


def test_init_student_copies_exactly_the_named_teacher_layers():
    teacher, student = _encoder(6), _encoder(3, type_vocab_size=1, pooler=False)
    with torch.no_grad():  # make every teacher tensor distinct (biases and LayerNorms start equal)
        for p in teacher.parameters():
            p.copy_(torch.randn_like(p))
    before = {k: v.clone() for k, v in student.state_dict().items()}
    copied = init_student_from_teacher(student, teacher, [0, 2, 5])
    for i, j in enumerate([0, 2, 5]):
        for name, value in student.backbone.blocks[i].state_dict().items():
            assert torch.equal(value, teacher.backbone.blocks[j].state_dict()[name]), (i, j, name)
            others = [k for k in range(6) if k != j]
            assert not any(torch.equal(value, teacher.backbone.blocks[k].state_dict()[name]) for k in others)
    assert torch.equal(student.adapter.word_embeddings.weight, teacher.adapter.word_embeddings.weight)
    # one token-type row: the teacher's first
    assert torch.equal(student.adapter.token_type_embeddings.weight, teacher.adapter.token_type_embeddings.weight[:1])
    assert set(copied) == set(before)  # every student tensor came from the teacher
    with pytest.raises(ValueError, match="student_init_layers"):
        init_student_from_teacher(student, teacher, [0, 2])
    with pytest.raises(ValueError, match="0..5"):
        init_student_from_teacher(student, teacher, [0, 2, 6])


def test_init_student_refuses_a_narrower_student():
    teacher = _encoder(2)
    cfg = BertConfig(vocab_size=99, hidden_size=16, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37,
                     max_position_embeddings=16)
    with pytest.raises(ValueError, match="hidden_size"):
        init_student_from_teacher(Encoder(cfg, TextAdapter(cfg)), teacher, [1])


def test_copy_matching_reports_skipped():
    a, b = torch.nn.Linear(3, 4), torch.nn.Linear(3, 5)
    copied, skipped = copy_matching(a, b)
    assert copied == [] and sorted(skipped) == ["bias", "weight"]
