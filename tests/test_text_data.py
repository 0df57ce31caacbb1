"""Text pretraining data: masking statistics, NSP pairs, determinism, sharding, corpus formats and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from datamodules.masking import mask_tokens
from datamodules.text.datamodule import EpochSampler, TextPretrainingDataModule, collate_tokens, truncate_pair
from multibert.core.batch import IGNORE_INDEX

SAMPLE = Path(__file__).parents[1] / "datamodules" / "data" / "shakespeare_sample.txt"


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory) -> TextPretrainingDataModule:
    dm = TextPretrainingDataModule(
        SAMPLE, train_vocab_size=1000, max_seq_length=64, batch_size=16, cache_dir=str(tmp_path_factory.mktemp("cache"))
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_masking_split_on_10k_tokens():
    rng = np.random.default_rng(0)
    ids = rng.integers(10, 1000, size=20_000)
    maskable = np.ones_like(ids, dtype=bool)
    maskable[::50] = False  # stand-ins for [CLS] / [SEP]
    out, labels = mask_tokens(
        ids, rng, mask_token_id=4, maskable=maskable, replacement_ids=np.arange(5, 1000), mask_prob=0.15
    )
    chosen = labels != IGNORE_INDEX
    assert not chosen[~maskable].any()
    assert abs(chosen.sum() / maskable.sum() - 0.15) < 0.02
    masked = (out == 4) & chosen
    kept = (out == ids) & chosen
    random = chosen & ~masked & ~kept
    n = chosen.sum()
    assert abs(masked.sum() / n - 0.8) < 0.02
    assert abs(random.sum() / n - 0.1) < 0.02
    assert abs(kept.sum() / n - 0.1) < 0.02  # (a random draw equal to the original counts as kept: p ≈ 0.1 %)
    assert (labels[chosen] == ids[chosen]).all()


def test_whole_word_masking_masks_all_pieces_of_a_word():
    rng = np.random.default_rng(1)
    ids = np.arange(100, 400)
    word_starts = np.zeros(300, dtype=bool)
    word_starts[::3] = True  # words of three pieces
    _, labels = mask_tokens(
        ids, rng, mask_token_id=4, maskable=np.ones(300, bool), replacement_ids=np.arange(5, 99), word_starts=word_starts
    )
    chosen = (labels != IGNORE_INDEX).reshape(100, 3)
    assert chosen.any()
    assert (chosen.all(1) | ~chosen.any(1)).all()  # every word wholly in or wholly out


def test_examples_are_well_formed_and_specials_never_masked(datamodule):
    ds, special = datamodule.train_set, datamodule.special
    for i in range(50):
        item = ds[(0, i)]
        ids, types, labels = item["input_ids"], item["token_type_ids"], item["mlm_labels"]
        assert len(ids) <= 64 and len(ids) == len(types) == len(labels)
        original = np.where(labels != IGNORE_INDEX, labels, ids)
        assert original[0] == special["[CLS]"] and original[-1] == special["[SEP]"]
        seps = np.flatnonzero(original == special["[SEP]"])
        assert len(seps) == 2
        assert (types[: seps[0] + 1] == 0).all() and (types[seps[0] + 1 :] == 1).all()
        specials = np.isin(original, [special["[CLS]"], special["[SEP]"]])
        assert (labels[specials] == IGNORE_INDEX).all()
        # BERT's count: 15 % of the maskable (non-special) tokens, at least one, at most max_predictions_per_seq
        expected = min(20, max(1, round(0.15 * (len(ids) - 3))))
        assert (labels != IGNORE_INDEX).sum() == expected


def test_nsp_labels_are_balanced(datamodule):
    ds = datamodule.train_set
    labels = [ds[(epoch, i)]["pair_label"] for epoch in range(3) for i in range(len(ds))]
    assert len(labels) > 1000
    assert abs(np.mean(labels) - 0.5) < 0.03


def test_is_next_pairs_are_consecutive_text(datamodule):
    ds = datamodule.train_set
    corpus_tokens = np.asarray(ds.corpus.tokens)
    checked = 0
    for i in range(40):
        item = ds[(0, i)]
        if item["pair_label"] != 0:
            continue
        ids, labels = item["input_ids"], item["mlm_labels"]
        original = np.where(labels != IGNORE_INDEX, labels, ids)
        sep = datamodule.special["[SEP]"]
        first_sep = int(np.flatnonzero(original == sep)[0])
        a, b = original[1:first_sep].tolist(), original[first_sep + 1 : -1].tolist()
        # truncation trims either end of either segment, but each remains a contiguous stretch, B after A
        start = int(ds.corpus.sentence_offsets[ds.chunks[i][1]])
        window = corpus_tokens[start : start + 300].tolist()

        def find(seg):
            return next(k for k in range(len(window) - len(seg) + 1) if window[k : k + len(seg)] == seg)

        assert find(a) + len(a) <= find(b)
        checked += 1
    assert checked >= 10


def test_same_seed_same_batches_new_epoch_new_masks(datamodule, tmp_path):
    again = TextPretrainingDataModule(
        SAMPLE, train_vocab_size=1000, max_seq_length=64, batch_size=16, cache_dir=datamodule.hparams.cache_dir
    )
    again.setup("fit")
    a = next(iter(datamodule.train_dataloader()))
    b = next(iter(again.train_dataloader()))
    assert (a.input_ids == b.input_ids).all() and (a.mlm_labels == b.mlm_labels).all()
    ds = datamodule.train_set
    e0, e1 = ds[(0, 3)], ds[(1, 3)]
    assert not (np.array_equal(e0["input_ids"], e1["input_ids"]) and np.array_equal(e0["mlm_labels"], e1["mlm_labels"]))


def test_validation_masks_are_fixed_across_epochs(datamodule):
    loader = datamodule.val_dataloader()
    first = next(iter(loader))
    loader.sampler.set_epoch(5)
    assert (next(iter(loader)).input_ids == first.input_ids).all()


def test_ranks_get_disjoint_shards_of_equal_length(datamodule):
    ds = datamodule.train_set
    keys = [list(EpochSampler(ds, 16, seed=1, num_replicas=2, rank=r, lengths=ds.lengths)) for r in (0, 1)]
    assert len(keys[0]) == len(keys[1])
    idx = [{i for _, i in k} for k in keys]
    overlap = idx[0] & idx[1]
    assert len(overlap) <= 1  # at most the one index repeated to even out an odd count
    assert idx[0] | idx[1] == set(range(len(ds)))


def test_length_bucketing_reduces_padding():
    lengths = np.random.default_rng(0).integers(8, 129, size=4000)
    dataset = list(range(4000))

    def pad_share(bucketed: bool) -> float:
        order = [i for _, i in EpochSampler(dataset, 32, seed=0, lengths=lengths if bucketed else None)]
        batches = [lengths[order[b : b + 32]] for b in range(0, len(order), 32)]
        return sum(b.max() * len(b) - b.sum() for b in batches) / sum(b.max() * len(b) for b in batches)

    assert pad_share(False) > 0.4
    assert pad_share(True) < 0.05


def test_truncate_pair_keeps_the_budget():
    rng = np.random.default_rng(0)
    a, b = truncate_pair(list(range(50)), list(range(100, 110)), 30, rng)
    assert len(a) + len(b) == 30 and len(b) == 10
    assert a == list(range(a[0], a[0] + 20))  # what remains is contiguous


def test_collate_pads_to_multiple_of_eight():
    items = [
        {"input_ids": np.arange(5), "token_type_ids": np.zeros(5, int), "mlm_labels": np.full(5, -100), "pair_label": 1},
        {"input_ids": np.arange(9), "token_type_ids": np.zeros(9, int), "mlm_labels": np.full(9, -100), "pair_label": 0},
    ]
    batch = collate_tokens(items)
    assert tuple(batch.input_ids.shape) == (2, 16)
    assert batch.attention_mask.sum().item() == 14
    assert batch.pair_labels.tolist() == [1, 0]


def test_jsonl_corpus(tmp_path):
    path = tmp_path / "c.jsonl"
    docs = [{"text": f"Document {d} begins here. It has a second sentence! And a third one?"} for d in range(6)]
    path.write_text("\n".join(json.dumps(d) for d in docs))
    dm = TextPretrainingDataModule(str(path), train_vocab_size=200, max_seq_length=32, cache_dir=str(tmp_path / "c"))
    dm.setup("fit")
    assert dm.train_set.corpus.num_documents == 6
    assert len(dm.train_set.corpus.sentence_offsets) - 1 == 18


def test_token_cache_is_reused(datamodule):
    meta = datamodule.token_cache / "meta.json"
    before = meta.stat().st_mtime_ns
    datamodule.prepare_data()
    assert meta.stat().st_mtime_ns == before
    assert json.loads(meta.read_text())["documents"] == 40
    plans = sorted(datamodule.token_cache.glob("plan-*.npz"))
    assert len(plans) == 2  # train and validation chunk plans, reused by later runs
    cached = np.load(plans[0])
    assert any(np.array_equal(cached["chunks"], ds.chunks) for ds in (datamodule.train_set, datamodule.val_set))


def test_missing_and_empty_corpus(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"corpus file .*nope.txt does not exist"):
        TextPretrainingDataModule(str(tmp_path / "nope.txt"))
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match=r"corpus file .*empty.txt is empty"):
        TextPretrainingDataModule(str(tmp_path / "empty.txt"))
    (tmp_path / "blank.txt").write_text("\n\n   \n")
    with pytest.raises(ValueError, match="no vocabulary"):
        TextPretrainingDataModule(str(tmp_path / "blank.txt"), cache_dir=str(tmp_path / "c"))


def test_bad_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine sentence here."}\n{"body": "no text field"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: expected an object with a string field 'text'"):
        TextPretrainingDataModule(str(path), cache_dir=str(tmp_path / "c"))


def test_vocab_file_without_specials_is_rejected(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("a\nb\nc\n")
    with pytest.raises(ValueError, match=r"lacks the special tokens \['\[PAD\]'"):
        TextPretrainingDataModule(str(SAMPLE), vocab_file=str(vocab))
