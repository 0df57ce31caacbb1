"""Streaming text pretraining: ``multibert text-prep`` into litdata's format, reruns and changed inputs, the streamed
examples against the memory-mapped path's (NSP balance, A/B statistics), batches, reproducibility, named errors."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from datamodules.text.corpus import CorpusError
from datamodules.text.datamodule import TextPretrainingDataModule
from datamodules.text.prepare import PREPARED, prepare_corpus
from datamodules.text.streaming import TextStreamingDataModule
from multibert.core.batch import IGNORE_INDEX, TokenBatch

SAMPLE = Path(__file__).parents[1] / "datamodules" / "data" / "shakespeare_sample.txt"
SETTINGS = {"max_seq_length": 64, "short_seq_prob": 0.0, "val_fraction": 0.0}  # identical chunk plans in both paths


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """The memory-mapped datamodule and the same corpus prepared for streaming (same vocabulary and settings)."""
    root = tmp_path_factory.mktemp("streaming")
    memmap = TextPretrainingDataModule(str(SAMPLE), train_vocab_size=1000, cache_dir=str(root / "cache"), **SETTINGS)
    memmap.prepare_data()
    memmap.setup("fit")
    out = str(root / "prepared")
    # two workers over five byte ranges of the one file, chunks of ~40 kB: several litdata chunks
    prepare_corpus(corpus=[str(SAMPLE)], out=out, vocab_file=str(memmap.vocab.path), num_workers=2,
                   shard_bytes=45_000, chunk_bytes="40kB", **SETTINGS)
    streaming = TextStreamingDataModule(out, batch_size=8, cache_dir=str(root / "cache"), **SETTINGS)
    streaming.setup("fit")
    return memmap, streaming


def test_preparation_holds_every_document_and_token_once(paths):
    memmap, streaming = paths
    record = json.loads(Path(streaming.data_dir, PREPARED).read_text())
    meta = json.loads((memmap.token_cache / "meta.json").read_text())
    assert record["splits"]["train"]["documents"] == meta["documents"] == 40
    assert record["splits"]["train"]["tokens"] == meta["tokens"]
    assert record["splits"]["train"]["items"] == len(streaming.train_set) == len(memmap.train_set)
    assert record["vocab"] == memmap.vocab.text and record["fingerprint"]["settings"]["max_seq_length"] == 64
    assert len(list(Path(streaming.data_dir, "train").glob("chunk-*.bin"))) >= 3


def _pair_statistics(examples, sep: int) -> dict[str, float]:
    rows = []
    for item in examples:
        original = np.where(item["mlm_labels"] != IGNORE_INDEX, item["mlm_labels"], item["input_ids"])
        first_sep = int(np.flatnonzero(original == sep)[0])
        rows.append((first_sep - 1, len(original) - first_sep - 2, item["pair_label"]))
    r = np.array(rows, dtype=float)
    return {
        "nsp": r[:, 2].mean(),
        "a": r[:, 0].mean(),
        "b_next": r[r[:, 2] == 0, 1].mean(),
        "b_random": r[r[:, 2] == 1, 1].mean(),
        "full": (r[:, 0] + r[:, 1] == 64 - 3).mean(),
    }


def test_nsp_balance_and_a_b_statistics_match_the_memory_mapped_path(paths):
    memmap, streaming = paths
    ds, n = streaming.train_set, len(streaming.train_set)
    streamed = []
    for epoch in (1, 2, 3):
        ds.current_epoch = epoch
        streamed += [ds[i] for i in range(n)]
    mapped = [memmap.train_set[(epoch, i)] for epoch in (1, 2, 3) for i in range(len(memmap.train_set))]
    assert len(streamed) == len(mapped) > 2400
    ours, theirs = _pair_statistics(streamed, streaming.special["[SEP]"]), _pair_statistics(mapped, memmap.special["[SEP]"])
    assert abs(ours["nsp"] - 0.5) < 0.03 and abs(theirs["nsp"] - 0.5) < 0.03
    for key in ("a", "b_next", "b_random"):  # mean segment lengths (tokens) within 5 %
        assert abs(ours[key] - theirs[key]) < 0.05 * theirs[key], (key, ours[key], theirs[key])
    assert abs(ours["full"] - theirs["full"]) < 0.03


def _digest(batch: TokenBatch) -> list[str]:
    """One hash per example: its tokens, labels and pair label (padding excluded)."""
    out = []
    for i, n in enumerate(batch.attention_mask.sum(1).tolist()):
        parts = (batch.input_ids[i, :n], batch.mlm_labels[i, :n], batch.token_type_ids[i, :n], batch.pair_labels[i])
        out.append(hashlib.sha1(b"".join(t.numpy().tobytes() for t in parts)).hexdigest())
    return out


def test_batches_are_token_batches_and_examples_depend_on_seed_and_index_only(paths):
    memmap, streaming = paths
    theirs = next(iter(memmap.train_dataloader()))
    seen = {}
    for workers in (0, 2):
        streaming.hparams.num_workers = workers
        batches = list(streaming.train_dataloader())
        assert all(isinstance(b, TokenBatch) for b in batches)
        first = batches[0]
        for field in ("input_ids", "attention_mask", "token_type_ids", "mlm_labels", "pair_labels"):
            assert getattr(first, field).dtype == getattr(theirs, field).dtype, field
        assert first.input_ids.shape[1] % 8 == 0 and first.input_ids.shape[1] <= 64
        seen[workers] = sorted(d for b in batches for d in _digest(b))
    streaming.hparams.num_workers = 0
    assert len(seen[0]) == len(streaming.train_set)
    assert seen[0] == seen[2]  # the same examples whichever worker built them (the order differs)


def test_a_rerun_is_skipped_and_changed_input_is_detected(tmp_path, caplog):
    corpus = tmp_path / "corpus.txt"
    shutil.copyfile(SAMPLE, corpus)
    out = tmp_path / "prepared"
    common = {"corpus": [str(corpus)], "out": str(out), "train_vocab_size": 500, "num_workers": 1,
              "cache_dir": str(tmp_path / "cache"), "max_seq_length": 32}
    prepare_corpus(**common)
    record = out / PREPARED
    before = record.stat().st_mtime_ns, json.loads(record.read_text())["splits"]["train"]["tokens"]
    start = time.perf_counter()
    with caplog.at_level(logging.INFO, logger="datamodules"):
        prepare_corpus(**common)
    assert time.perf_counter() - start < 5 and "already prepared from these inputs and settings" in caplog.text
    assert record.stat().st_mtime_ns == before[0]
    with pytest.raises(ValueError, match=r"prepared from other inputs or settings \(max_seq_length: 32 → 48\); pass "
                                         r"--overwrite true"):
        prepare_corpus(**{**common, "max_seq_length": 48})
    with open(corpus, "a") as f:
        f.write("\nA new document arrives.\nIt has two sentences.\n")
    with pytest.raises(ValueError, match=rf"changed {corpus} \(size or modification time\)"):
        prepare_corpus(**common)
    prepare_corpus(**common, overwrite=True)
    assert json.loads(record.read_text())["splits"]["train"]["tokens"] > before[1]


def test_settings_that_differ_from_the_prepared_data_are_named(paths, tmp_path):
    _, streaming = paths
    with pytest.raises(ValueError, match=r"was prepared with max_seq_length=64, but data.max_seq_length is 128; set "
                                         r"data.max_seq_length: 64"):
        dm = TextStreamingDataModule(streaming.data_dir, max_seq_length=128, short_seq_prob=0.0, cache_dir=str(tmp_path))
        dm.vocab_size  # noqa: B018
    unprepared = TextStreamingDataModule(str(tmp_path / "nothing_here"), cache_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"nothing_here is not prepared \(no multibert.json\): prepare it with "
                                                r"`multibert text-prep"):
        unprepared.vocab_size  # noqa: B018


def test_a_corpus_error_in_a_preparation_worker_is_named(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"Fine sentence.\n\nCaf\xe9 au lait.\n")
    vocab = SAMPLE.parent / "videobert_synthetic" / "vocab.txt"  # any BERT vocabulary will do
    with pytest.raises(CorpusError, match=r"bad.txt:3: not valid utf-8.*give the file's encoding"):
        prepare_corpus(corpus=[str(bad)], out=str(tmp_path / "out"), vocab_file=str(vocab), num_workers=1)
    assert not (tmp_path / "out" / PREPARED).exists()
