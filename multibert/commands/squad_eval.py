"""``multibert squad-eval``: score a predictions file against SQuAD gold answers, as the official script does."""

from __future__ import annotations

import json
from pathlib import Path

from datamodules.finetune.squad import read_squad
from multibert.finetune.metrics import squad_evaluate


def squad_eval(*, data_file: str, predictions: str, out: str | None = None) -> dict[str, float]:
    """Score a predictions file against a SQuAD v1.1 / v2.0 file like the official script (``multibert squad-eval``).

    Args:
        data_file: the SQuAD JSON with the gold answers.
        predictions: JSON ``{question_id: answer}`` (as ``multibert predict`` writes; "" means no answer).
        out: also write the scores there as JSON.
    """
    examples, _ = read_squad(data_file)
    preds = json.loads(Path(predictions).read_text(encoding="utf-8"))
    if not isinstance(preds, dict):
        raise ValueError(f"{predictions}: expected a JSON object {{question_id: answer}}")
    gold = {ex.id: ([] if ex.is_impossible else ex.answers) for ex in examples}
    missing = len(set(gold) - set(preds))
    scores = squad_evaluate(preds, gold)
    if missing:
        scores["missing_predictions"] = float(missing)
    text = json.dumps(scores, indent=2)
    if out:
        Path(out).write_text(text + "\n", encoding="utf-8")
    print(text)
    return scores
