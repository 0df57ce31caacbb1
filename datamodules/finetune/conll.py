"""CoNLL-style token-tag data for NER (Tjong Kim Sang & De Meulder, 2003) as BERT fine-tunes on it (Devlin et al.,
2019, §5.3): each word is split into WordPieces and its tag is predicted from the **first** piece; the other
pieces carry no label (-100).

File format: one ``token ... tag`` line per word (first column the word, last column the tag, so the 4-column
CoNLL-2003 files and 2-column ``token tag`` files both read), a blank line between sentences, ``-DOCSTART-``
lines skipped. Tags are BIO (IOB2) or IOB1; the tag vocabulary is the sorted set of the training split's tags
(``O`` first), linked to the model and saved with it.

Sentences longer than ``max_seq_length`` pieces are cut: the words beyond are counted, logged and, at evaluation,
predicted ``O`` (so the entity F1 still counts their gold entities). Words that the tokenizer turns into no piece
(control characters) are handled the same way.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch

from datamodules.finetune.base import FinetuneDataModule, check_file, pad_rows
from multibert.core.batch import IGNORE_INDEX
from multibert.finetune.batch import TokenTagBatch

log = logging.getLogger(__name__)


class TaggedSentence(NamedTuple):
    words: list[str]
    tags: list[str]


def read_conll(path: str | Path, require_tags: bool = True) -> list[TaggedSentence]:
    """The sentences of a CoNLL file. With ``require_tags`` a line without a tag column raises (naming file and
    line); without, only the first column is read and ``tags`` stay empty."""
    path = check_file(path, "CoNLL")
    sentences, words, tags = [], [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                if words:
                    sentences.append(TaggedSentence(words, tags))
                    words, tags = [], []
                continue
            if parts[0] == "-DOCSTART-":
                continue
            words.append(parts[0])
            if require_tags:
                if len(parts) < 2:
                    raise ValueError(f"{path}:{lineno}: expected 'token tag', got {line.strip()!r}")
                tags.append(parts[-1])
    if words:
        sentences.append(TaggedSentence(words, tags))
    if not sentences:
        raise ValueError(f"{path}: no sentence found")
    return sentences


class ConllDataModule(FinetuneDataModule):
    """Token classification batches (:class:`~multibert.finetune.batch.TokenTagBatch`).

    Args:
        train_file, val_file, test_file, predict_file: CoNLL files (``predict_file``: one word per line, tags
            optional and ignored).
        labels: a fixed tag vocabulary; by default the training split's tags.
        **kwargs: the files and settings of :class:`~datamodules.finetune.base.FinetuneDataModule` (``vocab_file``,
            ``train_vocab_size``, ``lowercase``, ``max_seq_length``, ``batch_size``, ``num_workers``, ``predictions_out``,
            ``seed``, ``cache_dir``).
    """

    model_links: ClassVar[dict[str, str]] = {"vocab_size": "config.vocab_size", "labels": "labels"}

    def __init__(self, labels: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.keep_labels(labels, "tag")
        # the tag vocabulary is a model link: kept out of the data's hyperparameters (see LabelledTextDataModule)
        self.save_hyperparameters(ignore=["labels"])

    def training_labels(self) -> list[str]:
        """``O`` then the sorted tags of the training split."""
        found = {t for s in read_conll(self.files["train"]) for t in s.tags}
        return ["O", *sorted(found - {"O"})]

    def training_texts(self) -> list[str]:
        return [" ".join(s.words) for s in read_conll(self.files["train"])]

    def read_split(self, split: str, path: Path) -> list[dict[str, Any]]:
        predict = split == "predict"
        sentences = read_conll(path, require_tags=not predict)
        unknown = sorted({t for s in sentences for t in s.tags if t and t not in self.label_index})
        if unknown:
            raise ValueError(f"{path}: tags {unknown[:10]} are not in the tag vocabulary {self.labels[:10]}...; pass data.labels")
        encoded = self.tokenizer.encode_batch([s.words for s in sentences], is_pretokenized=True, add_special_tokens=False)
        limit = self.max_seq_length - 2
        items, cut_sentences, dropped_words = [], 0, 0
        for s, enc in zip(sentences, encoded):
            ids = enc.ids[:limit]
            word_ids = enc.word_ids[:limit]
            word_index, labels, seen = [], [], set()
            for w in word_ids:
                first = w is not None and w not in seen
                seen.add(w)
                word_index.append(w if first else -1)
                labels.append(self.label_index[s.tags[w]] if first and not predict else IGNORE_INDEX)
            lost = len(s.words) - len(seen - {None})
            if lost:
                cut_sentences += 1
                dropped_words += lost
            items.append({"ids": ids, "word_index": word_index, "labels": labels, "sentence": s})
        if cut_sentences:
            log.warning(
                "%s: %d sentences lose %d words to the %d-token limit or to empty tokenization; those words are "
                "predicted O", path, cut_sentences, dropped_words, self.max_seq_length,
            )
        return items

    def collate(self, items: list[dict[str, Any]]) -> TokenTagBatch:
        rows = [[self.cls_id, *it["ids"], self.sep_id] for it in items]
        input_ids, token_type_ids, attention_mask = pad_rows(rows, [[0] * len(r) for r in rows], self.pad_id)
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        word_index = torch.full_like(input_ids, -1)
        for i, it in enumerate(items):  # row i holds [CLS] pieces [SEP]: pieces start at position 1
            n = len(it["ids"])
            labels[i, 1 : n + 1] = torch.tensor(it["labels"], dtype=torch.long)
            word_index[i, 1 : n + 1] = torch.tensor(it["word_index"], dtype=torch.long)
        return TokenTagBatch(
            input_ids, attention_mask, token_type_ids, labels, word_index,
            [it["sentence"].words for it in items], [it["sentence"].tags for it in items],
        )
