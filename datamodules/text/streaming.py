"""Text pretraining streamed from a corpus that ``multibert text-prep`` tokenized once for all nodes (``litdata``).

``litdata.StreamingDataset`` / ``StreamingDataLoader`` read the prepared chunks (:mod:`datamodules.text.prepare`)
from a local folder or an object store, sharded by rank and worker and shuffled (chunk order per epoch, items
within windows of a chunk). The NSP pair and the masks of item ``i`` are built on the fly by the same
:class:`~datamodules.text.examples.ExampleBuilder` as the memory-mapped path, from a generator seeded by
``(seed, epoch, i)``: they do not depend on the number of ranks or workers. The position inside an epoch is the
loader's state, which Lightning saves in every checkpoint, so a resumed run sees the batches an uninterrupted one
would. Both paths yield the same :class:`~multibert.core.batch.TokenBatch`.

**The random other document for NSP** is drawn without random access to the corpus: uniformly among the items of
the same litdata chunk (a chunk is tens of MB, thousands of documents, and the worker holds it locally anyway),
skipping items of the same document (up to 10 tries, as Google's generator does), from a random sentence of that
item on, continuing into the next items of that document within the chunk. So a negative B comes from the same
stretch of the corpus as A (often the same source file) rather than from anywhere; NSP only needs "not the
continuation", and the 50/50 balance and the A/B length statistics match the memory-mapped path's (tested). Long
documents span more items, so they are drawn a little more often than in the memory-mapped path, which draws
documents uniformly.

Not available here, on purpose: length bucketing (it needs a global order; prepared chunks already fill their
target length) and persistent loader workers (litdata advances the epoch in the main process).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import multiprocessing
import os
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from litdata import StreamingDataLoader, StreamingDataset
from litdata.streaming.sampler import ChunkedIndex

from datamodules import resolve_path
from datamodules.text.base import TextDataModuleBase
from datamodules.text.corpus import corpus_files
from datamodules.text.examples import ExampleBuilder, collate_tokens, take_sentences
from datamodules.text.prepare import PREPARED, PrepSettings, prepare, read_record

log = logging.getLogger(__name__)


class NSPStreamingDataset(StreamingDataset):
    """A prepared split whose items are MLM + NSP examples (see the module docstring).

    Args:
        input_dir: the split's folder or URL (``.../train``).
        builder: turns a chunk into an example.
        seed: seeds the order (litdata's shuffle) and every example's generator.
        shuffle: shuffle the order (training).
        fixed_epoch: draw every epoch's examples as this epoch's (validation keeps its masks).
        **kwargs: more ``litdata.StreamingDataset`` arguments (``cache_dir``, ``storage_options``, ``max_cache_size``).
    """

    def __init__(
        self,
        input_dir: str,
        builder: ExampleBuilder,
        seed: int = 42,
        shuffle: bool = True,
        fixed_epoch: int | None = None,
        **kwargs: Any,
    ) -> None:
        # items are decoded one at a time: the random other document reads elsewhere in the chunk, and litdata's
        # decode windows (256 items) would be decoded again and again (5x slower, measured)
        kwargs.setdefault("batch_decode", 0)
        super().__init__(input_dir, shuffle=shuffle, seed=seed, **kwargs)
        self.builder = builder
        self.example_seed = seed
        self.fixed_epoch = fixed_epoch

    def _read(self, index: ChunkedIndex) -> dict:
        return StreamingDataset.__getitem__(self, index)

    def __getitem__(self, index: ChunkedIndex | int) -> dict:
        """The example of item ``index`` (a global index, or the ``ChunkedIndex`` litdata's iterator passes)."""
        if not isinstance(index, ChunkedIndex):
            if self.cache is None:
                StreamingDataset.__getitem__(self, int(index))  # creates the reader
            index = ChunkedIndex(*self.cache._get_chunk_index_from_index(int(index)))
        item = self._read(dataclasses.replace(index, is_last_index=False))
        interval = self.cache.get_chunk_intervals()[index.chunk_index]
        lo, hi = interval.roi_start_idx, interval.roi_end_idx

        def read(j: int) -> dict:
            return item if j == index.index else self._read(ChunkedIndex(j, index.chunk_index, index.chunk_size))

        epoch = self.current_epoch if self.fixed_epoch is None else self.fixed_epoch
        rng = np.random.default_rng([self.example_seed, int(epoch), int(index.index)])
        example = self.builder.build(
            item["tokens"],
            np.cumsum(item["sentences"]),
            int(item["target"]),
            rng,
            following=lambda budget: item["next"],  # prepared with the builder's budget rule
            random_segment=partial(self._random_segment, int(item["doc"]), lo, hi, read),
        )
        if index.is_last_index:
            self._read(index)  # the reader releases the chunk on the last index it is given
        return example

    @staticmethod
    def _random_segment(doc: int, lo: int, hi: int, read, budget: int, rng: np.random.Generator) -> np.ndarray:
        """Sentences of another document of the same litdata chunk, from a random sentence on, until ``budget``."""
        j, other = lo, None
        for _ in range(10):  # as Google's generator: a few tries to find a different document
            j = int(rng.integers(lo, hi))
            other = read(j)
            if int(other["doc"]) != doc:
                break
        offsets = np.concatenate([[0], np.cumsum(other["sentences"])])
        first = int(rng.integers(len(other["sentences"])))
        end = take_sentences(offsets, first, len(other["sentences"]), budget)
        pieces = [other["tokens"][offsets[first] : offsets[end]]]
        n, key = len(pieces[0]), int(other["doc"])
        while n < budget and j + 1 < hi:  # the document continues in the next items of the chunk
            j += 1
            nxt = read(j)
            if int(nxt["doc"]) != key:
                break
            offsets = np.concatenate([[0], np.cumsum(nxt["sentences"])])
            end = take_sentences(offsets, 0, len(nxt["sentences"]), budget - n)
            pieces.append(nxt["tokens"][: offsets[end]])
            n += len(pieces[-1])
        return np.concatenate(pieces)


class ResumableStreamingDataLoader(StreamingDataLoader):
    """litdata's loader, with a fresh epoch after a resumed one.

    Lightning stops asking for batches once an epoch has given ``len(loader)`` of them, so the iterator never raises
    ``StopIteration``. litdata clears the "restore" flag that ``load_state_dict`` sets only then, so the epoch after a
    resumed one would replay the restored position again (a repeated batch, an extra one-batch epoch; caught by
    ``tests/test_text_resume.py``). Here an iteration that follows a restored one starts afresh.
    """

    _replayed = False

    def load_state_dict(self, obj: dict[str, Any]) -> None:
        super().load_state_dict(obj)
        self._replayed = False

    def __iter__(self) -> Any:
        if self.restore and self._replayed:
            self.restore = False
        self._replayed = self.restore
        return super().__iter__()


class TextStreamingDataModule(TextDataModuleBase):
    """MLM + NSP batches streamed from a corpus prepared by ``multibert text-prep`` (one tokenization for all nodes).

    Prepare once, then point every node at the result::

        multibert text-prep --corpus CORPUS_DIR --out s3://bucket/corpus --max_seq_length 128
        multibert fit -c configs/bert/base.yaml -c configs/bert/streaming.yaml --data.data_dir s3://bucket/corpus

    On one machine, give ``corpus`` as well: ``prepare_data`` then prepares ``data_dir`` if it is not prepared yet
    (and does nothing when it is). The vocabulary, the casing, ``max_seq_length`` and ``short_seq_prob`` are those
    the data was prepared with, and so is ``val_fraction`` (the split is prepared): a different value given here is
    an error, not silently ignored.

    Args:
        data_dir: a prepared folder or object-store URL (``train/``, ``val/``, ``multibert.json``).
        corpus: files, directories or glob patterns to prepare ``data_dir`` from when it is not prepared yet.
        prep_workers: tokenizing processes for that preparation (default: the CPU count).
        chunk_bytes: litdata chunk size for that preparation.
        shard_bytes: input files are cut into ranges of this many bytes for the preparation workers.
        storage_options: passed to litdata for an object-store ``data_dir``.
        max_cache_size: local cache budget for chunks streamed from an object store (litdata's default when None).
        **kwargs: the vocabulary, example and loader settings of
            :class:`~datamodules.text.base.TextDataModuleBase`.
    """

    def __init__(
        self,
        data_dir: str,
        corpus: str | list[str] | None = None,
        prep_workers: int | None = None,
        chunk_bytes: str = "64MB",
        shard_bytes: int = 256 * 2**20,
        storage_options: dict | None = None,
        max_cache_size: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.data_dir = str(data_dir) if "://" in str(data_dir) else str(resolve_path(data_dir))
        self.files = [str(f) for f in corpus_files(corpus)] if corpus else None
        # an object store is shared by all nodes: one process prepares it; a local folder is prepared per node
        self.prepare_data_per_node = "://" not in self.data_dir
        self.train_set: NSPStreamingDataset | None = None
        self.val_set: NSPStreamingDataset | None = None

    def _record(self) -> dict | None:
        return read_record(self.data_dir, self.hparams.storage_options)

    def _vocab_corpus(self) -> list[Path]:
        if self.files is None:
            raise FileNotFoundError(self._not_prepared())
        return [Path(f) for f in self.files]

    def _not_prepared(self) -> str:
        return (
            f"data.data_dir {self.data_dir} is not prepared (no {PREPARED}): prepare it with `multibert text-prep "
            f"--corpus CORPUS --out {self.data_dir}`, or give data.corpus so that this run prepares it"
        )

    def _vocab_path(self) -> Path:
        record = self._record()
        if record is None:
            return super()._vocab_path()
        self._check_settings(record)
        text = record["vocab"]
        if self.hparams.vocab_file and resolve_path(self.hparams.vocab_file).read_text(encoding="utf-8") != text:
            raise ValueError(
                f"data.vocab_file {self.hparams.vocab_file} differs from the vocabulary {self.data_dir} was prepared "
                "with; leave vocab_file out (the prepared data brings its vocabulary) or prepare the data again"
            )
        path = self.cache_dir / "vocab" / f"prepared-{hashlib.sha1(text.encode()).hexdigest()[:16]}" / "vocab.txt"
        if not path.is_file():  # ranks may race here: each writes its own file, the rename is atomic
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
        return path

    def _check_settings(self, record: dict) -> None:
        prepared = record["fingerprint"]["settings"]
        for name in ("lowercase", "max_seq_length", "short_seq_prob", "val_fraction"):
            if prepared[name] != self.hparams[name]:
                raise ValueError(
                    f"{self.data_dir} was prepared with {name}={prepared[name]}, but data.{name} is "
                    f"{self.hparams[name]}; set data.{name}: {prepared[name]}, or prepare the corpus again "
                    f"(multibert text-prep --{name} {self.hparams[name]} --out NEW_FOLDER)"
                )

    def prepare_data(self) -> None:
        if self._record() is not None:
            return
        if self.files is None:
            raise FileNotFoundError(self._not_prepared())
        hp = self.hparams
        settings = PrepSettings(hp.lowercase, hp.max_seq_length, hp.short_seq_prob, hp.val_fraction, hp.seed,
                                hp.encoding, hp.max_sentence_chars)
        prepare([Path(f) for f in self.files], self.data_dir, self.vocab.path, settings, num_workers=hp.prep_workers,
                chunk_bytes=hp.chunk_bytes, shard_bytes=hp.shard_bytes, storage_options=hp.storage_options)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        record = self._record()
        if record is None:
            raise FileNotFoundError(self._not_prepared())
        self._check_settings(record)
        builder = self.example_builder()
        hp = self.hparams
        common: dict[str, Any] = {"builder": builder, "seed": hp.seed, "storage_options": hp.storage_options,
                                  "max_cache_size": hp.max_cache_size}
        self.train_set = NSPStreamingDataset(f"{self.data_dir.rstrip('/')}/train", shuffle=True, **common)
        splits = record["splits"]
        if splits.get("val", {}).get("items", 0):
            self.val_set = NSPStreamingDataset(f"{self.data_dir.rstrip('/')}/val", shuffle=False, fixed_epoch=0, **common)
        else:
            self._warn_without_validation(self.data_dir, splits["train"]["documents"])
        log.info("streaming text data from %s: %s", self.data_dir, splits)

    def _loader(self, dataset: NSPStreamingDataset) -> StreamingDataLoader:
        # workers start from a fork server, not by forking this process: under DDP it runs gloo's and the loader's
        # own threads, and CPython 3.11's fork can deadlock in the child when another thread is being created at
        # that moment (seen here: a worker stuck in PyOS_AfterFork_Child, the run hung)
        workers = self.hparams.num_workers
        if workers > 0:  # the server imports this module (torch, litdata) once; workers fork from it ready to run
            multiprocessing.set_forkserver_preload([__name__])
        return ResumableStreamingDataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            num_workers=workers,
            collate_fn=partial(collate_tokens, pad_token_id=self.pad_token_id),
            multiprocessing_context="forkserver" if workers > 0 else None,
        )

    def train_dataloader(self) -> StreamingDataLoader:
        return self._loader(self.train_set)

    def val_dataloader(self) -> StreamingDataLoader | list:
        return self._loader(self.val_set) if self.val_set is not None else []

    def test_dataloader(self) -> StreamingDataLoader | list:
        return self.val_dataloader()


__all__ = ["NSPStreamingDataset", "PrepSettings", "ResumableStreamingDataLoader", "TextStreamingDataModule"]
