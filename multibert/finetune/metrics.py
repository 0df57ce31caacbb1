"""Fine-tuning metrics as pure functions: SQuAD exact match / F1, entity-level F1, micro / macro F1, precision@k.

- SQuAD (Rajpurkar et al., 2016; 2018): answers are normalised exactly as the official ``evaluate-v2.0.py`` does
  (lower-case, drop punctuation, drop the articles a / an / the, collapse whitespace); F1 is over the bag of
  normalised tokens; an example scores the maximum over its gold answers; an unanswerable question's only gold
  answer is the empty string, so predicting "" scores 1 and anything else 0.
- Entity F1 follows ``conlleval`` / ``seqeval``'s default (non-strict) mode: chunks are read from BIO (or IOB1)
  tags, an ``I-X`` after ``O`` or after another type starts a new chunk, and a predicted chunk counts only when
  its type, start and end all match a gold chunk.
- Multi-label: decisions by a probability threshold or by the top-k scores; micro-F1 over all (example, label)
  pairs; precision@k is the share of the k best-scored labels that are gold, averaged over examples.

Counts are returned where a metric must be accumulated over batches (and reduced over devices) before the ratio.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence

import torch

# ----------------------------------------------------------------------------------------------- SQuAD

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """The official SQuAD normalisation: lower-case, remove punctuation, articles and extra whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def squad_exact(prediction: str, gold: str) -> float:
    """1.0 when the normalised strings are equal."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def squad_f1(prediction: str, gold: str) -> float:
    """Token-bag F1 of the normalised strings; when either is empty, 1.0 if both are, else 0.0 (as the script)."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(prediction: str, golds: Sequence[str]) -> tuple[float, float]:
    """(exact match, F1) of one prediction: the maximum over the gold answers.

    Gold answers that normalise to "" are dropped, as the official v2.0 script does; with none left (an
    unanswerable question) the only gold answer is "".
    """
    golds = [g for g in golds if normalize_answer(g)] or [""]
    return max(squad_exact(prediction, g) for g in golds), max(squad_f1(prediction, g) for g in golds)


def squad_evaluate(predictions: dict[str, str], gold: dict[str, Sequence[str]]) -> dict[str, float]:
    """Official-style corpus scores in percent: ``exact``, ``f1``, ``total`` (and ``HasAns_*`` / ``NoAns_*``).

    Args:
        predictions: question id → predicted answer ("" for "no answer").
        gold: question id → its gold answer texts (empty for an unanswerable question).

    A question without a prediction scores 0, as in the official script.
    """
    if not gold:
        raise ValueError("squad_evaluate: no gold question")
    groups: dict[str, list[tuple[float, float]]] = {"all": [], "HasAns": [], "NoAns": []}
    for qid, answers in gold.items():
        em, f1 = squad_scores(predictions[qid], answers) if qid in predictions else (0.0, 0.0)
        groups["all"].append((em, f1))
        groups["HasAns" if any(normalize_answer(a) for a in answers) else "NoAns"].append((em, f1))
    out = {
        "exact": 100.0 * sum(e for e, _ in groups["all"]) / len(groups["all"]),
        "f1": 100.0 * sum(f for _, f in groups["all"]) / len(groups["all"]),
        "total": float(len(groups["all"])),
    }
    for name in ("HasAns", "NoAns"):
        if groups[name]:
            out[f"{name}_exact"] = 100.0 * sum(e for e, _ in groups[name]) / len(groups[name])
            out[f"{name}_f1"] = 100.0 * sum(f for _, f in groups[name]) / len(groups[name])
            out[f"{name}_total"] = float(len(groups[name]))
    return out


# ----------------------------------------------------------------------------------------------- entities


def _split_tag(tag: str) -> tuple[str, str]:
    if tag in ("O", ""):
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if not sep or prefix not in ("B", "I", "E", "S"):
        raise ValueError(f"tag {tag!r} is not in BIO form (O, B-TYPE, I-TYPE)")
    return prefix, kind


def get_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Chunks ``(type, first, last)`` (inclusive) of one tag sequence, conlleval / seqeval default rules.

    A chunk starts at ``B-X``, or at ``I-X`` when the previous tag is ``O`` or of another type; it ends before a
    tag that starts a new chunk or is ``O``. (``E-`` / ``S-`` of IOBES are accepted as in seqeval.)
    """
    entities = []
    start, kind = None, ""
    prev_prefix, prev_kind = "O", ""
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, this_kind = _split_tag(tag)
        end_chunk = start is not None and (
            prefix in ("O", "B", "S")
            or this_kind != prev_kind
            or prev_prefix in ("E", "S")
        )
        if end_chunk:
            entities.append((kind, start, i - 1))
            start = None
        begins = prefix in ("B", "S") or (prefix in ("I", "E") and (start is None))
        if begins and prefix != "O":
            start, kind = i, this_kind
        prev_prefix, prev_kind = prefix, this_kind
    return entities


def entity_counts(pred: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> tuple[int, int, int]:
    """(correct chunks, predicted chunks, gold chunks) over sentences of equal length."""
    correct = n_pred = n_gold = 0
    for i, (p, g) in enumerate(zip(pred, gold, strict=True)):
        if len(p) != len(g):
            raise ValueError(f"sentence {i}: {len(p)} predicted tags for {len(g)} gold tags")
        pe, ge = set(get_entities(p)), set(get_entities(g))
        correct += len(pe & ge)
        n_pred += len(pe)
        n_gold += len(ge)
    return correct, n_pred, n_gold


def f1_from_counts(correct: float, n_pred: float, n_gold: float) -> tuple[float, float, float]:
    """(precision, recall, F1) from counts; 0 where a denominator is 0."""
    precision = correct / n_pred if n_pred else 0.0
    recall = correct / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def entity_f1(pred: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> float:
    """Micro-averaged entity-level F1 (seqeval's default ``f1_score``)."""
    return f1_from_counts(*entity_counts(pred, gold))[2]


# ----------------------------------------------------------------------------------------------- classification


def class_counts(pred: torch.Tensor, target: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Per-class true positives, false positives, false negatives as a (3, C) tensor.

    Shapes:
        single-label: pred (N,) and target (N,) class ids; multi-label: pred (N, C) and target (N, C) in {0, 1}.
    """
    if pred.dim() == 1:
        pred = torch.nn.functional.one_hot(pred.long(), num_labels)  # (N, C)
        target = torch.nn.functional.one_hot(target.long(), num_labels)  # (N, C)
    pred, target = pred.bool(), target.bool()
    tp = (pred & target).sum(0)
    fp = (pred & ~target).sum(0)
    fn = (~pred & target).sum(0)
    return torch.stack([tp, fp, fn])  # (3, C)


def macro_f1(counts: torch.Tensor) -> float:
    """Mean over classes of per-class F1 (scikit-learn's ``average="macro"``: a class without any predicted or
    gold example scores 0 and still counts)."""
    tp, fp, fn = counts.double()
    denom = 2 * tp + fp + fn
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp))
    return float(f1.mean())


def micro_f1(counts: torch.Tensor) -> float:
    """F1 of the summed counts over all classes (for multi-label: over every (example, label) pair)."""
    tp, fp, fn = counts.double().sum(1)
    return float(2 * tp / (2 * tp + fp + fn)) if (2 * tp + fp + fn) > 0 else 0.0


def multilabel_decisions(logits: torch.Tensor, threshold: float = 0.5, top_k: int | None = None) -> torch.Tensor:
    """{0, 1} decisions: the ``top_k`` best-scored labels of each row, or every label with sigmoid ≥ ``threshold``.

    Shapes:
        logits: (N, C) → (N, C) long.
    """
    if top_k is not None:
        k = min(top_k, logits.size(-1))
        out = torch.zeros_like(logits, dtype=torch.long)
        return out.scatter_(-1, logits.topk(k, dim=-1).indices, 1)
    return (torch.sigmoid(logits.float()) >= threshold).long()


def precision_at_k(scores: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """Per-row share of the ``k`` best-scored labels that are gold (ties broken by ``topk``).

    Shapes:
        scores: (N, C); target: (N, C) in {0, 1} → (N,).
    """
    k = min(k, scores.size(-1))
    top = scores.topk(k, dim=-1).indices  # (N, k)
    return target.gather(-1, top).float().sum(-1) / k
