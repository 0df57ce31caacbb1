"""WordPiece vocabularies: train one with the ``tokenizers`` library, or load a checkpoint's ``vocab.txt``.

Special tokens follow BERT's checkpoints: ``[PAD]`` is id 0 (so ``pad_token_id = 0`` holds for trained and
downloaded vocabularies alike); ``[UNK]``, ``[CLS]``, ``[SEP]``, ``[MASK]`` are looked up by name.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

import numpy as np
from tokenizers import BertWordPieceTokenizer

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def load_wordpiece(vocab_file: str | Path, lowercase: bool = True) -> BertWordPieceTokenizer:
    """A fast WordPiece tokenizer over ``vocab_file`` (one token per line); checks BERT's special tokens exist."""
    vocab_file = Path(vocab_file)
    if not vocab_file.is_file():
        raise FileNotFoundError(f"vocabulary file {vocab_file} does not exist")
    with open(vocab_file, encoding="utf-8") as f:
        vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise ValueError(f"vocabulary {vocab_file} lacks the special tokens {missing}")
    if vocab["[PAD]"] != 0:
        raise ValueError(f"vocabulary {vocab_file} has [PAD] at id {vocab['[PAD]']}; multibert expects it at id 0")
    return BertWordPieceTokenizer(str(vocab_file), lowercase=lowercase)


def train_wordpiece(
    texts: Iterable[str],
    vocab_size: int,
    out_file: str | Path,
    lowercase: bool = True,
    min_frequency: int = 2,
    show_progress: bool | None = None,
) -> Path:
    """Train a WordPiece vocabulary on ``texts`` and write ``vocab.txt`` atomically (safe when ranks race).

    ``show_progress``: the ``tokenizers`` library's own bar (default: only when stderr is a terminal, since the bar
    makes an unreadable log otherwise; the text reader then reports progress as log lines).
    """
    if show_progress is None:
        show_progress = sys.stderr.isatty()
    tokenizer = BertWordPieceTokenizer(lowercase=lowercase, clean_text=True, handle_chinese_chars=True)
    tokenizer.train_from_iterator(
        texts,
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        wordpieces_prefix="##",
        show_progress=show_progress,
    )
    vocab = tokenizer.get_vocab()
    if len(vocab) <= len(SPECIAL_TOKENS):
        raise ValueError("the corpus yielded no vocabulary: is it empty?")
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_file.parent, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        for token, _ in sorted(vocab.items(), key=lambda kv: kv[1]):
            f.write(token + "\n")
    os.replace(tmp, out_file)
    log.info("trained a WordPiece vocabulary of %d tokens → %s", len(vocab), out_file)
    return out_file


def continuation_mask(tokenizer: BertWordPieceTokenizer) -> np.ndarray:
    """Boolean (V,): True for ``##`` pieces that continue a word (whole-word masking needs it)."""
    vocab = tokenizer.get_vocab()
    mask = np.zeros(len(vocab), dtype=bool)
    for token, i in vocab.items():
        mask[i] = token.startswith("##")
    return mask


class Vocabulary:
    """A WordPiece vocabulary and the ids a masking data pipeline derives from it.

    Args:
        path: the ``vocab.txt`` (one token per line; BERT's special tokens present, ``[PAD]`` at id 0).
        lowercase: lower-case and strip accents when tokenizing (uncased BERT).
    """

    def __init__(self, path: str | Path, lowercase: bool = True) -> None:
        self.path = Path(path)
        self.lowercase = lowercase
        self.tokenizer = load_wordpiece(self.path, lowercase=lowercase)
        self.size = self.tokenizer.get_vocab_size()

    @cached_property
    def special(self) -> dict[str, int]:
        """Ids of ``[PAD]``, ``[UNK]``, ``[CLS]``, ``[SEP]``, ``[MASK]``."""
        vocab = self.tokenizer.get_vocab()
        return {t: vocab[t] for t in SPECIAL_TOKENS}

    @cached_property
    def replacement_ids(self) -> np.ndarray:
        """Ids the 10 % random replacements of masked-LM draw from: every token but ``[...]`` ones."""
        vocab = self.tokenizer.get_vocab()
        bracketed = {i for t, i in vocab.items() if t.startswith("[") and t.endswith("]")}
        return np.array(sorted(set(range(self.size)) - bracketed - set(self.special.values())), dtype=np.int64)

    def continuation(self) -> np.ndarray:
        """See :func:`continuation_mask`."""
        return continuation_mask(self.tokenizer)

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")
