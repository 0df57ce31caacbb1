"""SQuAD v1.1 / v2.0 question answering data (Rajpurkar et al., 2016; 2018) for BERT's span fine-tuning
(Devlin et al., 2019, §4.2-4.3), featurised as Google's ``run_squad.py`` does:

- ``[CLS] question [SEP] context window [SEP]``; the question is cut to ``max_query_length`` tokens; a context
  longer than the room left is covered by windows starting every ``doc_stride`` tokens;
- the answer's start / end token in a window are found from the tokenizer's character offsets; a window that
  does not hold the whole answer, and every window of an unanswerable (v2.0 ``is_impossible``) question, points
  at ``[CLS]`` (index 0);
- training uses the first gold answer; examples whose answer text is not at its ``answer_start`` are counted,
  logged and skipped (Google's code skips them too).

Deviation, on purpose: one dataset item is one *question* with all its windows (the batch's ``owner`` maps windows
to questions), so the windows of a question never straddle batches or devices and the per-question answer and
EM / F1 are computed inside the evaluation step. Character offsets from the ``tokenizers`` library replace
Google's whitespace-token bookkeeping and ``get_final_text``: the answer is the exact context substring.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch

from datamodules.finetune.base import FinetuneDataModule, check_file, pad_rows
from multibert.finetune.batch import QABatch

log = logging.getLogger(__name__)


class SquadExample(NamedTuple):
    """One question: id, question, context, gold answer texts and their character starts (empty if none)."""

    id: str
    question: str
    context: str
    answers: list[str]
    answer_starts: list[int]
    is_impossible: bool


def read_squad(path: str | Path) -> tuple[list[SquadExample], str]:
    """The questions of a SQuAD JSON file and its ``version``; raises naming the file and the bad entry."""
    path = check_file(path, "SQuAD")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise ValueError(f"{path}: expected SQuAD JSON {{'version': ..., 'data': [{{'paragraphs': [...]}}]}}")
    examples = []
    for a, article in enumerate(doc["data"]):
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            context = paragraph.get("context")
            if not isinstance(context, str) or not isinstance(paragraph.get("qas"), list):
                raise ValueError(f"{where}: needs a 'context' string and a 'qas' list")
            for q, qa in enumerate(paragraph["qas"]):
                if "id" not in qa or not isinstance(qa.get("question"), str):
                    raise ValueError(f"{where}.qas[{q}]: needs 'id' and a 'question' string")
                answers = qa.get("answers", [])
                if not all(isinstance(x, dict) and "text" in x and "answer_start" in x for x in answers):
                    raise ValueError(f"{where}.qas[{q}] ({qa['id']}): each answer needs 'text' and 'answer_start'")
                examples.append(
                    SquadExample(
                        str(qa["id"]), qa["question"], context,
                        [x["text"] for x in answers], [int(x["answer_start"]) for x in answers],
                        bool(qa.get("is_impossible", False)) or not answers,
                    )
                )
    return examples, str(doc.get("version", ""))


class SquadDataModule(FinetuneDataModule):
    """SQuAD batches (:class:`~multibert.finetune.batch.QABatch`): one item per question, all its windows.

    Args:
        train_file, val_file, test_file, predict_file: SQuAD v1.1 / v2.0 JSON files (``predict_file`` needs no
            answers).
        doc_stride: tokens between the starts of consecutive context windows (BERT: 128).
        max_query_length: question tokens kept (BERT: 64).
        version_2_with_negative: questions may have no answer (predict "" when the ``[CLS]`` span wins); by
            default true when the training file says ``"version": "v2.0"`` or has an unanswerable question.
        **kwargs: the files and settings of :class:`~datamodules.finetune.base.FinetuneDataModule` (``vocab_file``,
            ``train_vocab_size``, ``lowercase``, ``max_seq_length``, ``batch_size``, ``num_workers``, ``predictions_out``,
            ``seed``, ``cache_dir``).(``batch_size`` counts questions).
    """

    model_links: ClassVar[dict[str, str]] = {
        "vocab_size": "config.vocab_size",
        "version_2_with_negative": "version_2_with_negative",
    }

    def __init__(
        self,
        doc_stride: int = 128,
        max_query_length: int = 64,
        version_2_with_negative: bool | None = None,
        max_seq_length: int = 384,
        **kwargs: Any,
    ) -> None:
        super().__init__(max_seq_length=max_seq_length, **kwargs)
        if max_query_length + 3 >= max_seq_length:
            raise ValueError(f"data.max_query_length={max_query_length} leaves no room for context in {max_seq_length} tokens")
        if not 0 < doc_stride:
            raise ValueError(f"data.doc_stride={doc_stride} must be positive")
        self.doc_stride = doc_stride
        self.max_query_length = max_query_length
        self._given_version_2 = version_2_with_negative
        # version_2_with_negative is a model link: kept out of the data's hyperparameters, so that Lightning does
        # not compare the configured value (null) with the resolved one the model holds
        self.save_hyperparameters(ignore=["version_2_with_negative"])

    @functools.cached_property
    def version_2_with_negative(self) -> bool:
        """Whether questions may have no answer: as given, else read from the training file (on first use)."""
        if self._given_version_2 is not None:
            return self._given_version_2
        if self.files["train"] is None:
            return False
        examples, version = read_squad(self.files["train"])
        return version.startswith("v2") or any(ex.is_impossible for ex in examples)

    def training_texts(self) -> list[str]:
        examples, _ = read_squad(self.files["train"])
        contexts = list(dict.fromkeys(ex.context for ex in examples))
        return contexts + [ex.question for ex in examples]

    def read_split(self, split: str, path: Path) -> list[dict[str, Any]]:
        examples, _ = read_squad(path)
        contexts = list(dict.fromkeys(ex.context for ex in examples))
        encoded = dict(zip(contexts, self.tokenizer.encode_batch(contexts, add_special_tokens=False)))
        questions = self.tokenizer.encode_batch([ex.question for ex in examples], add_special_tokens=False)
        items, misplaced, impossible_v1 = [], 0, 0
        for ex, q in zip(examples, questions):
            if ex.is_impossible and not self.version_2_with_negative and split == "train":
                impossible_v1 += 1
                continue
            span = None
            if ex.answers and not ex.is_impossible:
                s, text = ex.answer_starts[0], ex.answers[0]
                if ex.context[s : s + len(text)] != text:
                    misplaced += 1
                    if split == "train":
                        continue
                else:
                    span = (s, s + len(text))
            ctx = encoded[ex.context]
            features = self.features(q.ids[: self.max_query_length], ctx.ids, ctx.offsets, span)
            items.append({"example": ex, "features": features})
        if misplaced:
            log.warning("%s: %d answers are not at their answer_start%s", path, misplaced, " (skipped)" if split == "train" else "")
        if impossible_v1:
            log.warning("%s: %d unanswerable questions skipped (version_2_with_negative is false)", path, impossible_v1)
        return items

    def features(
        self, question: list[int], context: list[int], offsets: list[tuple[int, int]], span: tuple[int, int] | None
    ) -> list[dict[str, Any]]:
        """The windows of one question: ids, segment ids, per-token context offsets, start / end positions."""
        room = self.max_seq_length - len(question) - 3
        starts = [0]
        while starts[-1] + room < len(context):
            starts.append(starts[-1] + self.doc_stride)
        tok_start = tok_end = None
        if span is not None:
            inside = [i for i, (a, b) in enumerate(offsets) if b > span[0] and a < span[1]]
            if inside:
                tok_start, tok_end = inside[0], inside[-1]
        out = []
        for s in starts:
            window = context[s : s + room]
            ids = [self.cls_id, *question, self.sep_id, *window, self.sep_id]
            types = [0] * (len(question) + 2) + [1] * (len(window) + 1)
            first = len(question) + 2  # position of the window's first token
            token_offsets = [None] * first + [tuple(o) for o in offsets[s : s + room]] + [None]
            start = end = 0
            if tok_start is not None and s <= tok_start and tok_end < s + len(window):
                start, end = first + tok_start - s, first + tok_end - s
            out.append({"ids": ids, "types": types, "offsets": token_offsets, "start": start, "end": end})
        return out

    def collate(self, items: list[dict[str, Any]]) -> QABatch:
        rows = [(f, i) for i, item in enumerate(items) for f in item["features"]]
        input_ids, token_type_ids, attention_mask = pad_rows([f["ids"] for f, _ in rows], [f["types"] for f, _ in rows], self.pad_id)
        T = input_ids.size(1)
        examples = [item["example"] for item in items]
        return QABatch(
            input_ids, attention_mask, token_type_ids,
            owner=torch.tensor([i for _, i in rows], dtype=torch.long),
            start_positions=torch.tensor([f["start"] for f, _ in rows], dtype=torch.long),
            end_positions=torch.tensor([f["end"] for f, _ in rows], dtype=torch.long),
            offsets=[f["offsets"] + [None] * (T - len(f["offsets"])) for f, _ in rows],
            ids=[ex.id for ex in examples],
            contexts=[ex.context for ex in examples],
            answers=[[] if ex.is_impossible else list(ex.answers) for ex in examples],
        )
