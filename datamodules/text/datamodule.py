"""Text pretraining from a memory-mapped token cache (one machine; corpora larger than memory are fine).

The corpus is tokenized once into a memory-mapped cache (:mod:`~datamodules.text.corpus`); examples are built on the
fly from it by :class:`~datamodules.text.examples.ExampleBuilder` (BERT's MLM + NSP, Google's recipe, see there),
with a random other document drawn uniformly from the split's documents.

Sharding and order: each rank reads a disjoint slice of a seeded per-epoch shuffle (:class:`~datamodules.sampling.EpochSampler`, a
``DistributedSampler`` so Lightning keeps it); batches hold examples of similar length, padded only to the longest
(to a multiple of 8). Train loaders are ``torchdata`` ``StatefulDataLoader`` s, so Lightning saves the position
inside an epoch in every checkpoint and a resumed run sees exactly the batches an uninterrupted one would.

For corpora tokenized once for many machines (streamed from a folder or an object store), see
:mod:`datamodules.text.streaming`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset
from torchdata.stateful_dataloader import StatefulDataLoader as DataLoader

from datamodules.sampling import EpochSampler
from datamodules.text.base import TextDataModuleBase
from datamodules.text.cache import TokenizedCorpus, cache_key, open_tokenized, tokenize_corpus
from datamodules.text.corpus import corpus_files
from datamodules.text.examples import (
    ExampleBuilder,
    collate_tokens,
    plan_document,
    take_sentences,
    truncate_pair,
)

__all__ = ["NSPDataset", "TextPretrainingDataModule", "collate_tokens", "truncate_pair"]

log = logging.getLogger(__name__)


class NSPDataset(Dataset):
    """MLM + NSP examples over the documents of one split. Items are addressed by ``(epoch, index)``.

    Args:
        corpus: the memory-mapped tokenized corpus.
        documents: ids of the documents of this split.
        builder: turns a chunk into an example.
        short_seq_prob: probability that a document's chunks target a random shorter length.
        seed: base seed.
        plan_dir: where to cache the chunk plan (one pass over all sentences) for later runs.
    """

    def __init__(
        self,
        corpus: TokenizedCorpus,
        documents: np.ndarray,
        builder: ExampleBuilder,
        short_seq_prob: float,
        seed: int,
        plan_dir: Path | None = None,
    ) -> None:
        self.corpus = corpus
        self.documents = np.asarray(documents)
        self.builder = builder
        self.seed = seed
        self.chunks, self.lengths = self._cached_plan(short_seq_prob, plan_dir)
        if len(self.chunks) == 0:
            raise ValueError("the corpus split yields no training example")

    def _cached_plan(self, short_seq_prob: float, plan_dir: Path | None) -> tuple[np.ndarray, np.ndarray]:
        if plan_dir is None:
            return self._plan(short_seq_prob)
        key = hashlib.sha1(
            f"{self.seed}|{self.builder.max_tokens}|{short_seq_prob}|".encode()
            + np.ascontiguousarray(self.documents).tobytes()
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
            lo, hi = int(doc_off[d]), int(doc_off[d + 1])
            rng = np.random.default_rng([self.seed, 7, int(d)])
            planned, approx = plan_document(sent_len[lo:hi], self.builder.max_tokens, short_seq_prob, rng)
            chunks.extend((int(d), lo + first, lo + end, target) for first, end, target in planned)
            lengths.extend(approx)
        return np.asarray(chunks, dtype=np.int64).reshape(-1, 4), np.asarray(lengths, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.chunks)

    def _span(self, first: int, limit: int, budget: int) -> np.ndarray:
        """Whole sentences from ``first`` until ``budget`` tokens, not past sentence ``limit``."""
        off = self.corpus.sentence_offsets
        end = take_sentences(off, first, limit, budget)
        return self.corpus.tokens[off[first] : off[end]]

    def __getitem__(self, key: tuple[int, int]) -> dict[str, np.ndarray]:
        epoch, index = key
        rng = np.random.default_rng([self.seed, int(epoch), int(index)])
        doc, first, end, target = (int(x) for x in self.chunks[index])
        off = self.corpus.sentence_offsets
        tokens = self.corpus.tokens[off[first] : off[end]]
        bounds = np.asarray(off[first + 1 : end + 1]) - off[first]
        doc_end = int(self.corpus.document_offsets[doc + 1])
        return self.builder.build(
            tokens, bounds, target, rng,
            following=lambda budget: self._span(end, doc_end, budget),
            random_segment=partial(self._random_segment, doc),
        )

    def _random_segment(self, doc: int, budget: int, rng: np.random.Generator) -> np.ndarray:
        """Sentences from a random other document of the split, from a random sentence on."""
        doc_off = self.corpus.document_offsets
        other = doc
        for _ in range(10):  # as Google's generator: a few tries to find a different document
            other = int(self.documents[rng.integers(len(self.documents))])
            if other != doc:
                break
        lo, hi = int(doc_off[other]), int(doc_off[other + 1])
        return self._span(int(rng.integers(lo, hi)), hi, budget)


class TextPretrainingDataModule(TextDataModuleBase):
    """MLM + NSP batches from a raw text corpus, tokenized once into a memory-mapped cache on this machine.

    Args:
        corpus: files, directories or glob patterns: BERT's format (one sentence per line, blank line between
            documents) or JSONL with a ``text`` field.
        bucket_by_length: batch examples of similar length together (less padding).
        **kwargs: the vocabulary, example and loader settings of
            :class:`~datamodules.text.base.TextDataModuleBase` (``vocab_file``, ``max_seq_length``, ``batch_size``,
            ``val_fraction``, ``encoding``, ...).
    """

    def __init__(self, corpus: str | list[str], bucket_by_length: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.files = [str(f) for f in corpus_files(corpus)]
        self.train_set: NSPDataset | None = None
        self.val_set: NSPDataset | None = None

    def _vocab_corpus(self) -> list[Path]:
        return [Path(f) for f in self.files]

    @property
    def tokenizer(self):
        return self.vocab.tokenizer

    @property
    def token_cache(self) -> Path:
        hp = self.hparams
        key = cache_key(self.files, self.vocab.path, hp.lowercase, hp.encoding, hp.max_sentence_chars)
        return self.cache_dir / "tokens" / key

    def _tokenize(self, progress: bool) -> None:
        hp = self.hparams
        tokenize_corpus(self.files, self.vocab.tokenizer, self.token_cache, progress=progress,
                        encoding=hp.encoding, max_sentence_chars=hp.max_sentence_chars)

    def prepare_data(self) -> None:
        self._tokenize(progress=True)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self._tokenize(progress=False)  # a no-op once prepared
        corpus = open_tokenized(self.token_cache)
        D = corpus.num_documents
        order = np.random.default_rng(self.hparams.seed).permutation(D)
        n_val = 0 if D < 2 or self.hparams.val_fraction == 0 else max(1, round(D * self.hparams.val_fraction))
        if n_val == 0:
            self._warn_without_validation(f"corpus {self.files[0]}" + (" ..." if len(self.files) > 1 else ""), D)
        val_docs, train_docs = np.sort(order[:n_val]), np.sort(order[n_val:])
        common = {
            "corpus": corpus,
            "builder": self.example_builder(),
            "short_seq_prob": self.hparams.short_seq_prob,
            "seed": self.hparams.seed,
            "plan_dir": self.token_cache,
        }
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
            keys_with_epoch=True,  # examples (pairs, masks) are drawn per epoch
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
