"""Labelled text for sequence classification: CSV / TSV / JSONL files with a text (and optional second text) and
one label or a set of labels; docBERT (Adhikari et al., 2019) and patentBERT (Lee & Hsiang, 2019) read this.

- The format follows the suffix (``.csv``, ``.tsv``, ``.jsonl`` / ``.json``); a file whose suffix says nothing
  (SciCite ships JSON lines as ``.txt``) is recognised by its first line — a JSON object, or a tab- or
  comma-separated header that names the text field — and what was recognised is logged.
- Labels are strings (``H04L``, ``noun.food``, ``positive``, ``3``); the **label vocabulary** is the sorted set of
  labels of the training split (or given explicitly by ``labels``), passed to the model through ``model_links``
  and so saved in the checkpoint's hyperparameters; the datamodule's ``state_dict`` keeps it too and a run that
  resumes or predicts with a different one fails with a clear message.
- Multi-label records hold a JSON list (JSONL) or a string split at ``label_separator`` (CSV). Validation / test
  records whose label is not in the vocabulary are counted and logged; their unknown labels are dropped (a
  single-label record with an unknown label is skipped).
- Long documents: ``long_documents="truncate"`` keeps the first ``max_seq_length - 2`` tokens (docBERT);
  ``"windows"`` cuts the document into windows of that many tokens every ``window_stride`` tokens (at most
  ``max_windows``; documents needing more are counted, logged and cut), and the model pools the windows'
  ``[CLS]`` vectors. A document that fits one window gives exactly the truncation input.
- Sentence pairs (``text_pair_field``) are encoded ``[CLS] a [SEP] b [SEP]`` and trimmed longest-first
  (truncation only).
"""

from __future__ import annotations

import csv
import functools
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

import torch

from datamodules.finetune.base import FinetuneDataModule, check_file, pad_rows
from multibert.finetune.batch import ClassificationBatch

log = logging.getLogger(__name__)


class LabelledText(NamedTuple):
    """One record: id, text, optional second text, label strings (empty when unlabelled)."""

    id: str
    text: str
    text_pair: str | None
    labels: list[str]


def read_labelled(
    path: str | Path,
    text_field: str = "text",
    label_field: str = "label",
    text_pair_field: str | None = None,
    id_field: str | None = "id",
    label_separator: str | None = None,
    require_labels: bool = True,
) -> Iterator[LabelledText]:
    """Records of a ``.csv`` / ``.tsv`` / ``.jsonl`` file; raises naming the file, line and field on bad input."""
    path = check_file(path, "labelled data")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".jsonl", ".json"):
        suffix = recognise_format(path, text_field)
    if suffix in (".csv", ".tsv"):
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            for lineno, row in enumerate(reader, start=2):
                yield _record(row, path, lineno, text_field, label_field, text_pair_field, id_field, label_separator, require_labels)
    elif suffix in (".jsonl", ".json"):
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: not a JSON object per line ({e})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
                yield _record(row, path, lineno, text_field, label_field, text_pair_field, id_field, label_separator, require_labels)
    else:
        raise ValueError(f"{path}: unknown format {suffix!r}; expected .csv, .tsv or .jsonl")


@functools.lru_cache(maxsize=64)
def recognise_format(path: Path, text_field: str = "text") -> str:
    """``.jsonl``, ``.tsv`` or ``.csv`` for a file whose suffix says nothing, from its first non-empty line (logged
    once per file)."""
    first = ""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                first = line.strip()
                break
    found, how = None, ""
    if first.startswith("{"):
        try:
            if isinstance(json.loads(first), dict):
                found, how = ".jsonl", "JSON lines (the first line is a JSON object)"
        except json.JSONDecodeError:
            pass
    if found is None and text_field in first.split("\t"):
        found, how = ".tsv", f"tab-separated values (the header names {text_field!r})"
    if found is None and first and text_field in next(csv.reader([first])):
        found, how = ".csv", f"comma-separated values (the header names {text_field!r})"
    if found is None:
        raise ValueError(
            f"{path}: unknown format {path.suffix!r}: expected .csv, .tsv or .jsonl, and the first line is neither a "
            f"JSON object nor a header naming the text field {text_field!r}"
        )
    log.info("%s: read as %s; the suffix %r says nothing", path, how, path.suffix)
    return found


def _record(row, path, lineno, text_field, label_field, text_pair_field, id_field, separator, require_labels) -> LabelledText:
    where = f"{path}:{lineno}"
    text = row.get(text_field)
    if not isinstance(text, str):
        raise ValueError(f"{where}: field {text_field!r} missing or not a string (fields: {sorted(row)})")
    pair = None
    if text_pair_field:
        pair = row.get(text_pair_field)
        if not isinstance(pair, str):
            raise ValueError(f"{where}: field {text_pair_field!r} missing or not a string")
    raw = row.get(label_field)
    if raw is None or raw == "":
        if require_labels:
            raise ValueError(f"{where}: field {label_field!r} missing (fields: {sorted(row)})")
        labels = []
    elif isinstance(raw, list):
        labels = [str(x) for x in raw]
    elif separator is not None and isinstance(raw, str):
        labels = [x.strip() for x in raw.split(separator) if x.strip()]
    else:
        labels = [str(raw)]
    ident = row.get(id_field) if id_field else None
    return LabelledText(str(ident) if ident not in (None, "") else str(lineno), text, pair, labels)


class LabelledTextDataModule(FinetuneDataModule):
    """Sequence classification batches (:class:`~multibert.finetune.batch.ClassificationBatch`).

    Args:
        train_file, val_file, test_file, predict_file: ``.csv`` / ``.tsv`` / ``.jsonl`` files (``predict_file``
            may lack labels).
        text_field: the text column / key.
        label_field: the label column / key (a string, a number, or a JSON list of them).
        text_pair_field: optional second text (sentence-pair tasks).
        id_field: optional id column / key (else the line number).
        multi_label: each record has a set of labels (sigmoid / BCE in the model).
        label_separator: for CSV multi-label columns, the separator between labels (e.g. ``" "`` or ``","``).
        labels: a fixed label vocabulary; by default the sorted labels of the training split.
        long_documents: ``truncate`` (first window only) or ``windows`` (sliding windows, pooled by the model).
        window_stride: tokens between the starts of consecutive windows (default: no overlap).
        max_windows: at most this many windows per document.
        **kwargs: the files and settings of :class:`~datamodules.finetune.base.FinetuneDataModule` (``vocab_file``,
            ``train_vocab_size``, ``lowercase``, ``max_seq_length``, ``batch_size``, ``num_workers``, ``predictions_out``,
            ``seed``, ``cache_dir``).
    """

    model_links: ClassVar[dict[str, str]] = {
        "vocab_size": "config.vocab_size",
        "labels": "labels",
        "multi_label": "multi_label",
    }

    def __init__(
        self,
        text_field: str = "text",
        label_field: str = "label",
        text_pair_field: str | None = None,
        id_field: str | None = "id",
        multi_label: bool = False,
        label_separator: str | None = None,
        labels: list[str] | None = None,
        long_documents: Literal["truncate", "windows"] = "truncate",
        window_stride: int | None = None,
        max_windows: int = 8,
        **kwargs: Any,
    ) -> None:
        self.fields = dict(
            text_field=text_field, label_field=label_field, text_pair_field=text_pair_field, id_field=id_field,
            label_separator=label_separator,
        )
        if long_documents not in ("truncate", "windows"):
            raise ValueError(f"data.long_documents={long_documents!r}; expected 'truncate' or 'windows'")
        if long_documents == "windows" and text_pair_field:
            raise ValueError("sliding windows are for single texts; use long_documents='truncate' with text pairs")
        super().__init__(**kwargs)
        self.multi_label = multi_label
        self.long_documents = long_documents
        self.window_length = self.max_seq_length - 2
        self.window_stride = window_stride or self.window_length
        if not 0 < self.window_stride <= self.window_length:
            raise ValueError(f"data.window_stride={window_stride} must be in [1, max_seq_length - 2 = {self.window_length}]")
        self.max_windows = max_windows
        self.keep_labels(labels)
        # the label vocabulary is a model link (model.labels holds it): keeping it out of the data's hyperparameters
        # spares Lightning comparing the configured value (null) with the resolved one
        self.save_hyperparameters(ignore=["labels"])

    def training_labels(self) -> list[str]:
        """The sorted labels of the training split."""
        found = sorted({label for r in self._read(self.files["train"], True) for label in r.labels})
        if not found:
            raise ValueError(f"{self.files['train']}: no label found in field {self.fields['label_field']!r}")
        return found

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def _read(self, path: Path, require_labels: bool) -> list[LabelledText]:
        return list(read_labelled(path, require_labels=require_labels, **self.fields))

    def training_texts(self) -> list[str]:
        records = self._read(self.files["train"], False)
        return [r.text for r in records] + [r.text_pair for r in records if r.text_pair]

    # ----------------------------------------------------------------- examples
    def read_split(self, split: str, path: Path) -> list[dict[str, Any]]:
        records = self._read(path, require_labels=split != "predict")
        texts = [r.text for r in records]
        encoded = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        pairs = None
        if self.fields["text_pair_field"]:
            pairs = self.tokenizer.encode_batch([r.text_pair for r in records], add_special_tokens=False)
        examples, unknown, skipped, cut = [], 0, 0, 0
        for i, r in enumerate(records):
            if split == "predict":  # labels, if the file has them, are not read: every record is predicted
                r = r._replace(labels=[])
            label_ids = [self.label_index[x] for x in r.labels if x in self.label_index]
            if len(label_ids) < len(r.labels):
                unknown += 1
                if not self.multi_label:
                    skipped += 1
                    continue
            if not self.multi_label and len(r.labels) > 1:
                raise ValueError(f"{path}: record {r.id} has {len(r.labels)} labels; set data.multi_label=true")
            ids = encoded[i].ids
            if pairs is not None:
                windows = [self._pair(ids, pairs[i].ids)]
            else:
                windows, was_cut = self.windows(ids)
                cut += was_cut
            examples.append({"id": r.id, "windows": windows, "labels": label_ids if r.labels else None})
        if unknown:
            log.warning(
                "%s: %d records carry labels outside the training label vocabulary (%d skipped, the rest keep their "
                "known labels)", path, unknown, skipped,
            )
        if cut:
            limit = f"{self.max_windows} windows" if self.long_documents == "windows" else f"{self.window_length} tokens"
            log.info("%s: %d of %d documents are longer than %s and were cut", path, cut, len(records), limit)
        return examples

    def windows(self, ids: list[int]) -> tuple[list[tuple[list[int], list[int]]], bool]:
        """``[CLS] piece [SEP]`` windows of one document's token ids and whether the document was cut short.

        With ``truncate`` this is the first window only; with ``windows`` a window starts every ``window_stride``
        tokens until one reaches the end.
        """
        L, S = self.window_length, self.window_stride
        starts = [0]
        if self.long_documents == "windows":
            while starts[-1] + L < len(ids):
                starts.append(starts[-1] + S)
        cut = len(starts) > self.max_windows or (self.long_documents == "truncate" and len(ids) > L)
        starts = starts[: self.max_windows]
        out = []
        for s in starts:
            piece = [self.cls_id, *ids[s : s + L], self.sep_id]
            out.append((piece, [0] * len(piece)))
        return out, cut

    def _pair(self, a: list[int], b: list[int]) -> tuple[list[int], list[int]]:
        a, b = list(a), list(b)
        while len(a) + len(b) > self.max_seq_length - 3:
            (a if len(a) >= len(b) else b).pop()
        ids = [self.cls_id, *a, self.sep_id, *b, self.sep_id]
        return ids, [0] * (len(a) + 2) + [1] * (len(b) + 1)

    def collate(self, examples: list[dict[str, Any]]) -> ClassificationBatch:
        rows = [(w, i) for i, ex in enumerate(examples) for w in ex["windows"]]
        input_ids, token_type_ids, attention_mask = pad_rows([w[0] for w, _ in rows], [w[1] for w, _ in rows], self.pad_id)
        owner = torch.tensor([i for _, i in rows], dtype=torch.long)
        labels = None
        if all(ex["labels"] is not None for ex in examples):
            if self.multi_label:
                labels = torch.zeros((len(examples), self.num_labels))
                for i, ex in enumerate(examples):
                    labels[i, ex["labels"]] = 1.0
            else:
                labels = torch.tensor([ex["labels"][0] for ex in examples], dtype=torch.long)
        return ClassificationBatch(input_ids, attention_mask, token_type_ids, owner, labels, [ex["id"] for ex in examples])
