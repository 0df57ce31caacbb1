"""What the two text pretraining datamodules share: their arguments, the vocabulary (read or trained lazily, on the
first read of ``vocab_size``, never in ``__init__``), the example builder and the vocabulary check on resume."""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as pl
import numpy as np

from datamodules import default_cache_dir, resolve_path
from datamodules.text.corpus import MAX_SENTENCE_CHARS, check_encoding
from datamodules.text.examples import ExampleBuilder
from datamodules.text.vocab import cached_vocabulary
from datamodules.tokenizer import Vocabulary

log = logging.getLogger(__name__)


class TextDataModuleBase(pl.LightningDataModule):
    """MLM + NSP batches of text; the subclasses decide where the text comes from.

    Args:
        vocab_file: a WordPiece ``vocab.txt`` (e.g. a checkpoint's). If not given, one of ``train_vocab_size``
            tokens is trained on the corpus with ``tokenizers`` and cached (on the first read of ``vocab_size``,
            which the ``multibert`` command does before it builds the model).
        train_vocab_size: size of the vocabulary to train when ``vocab_file`` is not given.
        lowercase: lower-case and strip accents (uncased BERT).
        max_seq_length: tokens per example, ``[CLS]`` and ``[SEP]`` included.
        short_seq_prob: probability of a shorter target length per document (BERT: 0.1).
        nsp: build sentence pairs and NSP labels (False: single segments, MLM only).
        mask_prob: share of tokens to predict (BERT: 0.15).
        max_predictions_per_seq: cap on predicted tokens per example (BERT: 20 at length 128).
        whole_word_masking: mask all pieces of a word together.
        val_fraction: share of documents held out for validation.
        batch_size: examples per batch and per device.
        num_workers: DataLoader worker processes.
        seed: seeds the split, the chunking, the order and the masks.
        cache_dir: where vocabularies and token caches go (default ``$MULTIBERT_CACHE`` or ``~/.cache/multibert``).
        encoding: the corpus files' text encoding (utf-8, latin-1, cp1252, ...).
        max_sentence_chars: a longer line is split at sentence punctuation, and a longer sentence is cut (counted
            and reported), so one huge line cannot stall reading or training.
    """

    #: data-decided values the CLI passes to the model (see :mod:`multibert.cli`)
    model_links: ClassVar[dict[str, str]] = {"vocab_size": "config.vocab_size"}

    def __init__(
        self,
        vocab_file: str | None = None,
        train_vocab_size: int = 30522,
        lowercase: bool = True,
        max_seq_length: int = 128,
        short_seq_prob: float = 0.1,
        nsp: bool = True,
        mask_prob: float = 0.15,
        max_predictions_per_seq: int = 20,
        whole_word_masking: bool = False,
        val_fraction: float = 0.01,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 42,
        cache_dir: str | None = None,
        encoding: str = "utf-8",
        max_sentence_chars: int = MAX_SENTENCE_CHARS,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if max_seq_length < 8:
            raise ValueError(f"max_seq_length={max_seq_length} is too short for [CLS] A [SEP] B [SEP]")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction={val_fraction} must be in [0, 1)")
        if max_sentence_chars < 1:
            raise ValueError(f"max_sentence_chars={max_sentence_chars} must be positive")
        check_encoding(encoding)
        if vocab_file is not None and not resolve_path(vocab_file).is_file():
            raise FileNotFoundError(f"data.vocab_file {vocab_file} does not exist")
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()

    # -- the vocabulary: built on first use -------------------------------------------------------------------

    def _vocab_path(self) -> Path:
        if self.hparams.vocab_file:
            return resolve_path(self.hparams.vocab_file)
        return self._trained_vocab(self._vocab_corpus())

    def _vocab_corpus(self) -> list[Path]:
        """The files a vocabulary is trained on when none is given."""
        raise NotImplementedError

    def _trained_vocab(self, files: list[Path]) -> Path:
        hp = self.hparams
        return cached_vocabulary(
            files, hp.train_vocab_size, hp.lowercase, self.cache_dir, hp.encoding, hp.max_sentence_chars
        )

    @cached_property
    def vocab(self) -> Vocabulary:
        """The WordPiece vocabulary (trained and cached on first use when no ``vocab_file`` is given)."""
        return Vocabulary(self._vocab_path(), lowercase=self.hparams.lowercase)

    @property
    def vocab_size(self) -> int:
        return self.vocab.size

    @property
    def special(self) -> dict[str, int]:
        return self.vocab.special

    @property
    def pad_token_id(self) -> int:
        return self.vocab.special["[PAD]"]

    @property
    def replacement_ids(self) -> np.ndarray:
        return self.vocab.replacement_ids

    def example_builder(self) -> ExampleBuilder:
        hp = self.hparams
        return ExampleBuilder(
            special=self.vocab.special,
            max_seq_length=hp.max_seq_length,
            nsp=hp.nsp,
            mask_prob=hp.mask_prob,
            max_predictions=hp.max_predictions_per_seq,
            replacement_ids=self.vocab.replacement_ids,
            continuation=self.vocab.continuation() if hp.whole_word_masking else None,
        )

    def _warn_without_validation(self, what: str, documents: int) -> None:
        if self.hparams.val_fraction > 0:
            log.warning(
                "%s: no validation split remains (%d documents, val_fraction=%s), so validation is skipped; give a "
                "corpus of more documents (a blank line or a JSONL record ends a document) or a larger val_fraction",
                what, documents, self.hparams.val_fraction,
            )

    # -- the vocabulary travels with every checkpoint ------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The vocabulary travels inside every checkpoint, so export and resumption never look for the file."""
        return {"vocab": self.vocab.text}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("vocab") is not None and state["vocab"] != self.vocab.text:
            raise ValueError(
                f"the checkpoint was trained with a different vocabulary than {self.vocab.path}; "
                "resume with the same data.vocab_file (or the same corpus and train_vocab_size)"
            )
