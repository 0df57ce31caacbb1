"""Text pretraining data: BERT's masked-LM + next-sentence-prediction examples (Devlin et al., 2019), built the
way Google's ``create_pretraining_data.py`` builds them, but on the fly from a memory-mapped token cache.

Per document, consecutive sentences are gathered into chunks of a target length (the full ``max_seq_length - 3``,
or with probability ``short_seq_prob`` a random shorter one). For each chunk and epoch, segment A is its first
1..n-1 sentences; B is the rest (label 0, "is next") or, with probability 0.5, sentences from a random other
document (label 1). Over-long pairs are trimmed one token at a time from the longer segment, at the front or the
back at random. Masks are drawn by :func:`datamodules.masking.mask_tokens`.

Deviations from Google's generator, on purpose: a chunk of one sentence does not force a random B (Google's code
does, which on corpora of long sentences pushes the "random" share well above 50 %); its true continuation is the
document's next sentences, or, at the end of a document, the sentence split at a random token. And instead of writing ``dupe_factor`` pre-masked copies, every epoch
draws fresh split points, random partners and masks from a generator seeded by ``(seed, epoch, index)``, so a
run is reproducible, needs no pre-generation pass, and a resumed run sees exactly the data an uninterrupted one
would. When B is drawn at random, the unused sentences of the chunk are not "put back" as Google's code does.

Sharding: each rank reads a disjoint slice of the shuffled example order (:class:`EpochSampler`); batches are
formed from examples of similar length and padded only to the longest in the batch (to a multiple of 8).
"""

from __future__ import annotations

import hashlib
import logging
import os
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler
from torchdata.stateful_dataloader import StatefulDataLoader as DataLoader

from datamodules import default_cache_dir, resolve_path
from datamodules.masking import mask_tokens
from datamodules.text.corpus import (
    TokenizedCorpus,
    _check_files,
    cache_key,
    iter_corpus_text,
    open_tokenized,
    tokenize_corpus,
)
from datamodules.tokenizer import SPECIAL_TOKENS, continuation_mask, load_wordpiece, train_wordpiece
from multibert.core.batch import IGNORE_INDEX, TokenBatch

log = logging.getLogger(__name__)


def truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Trim the longer segment one token at a time, from the front or the back at random, until both fit."""
    a, b = list(a), list(b)
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()
    return a, b


class NSPDataset(Dataset):
    """MLM + NSP examples over the documents of one split. Items are addressed by ``(epoch, index)``.

    Args:
        corpus: the memory-mapped tokenized corpus.
        documents: ids of the documents of this split.
        special: ids of ``[CLS]``, ``[SEP]``, ``[MASK]``.
        max_seq_length: length of ``[CLS] A [SEP] B [SEP]`` at most.
        short_seq_prob: probability that a document's chunks target a random shorter length.
        nsp: build sentence pairs with NSP labels; if False, single segments (no pair label).
        mask_prob, max_predictions: see :func:`~datamodules.masking.mask_tokens`.
        replacement_ids: ids for the random 10 % replacements.
        continuation: (V,) True for ``##`` pieces; enables whole-word masking.
        seed: base seed.
        plan_dir: where to cache the chunk plan (one pass over all sentences) for later runs.
    """

    def __init__(
        self,
        corpus: TokenizedCorpus,
        documents: np.ndarray,
        special: dict[str, int],
        max_seq_length: int,
        short_seq_prob: float,
        nsp: bool,
        mask_prob: float,
        max_predictions: int,
        replacement_ids: np.ndarray,
        continuation: np.ndarray | None,
        seed: int,
        plan_dir: Path | None = None,
    ) -> None:
        self.corpus = corpus
        self.documents = np.asarray(documents)
        self.special = special
        self.max_seq_length = max_seq_length
        self.max_tokens = max_seq_length - (3 if nsp else 2)
        self.nsp = nsp
        self.mask_prob = mask_prob
        self.max_predictions = max_predictions
        self.replacement_ids = replacement_ids
        self.continuation = continuation
        self.seed = seed
        self.chunks, self.lengths = self._cached_plan(short_seq_prob, plan_dir)
        if len(self.chunks) == 0:
            raise ValueError("the corpus split yields no training example")

    def _cached_plan(self, short_seq_prob: float, plan_dir: Path | None) -> tuple[np.ndarray, np.ndarray]:
        if plan_dir is None:
            return self._plan(short_seq_prob)
        key = hashlib.sha1(
            f"{self.seed}|{self.max_tokens}|{short_seq_prob}|".encode() + np.ascontiguousarray(self.documents).tobytes()
        ).hexdigest()[:16]
        path = Path(plan_dir) / f"plan-{key}.npz"
        if path.is_file():
            cached = np.load(path)
            return cached["chunks"], cached["lengths"]
        chunks, lengths = self._plan(short_seq_prob)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, chunks=chunks, lengths=lengths)
        os.replace(tmp, path)
        return chunks, lengths

    def _plan(self, short_seq_prob: float) -> tuple[np.ndarray, np.ndarray]:
        """Chunks ``(doc, first sentence, end sentence, target length)`` and each chunk's approximate length."""
        doc_off = np.asarray(self.corpus.document_offsets)
        sent_len = self.corpus.sentence_lengths
        chunks, lengths = [], []
        for d in self.documents:
            rng = np.random.default_rng([self.seed, 7, int(d)])
            target = self.max_tokens
            if rng.random() < short_seq_prob:
                target = int(rng.integers(2, self.max_tokens + 1))
            start, total = int(doc_off[d]), 0
            end_doc = int(doc_off[d + 1])
            for s in range(start, end_doc):
                total += int(sent_len[s])
                if total >= target or s == end_doc - 1:
                    chunks.append((int(d), start, s + 1, target))
                    lengths.append(min(total, self.max_tokens) + 3)
                    start, total = s + 1, 0
        return np.asarray(chunks, dtype=np.int64).reshape(-1, 4), np.asarray(lengths, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.chunks)

    def _sentences(self, first: int, end: int) -> list[int]:
        off = self.corpus.sentence_offsets
        return self.corpus.tokens[off[first] : off[end]].astype(np.int64).tolist()

    def __getitem__(self, key: tuple[int, int]) -> dict[str, np.ndarray]:
        epoch, index = key
        rng = np.random.default_rng([self.seed, int(epoch), int(index)])
        doc, first, end, target = (int(x) for x in self.chunks[index])
        n = end - first
        if not self.nsp:
            tokens = self._sentences(first, end)[: self.max_tokens]
            ids = [self.special["[CLS]"], *tokens, self.special["[SEP]"]]
            types = [0] * len(ids)
            return self._mask(ids, types, None, rng)
        a_end = first + (int(rng.integers(1, n)) if n >= 2 else 1)
        a = self._sentences(first, a_end)
        is_random = int(rng.random() < 0.5)
        if not is_random:
            a, b = self._next_segment(a, a_end, end, doc, target, rng)
            is_random = int(not b)  # no true continuation exists (a one-token, one-sentence last chunk)
        if is_random:
            b = self._random_segment(doc, max(1, target - len(a)), rng)
        a, b = truncate_pair(a, b, self.max_tokens, rng)
        cls, sep = self.special["[CLS]"], self.special["[SEP]"]
        ids = [cls, *a, sep, *b, sep]
        types = [0] * (len(a) + 2) + [1] * (len(b) + 1)
        return self._mask(ids, types, is_random, rng)

    def _next_segment(
        self, a: list[int], a_end: int, end: int, doc: int, target: int, rng: np.random.Generator
    ) -> tuple[list[int], list[int]]:
        """A and the text that truly follows it: the rest of the chunk; for a one-sentence chunk, the document's
        next sentences; for a one-sentence chunk that ends its document, the sentence split at a random token."""
        if a_end < end:
            return a, self._sentences(a_end, end)
        doc_end = int(self.corpus.document_offsets[doc + 1])
        b: list[int] = []
        s = a_end
        while s < doc_end and len(b) < max(1, target - len(a)):
            b.extend(self._sentences(s, s + 1))
            s += 1
        if b:
            return a, b
        if len(a) >= 2:
            cut = int(rng.integers(1, len(a)))
            return a[:cut], a[cut:]
        return a, []

    def _random_segment(self, doc: int, target: int, rng: np.random.Generator) -> list[int]:
        doc_off = self.corpus.document_offsets
        other = doc
        for _ in range(10):  # as Google's generator: a few tries to find a different document
            other = int(self.documents[rng.integers(len(self.documents))])
            if other != doc:
                break
        lo, hi = int(doc_off[other]), int(doc_off[other + 1])
        s = int(rng.integers(lo, hi))
        out: list[int] = []
        while s < hi and len(out) < target:
            out.extend(self._sentences(s, s + 1))
            s += 1
        return out

    def _mask(self, ids: list[int], types: list[int], is_random: int | None, rng: np.random.Generator) -> dict:
        ids_arr = np.asarray(ids, dtype=np.int64)
        maskable = (ids_arr != self.special["[CLS]"]) & (ids_arr != self.special["[SEP]"])
        word_starts = None if self.continuation is None else ~self.continuation[ids_arr]
        masked, labels = mask_tokens(
            ids_arr,
            rng,
            mask_token_id=self.special["[MASK]"],
            maskable=maskable,
            replacement_ids=self.replacement_ids,
            mask_prob=self.mask_prob,
            max_predictions=self.max_predictions,
            word_starts=word_starts,
        )
        item = {"input_ids": masked, "token_type_ids": np.asarray(types, dtype=np.int64), "mlm_labels": labels}
        if is_random is not None:
            item["pair_label"] = is_random
        return item


class EpochSampler(DistributedSampler):
    """Yields ``(epoch, index)`` keys: a seeded shuffle per epoch, one disjoint shard per rank, and (optionally)
    length bucketing — within windows of ``bucket_batches`` batches, examples are sorted by length so a batch
    holds similar lengths, then the batches are shuffled.

    A ``DistributedSampler`` subclass, so Lightning keeps it under DDP instead of replacing it, and calls
    ``set_epoch`` on it. ``fixed_epoch`` pins the epoch (validation data keeps the same masks every epoch).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        lengths: np.ndarray | None = None,
        bucket_batches: int = 50,
        fixed_epoch: int | None = None,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.batch_size = batch_size
        self.lengths = lengths
        self.bucket_batches = bucket_batches
        self.fixed_epoch = fixed_epoch

    def __iter__(self):
        epoch = self.epoch if self.fixed_epoch is None else self.fixed_epoch
        n = len(self.dataset)
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        if self.total_size > n:  # pad so that every rank gets the same number of examples
            order = np.concatenate([order, order[: self.total_size - n]])
        order = order[self.rank : self.total_size : self.num_replicas]
        if self.lengths is not None:
            window = self.batch_size * self.bucket_batches
            batches = []
            for w in range(0, len(order), window):
                chunk = order[w : w + window]
                chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
                batches.extend(chunk[b : b + self.batch_size] for b in range(0, len(chunk), self.batch_size))
            if self.shuffle:
                batches = [batches[i] for i in rng.permutation(len(batches))]
            order = np.concatenate(batches) if batches else order
        return iter([(epoch, int(i)) for i in order])


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


class TextPretrainingDataModule(pl.LightningDataModule):
    """MLM + NSP batches from a raw text corpus.

    Args:
        corpus: one or more files in BERT's format (one sentence per line, blank line between documents) or
            JSONL with a ``text`` field.
        vocab_file: a WordPiece ``vocab.txt`` (e.g. a checkpoint's). If not given, one of ``train_vocab_size``
            tokens is trained on the corpus with ``tokenizers`` and cached.
        train_vocab_size: size of the vocabulary to train when ``vocab_file`` is not given.
        lowercase: lower-case and strip accents (uncased BERT).
        max_seq_length: tokens per example, ``[CLS]`` and ``[SEP]`` included.
        short_seq_prob: probability of a shorter target length per document (BERT: 0.1).
        nsp: build sentence pairs and NSP labels (False: single segments, MLM only).
        mask_prob: share of tokens to predict (BERT: 0.15).
        max_predictions_per_seq: cap on predicted tokens per example (BERT: 20 at length 128).
        whole_word_masking: mask all pieces of a word together.
        val_fraction: share of documents held out for validation (at least one when there are two or more).
        batch_size: examples per batch and per device.
        num_workers: DataLoader worker processes.
        bucket_by_length: batch examples of similar length together (less padding).
        seed: seeds the split, the chunking, the order and the masks.
        cache_dir: where vocabularies and token caches go (default ``$MULTIBERT_CACHE`` or ``~/.cache/multibert``).
    """

    #: data-decided values the CLI passes to the model (see :mod:`multibert.cli`)
    model_links: ClassVar[dict[str, str]] = {"vocab_size": "config.vocab_size"}

    def __init__(
        self,
        corpus: str | list[str],
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
        bucket_by_length: bool = True,
        seed: int = 42,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.files = [str(f) for f in _check_files([corpus] if isinstance(corpus, str) else corpus)]
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        if max_seq_length < 8:
            raise ValueError(f"max_seq_length={max_seq_length} is too short for [CLS] A [SEP] B [SEP]")
        self.vocab_path = resolve_path(vocab_file) if vocab_file else self._trained_vocab(train_vocab_size, lowercase)
        self.tokenizer = load_wordpiece(self.vocab_path, lowercase=lowercase)
        self.vocab_size = self.tokenizer.get_vocab_size()
        vocab = self.tokenizer.get_vocab()
        self.special = {t: vocab[t] for t in SPECIAL_TOKENS}
        self.pad_token_id = self.special["[PAD]"]
        special_ids = set(self.special.values()) | {i for t, i in vocab.items() if t.startswith("[") and t.endswith("]")}
        self.replacement_ids = np.array(sorted(set(range(self.vocab_size)) - special_ids), dtype=np.int64)
        self.train_set: NSPDataset | None = None
        self.val_set: NSPDataset | None = None

    def _trained_vocab(self, size: int, lowercase: bool) -> Path:
        h = hashlib.sha1(f"{size}|{lowercase}".encode())
        for f in self.files:
            st = os.stat(f)
            h.update(f"|{Path(f).resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
        path = self.cache_dir / "vocab" / h.hexdigest()[:16] / "vocab.txt"
        if not path.is_file():
            log.info("training a %d-token WordPiece vocabulary on %s", size, self.files)
            train_wordpiece(iter_corpus_text(self.files), size, path, lowercase)
        return path

    @property
    def token_cache(self) -> Path:
        return self.cache_dir / "tokens" / cache_key(self.files, self.vocab_path, self.hparams.lowercase)

    def prepare_data(self) -> None:
        tokenize_corpus(self.files, self.tokenizer, self.token_cache)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        tokenize_corpus(self.files, self.tokenizer, self.token_cache, progress=False)  # no-op once prepared
        corpus = open_tokenized(self.token_cache)
        D = corpus.num_documents
        order = np.random.default_rng(self.hparams.seed).permutation(D)
        n_val = 0 if D < 2 else max(1, int(round(D * self.hparams.val_fraction)))
        val_docs, train_docs = np.sort(order[:n_val]), np.sort(order[n_val:])
        hp = self.hparams
        common = dict(
            corpus=corpus,
            special=self.special,
            max_seq_length=hp.max_seq_length,
            short_seq_prob=hp.short_seq_prob,
            nsp=hp.nsp,
            mask_prob=hp.mask_prob,
            max_predictions=hp.max_predictions_per_seq,
            replacement_ids=self.replacement_ids,
            continuation=continuation_mask(self.tokenizer) if hp.whole_word_masking else None,
            seed=hp.seed,
            plan_dir=self.token_cache,
        )
        self.train_set = NSPDataset(documents=train_docs, **common)
        self.val_set = NSPDataset(documents=val_docs, **common) if n_val else None
        log.info(
            "text data: %d documents (%d for validation), %d training and %d validation examples",
            D, n_val, len(self.train_set), len(self.val_set) if self.val_set else 0,
        )

    def _loader(self, dataset: NSPDataset, train: bool) -> DataLoader:
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = EpochSampler(
            dataset,
            self.hparams.batch_size,
            shuffle=train,
            seed=self.hparams.seed,
            num_replicas=world,
            rank=rank,
            lengths=dataset.lengths if self.hparams.bucket_by_length else None,
            fixed_epoch=None if train else 0,
        )
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            sampler=sampler,
            collate_fn=partial(collate_tokens, pad_token_id=self.pad_token_id),
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_set, train=False) if self.val_set is not None else []

    def test_dataloader(self) -> DataLoader | list:
        return self.val_dataloader()

    def state_dict(self) -> dict[str, Any]:
        """The vocabulary travels inside every checkpoint, so export and resumption never look for the file."""
        return {"vocab": self.vocab_path.read_text(encoding="utf-8")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("vocab") is not None and state["vocab"] != self.vocab_path.read_text(encoding="utf-8"):
            raise ValueError(
                f"the checkpoint was trained with a different vocabulary than {self.vocab_path}; "
                "resume with the same data.vocab_file (or the same corpus and train_vocab_size)"
            )
