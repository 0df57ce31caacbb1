"""BERT's masked-LM + next-sentence-prediction examples (Devlin et al., 2019), built the way Google's
``create_pretraining_data.py`` builds them, from planned chunks of sentences. Shared by the memory-mapped path
(:mod:`datamodules.text.datamodule`) and the streaming path (:mod:`datamodules.text.streaming`): the two differ only
in where a chunk's sentences, the document's next sentences and a random other document's sentences come from.

Per document, consecutive sentences are gathered into chunks of a target length (:func:`plan_document`: the full
``max_seq_length - 3``, or with probability ``short_seq_prob`` a random shorter one). For each chunk and epoch
(:meth:`ExampleBuilder.build`), segment A is its first 1..n-1 sentences; B is the rest (label 0, "is next") or,
with probability 0.5, sentences from a random other document (label 1). Over-long pairs are trimmed from the
longer segment, at the front or the back at random (:func:`truncate_pair`). Masks are drawn by
:func:`datamodules.masking.mask_tokens`.

Deviations from Google's generator, on purpose: a chunk of one sentence does not force a random B (Google's code
does, which on corpora of long sentences pushes the "random" share well above 50 %); its true continuation is the
document's next sentences, or, at the end of a document, the sentence split at a random token. Instead of writing
``dupe_factor`` pre-masked copies, every epoch draws fresh split points, random partners and masks from a
generator seeded by ``(seed, epoch, index)``. When B is drawn at random, the unused sentences of the chunk are not
"put back" as Google's code does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from datamodules.masking import mask_tokens
from multibert.core.batch import IGNORE_INDEX, TokenBatch

#: ``following(budget)``: the sentences that truly follow the chunk in its document, taken until ``budget`` tokens.
Following = Callable[[int], np.ndarray]
#: ``random_segment(budget, rng)``: sentences from a random other document, taken until ``budget`` tokens.
RandomSegment = Callable[[int, np.random.Generator], np.ndarray]


def plan_document(
    sentence_lengths: Sequence[int], max_tokens: int, short_seq_prob: float, rng: np.random.Generator
) -> tuple[list[tuple[int, int, int]], list[int]]:
    """Cut one document into chunks of consecutive sentences.

    Returns:
        chunks ``(first sentence, end sentence, target length)`` relative to the document, and each chunk's
        approximate example length (for length bucketing).
    """
    target = max_tokens
    if rng.random() < short_seq_prob:
        target = int(rng.integers(2, max_tokens + 1))
    chunks, lengths = [], []
    start, total, last = 0, 0, len(sentence_lengths) - 1
    for s, n in enumerate(sentence_lengths):
        total += int(n)
        if total >= target or s == last:
            chunks.append((start, s + 1, target))
            lengths.append(min(total, max_tokens) + 3)
            start, total = s + 1, 0
    return chunks, lengths


def take_sentences(offsets: np.ndarray, first: int, limit: int, budget: int) -> int:
    """The end sentence when whole sentences are taken from ``first`` until at least ``budget`` tokens, stopping at
    ``limit``; ``offsets`` are sentence start offsets (sentence s is ``offsets[s]:offsets[s + 1]``)."""
    k = int(np.searchsorted(offsets[first + 1 : limit + 1], offsets[first] + budget, side="left"))
    return min(first + 1 + k, limit)


def truncate_pair(
    a: np.ndarray, b: np.ndarray, max_tokens: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Trim a pair to ``max_tokens`` as Google's generator does, in O(1) instead of one token at a time.

    Google's loop removes one token at a time from the longer segment (B on a tie), each from the front or the back
    with probability 1/2. The lengths it ends at follow in closed form, and the tokens taken from the front of a
    segment are Binomial(removed, 1/2): the same distribution without the loop, which was quadratic on long input.
    """
    la, lb = len(a), len(b)
    excess = la + lb - max_tokens
    if excess <= 0:
        return a, b
    if la > lb and la - excess >= lb:
        new_a, new_b = la - excess, lb
    elif lb >= la and lb - excess >= la:
        new_a, new_b = la, lb - excess
    else:  # both end near half: from equal lengths, B loses the next token, then A, ...
        new_a, new_b = (max_tokens + 1) // 2, max_tokens // 2
    front_a = int(rng.binomial(la - new_a, 0.5))
    front_b = int(rng.binomial(lb - new_b, 0.5))
    return a[front_a : front_a + new_a], b[front_b : front_b + new_b]


@dataclass(frozen=True)
class ExampleBuilder:
    """Turns a chunk of sentences into one masked (pair) example.

    Args:
        special: ids of ``[CLS]``, ``[SEP]``, ``[MASK]`` (at least).
        max_seq_length: length of ``[CLS] A [SEP] B [SEP]`` at most.
        nsp: build sentence pairs with NSP labels; if False, single segments (no pair label).
        mask_prob, max_predictions: see :func:`~datamodules.masking.mask_tokens`.
        replacement_ids: ids for the random 10 % replacements.
        continuation: (V,) True for ``##`` pieces; enables whole-word masking.
    """

    special: dict[str, int]
    max_seq_length: int
    nsp: bool
    mask_prob: float
    max_predictions: int
    replacement_ids: np.ndarray
    continuation: np.ndarray | None = None

    @property
    def max_tokens(self) -> int:
        """Tokens of A and B together (``[CLS]`` and the ``[SEP]`` s excluded)."""
        return self.max_seq_length - (3 if self.nsp else 2)

    def build(
        self,
        tokens: np.ndarray,
        bounds: np.ndarray,
        target: int,
        rng: np.random.Generator,
        following: Following,
        random_segment: RandomSegment,
    ) -> dict:
        """One example: ``input_ids``, ``token_type_ids``, ``mlm_labels`` and (with NSP) ``pair_label``.

        Args:
            tokens: the chunk's tokens, sentence after sentence.
            bounds: (n,) where each of the chunk's n sentences ends in ``tokens`` (``bounds[-1] == len(tokens)``).
            target: the chunk's target length (see :func:`plan_document`).
            rng: the generator seeded for this example and epoch; it decides everything.
            following, random_segment: where the true continuation of a one-sentence chunk and a random other
                document's text come from.
        """
        cls, sep = self.special["[CLS]"], self.special["[SEP]"]
        n = len(bounds)
        if not self.nsp:
            ids = np.concatenate([[cls], tokens[: self.max_tokens], [sep]]).astype(np.int64)
            return self._mask(ids, np.zeros(len(ids), dtype=np.int64), None, rng)
        a_end = int(rng.integers(1, n)) if n >= 2 else 1
        a, b = tokens[: bounds[a_end - 1]], tokens[bounds[a_end - 1] :]
        is_random = int(rng.random() < 0.5)
        if not is_random:
            if a_end == n:  # a one-sentence chunk: the document's next sentences, else the sentence split in two
                b = following(max(1, target - len(a)))
                if len(b) == 0 and len(a) >= 2:
                    cut = int(rng.integers(1, len(a)))
                    a, b = a[:cut], a[cut:]
            is_random = int(len(b) == 0)  # no true continuation exists (a one-token, one-sentence last chunk)
        if is_random:
            b = random_segment(max(1, target - len(a)), rng)
        a, b = truncate_pair(a, b, self.max_tokens, rng)
        ids = np.concatenate([[cls], a, [sep], b, [sep]]).astype(np.int64)
        types = np.zeros(len(ids), dtype=np.int64)
        types[len(a) + 2 :] = 1
        return self._mask(ids, types, is_random, rng)

    def _mask(self, ids: np.ndarray, types: np.ndarray, is_random: int | None, rng: np.random.Generator) -> dict:
        maskable = (ids != self.special["[CLS]"]) & (ids != self.special["[SEP]"])
        word_starts = None if self.continuation is None else ~self.continuation[ids]
        masked, labels = mask_tokens(
            ids,
            rng,
            mask_token_id=self.special["[MASK]"],
            maskable=maskable,
            replacement_ids=self.replacement_ids,
            mask_prob=self.mask_prob,
            max_predictions=self.max_predictions,
            word_starts=word_starts,
        )
        item = {"input_ids": masked, "token_type_ids": types, "mlm_labels": labels}
        if is_random is not None:
            item["pair_label"] = is_random
        return item


def collate_tokens(items: list[dict], pad_token_id: int = 0, pad_to_multiple_of: int = 8) -> TokenBatch:
    """Pad a list of examples to the longest one (rounded up to ``pad_to_multiple_of``) into a :class:`TokenBatch`."""
    T = max(len(it["input_ids"]) for it in items)
    T = -(-T // pad_to_multiple_of) * pad_to_multiple_of
    B = len(items)
    input_ids = torch.full((B, T), pad_token_id, dtype=torch.long)
    token_type_ids = torch.zeros((B, T), dtype=torch.long)
    attention_mask = torch.zeros((B, T), dtype=torch.long)
    mlm_labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    for i, it in enumerate(items):
        n = len(it["input_ids"])
        input_ids[i, :n] = torch.from_numpy(np.asarray(it["input_ids"]))
        token_type_ids[i, :n] = torch.from_numpy(np.asarray(it["token_type_ids"]))
        attention_mask[i, :n] = 1
        if "mlm_labels" in it:
            mlm_labels[i, :n] = torch.from_numpy(np.asarray(it["mlm_labels"]))
    pair = torch.tensor([it["pair_label"] for it in items]) if "pair_label" in items[0] else None
    return TokenBatch(input_ids, attention_mask, token_type_ids, mlm_labels, pair)
