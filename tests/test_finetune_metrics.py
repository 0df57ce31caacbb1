"""Fine-tuning metrics against hand-computed values (SQuAD, entity F1, micro / macro F1, precision@k)."""

from __future__ import annotations

import pytest
import torch

from multibert.finetune.metrics import (
    class_counts,
    entity_counts,
    entity_f1,
    get_entities,
    macro_f1,
    micro_f1,
    multilabel_decisions,
    normalize_answer,
    precision_at_k,
    squad_evaluate,
    squad_f1,
    squad_scores,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("  a  cat, an apple and THE dog. ", "cat apple and dog"),
        ("Theatre", "theatre"),  # "the" inside a word stays
        ("1,000 (approx.)", "1000 approx"),
        ("", ""),
    ],
)
def test_squad_normalisation(text, expected):
    assert normalize_answer(text) == expected


def test_squad_exact_and_f1_by_hand():
    # prediction tokens: [denver, broncos]; gold: [broncos] → P = 1/2, R = 1, F1 = 2/3
    assert squad_scores("Denver Broncos", ["Broncos"]) == (0.0, pytest.approx(2 / 3))
    # the maximum over gold answers wins
    assert squad_scores("the Broncos", ["Denver", "Broncos."]) == (1.0, 1.0)
    # repeated tokens are counted as a multiset: pred [a1, b, b] vs gold [b] → P = 1/3, R = 1, F1 = 0.5
    assert squad_f1("x b b", "b") == pytest.approx(0.5)
    # unanswerable: only "" is right
    assert squad_scores("", []) == (1.0, 1.0)
    assert squad_scores("something", []) == (0.0, 0.0)
    # a gold answer normalising to "" is ignored, as in the official v2.0 script
    assert squad_scores("", ["the", "a"]) == (1.0, 1.0)


def test_squad_evaluate_corpus():
    gold = {"q1": ["Paris"], "q2": ["blue sky"], "q3": []}
    preds = {"q1": "paris", "q2": "sky"}  # q3 missing → 0
    out = squad_evaluate(preds, gold)
    assert out["exact"] == pytest.approx(100 / 3)
    assert out["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)  # q2: P = 1, R = 1/2 → F1 = 2/3
    assert out["HasAns_total"] == 2 and out["NoAns_total"] == 1 and out["NoAns_exact"] == 0.0


def test_get_entities_bio_and_iob1():
    tags = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "I-ORG", "O", "I-MISC"]
    assert get_entities(tags) == [("PER", 0, 1), ("LOC", 3, 3), ("LOC", 4, 5), ("ORG", 6, 6), ("MISC", 8, 8)]
    assert get_entities(["O", "O"]) == []
    with pytest.raises(ValueError, match="BIO"):
        get_entities(["PER"])


def test_entity_f1_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "B-MISC"]]
    # gold: PER(0,1) LOC(3,3) ORG(0,0) = 3; pred: PER ORG(3,3) ORG(0,0) MISC = 4; correct: PER, ORG(0,0) = 2
    assert entity_counts(pred, gold) == (2, 4, 3)
    p, r = 2 / 4, 2 / 3
    assert entity_f1(pred, gold) == pytest.approx(2 * p * r / (p + r))
    # a boundary error is a miss: B-PER I-PER vs B-PER O
    assert entity_f1([["B-PER", "O"]], [["B-PER", "I-PER"]]) == 0.0


def test_single_label_macro_f1_and_accuracy():
    pred = torch.tensor([0, 0, 1, 2, 2])
    gold = torch.tensor([0, 1, 1, 2, 0])
    counts = class_counts(pred, gold, 4)
    assert counts.tolist() == [[1, 1, 1, 0], [1, 0, 1, 0], [1, 1, 0, 0]]  # tp / fp / fn per class
    # per class F1 = 2tp / (2tp + fp + fn): c0 2/4, c1 2/3, c2 2/3, c3 (never seen) 0 → mean over 4
    assert macro_f1(counts) == pytest.approx((0.5 + 2 / 3 + 2 / 3 + 0.0) / 4)
    sklearn = pytest.importorskip("sklearn.metrics")
    assert macro_f1(counts) == pytest.approx(sklearn.f1_score(gold, pred, average="macro", labels=[0, 1, 2, 3], zero_division=0.0))


def test_multilabel_micro_f1_and_precision_at_k():
    logits = torch.tensor([[3.0, -1.0, 0.5, -2.0], [-1.0, 2.0, 1.0, 0.2]])
    gold = torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0]])
    decided = multilabel_decisions(logits, threshold=0.6)  # sigmoid ≥ 0.6 ⇔ logit ≥ 0.405
    assert decided.tolist() == [[1, 0, 1, 0], [0, 1, 1, 0]]
    counts = class_counts(decided, gold, 4)
    # tp = 3, fp = 1, fn = 1 → micro F1 = 6 / 8
    assert micro_f1(counts) == pytest.approx(0.75)
    assert multilabel_decisions(logits, top_k=1).tolist() == [[1, 0, 0, 0], [0, 1, 0, 0]]
    assert precision_at_k(logits, gold, 1).tolist() == [1.0, 1.0]
    # top-2 of row 0: labels 0, 2 → 1 of 2 gold; row 1: 1, 2 → 2 of 2
    assert precision_at_k(logits, gold, 2).tolist() == [0.5, 1.0]
