"""Text pretraining data: masking statistics, NSP pairs, determinism, sharding, corpus formats, bad input named."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest

from datamodules.masking import mask_tokens
from datamodules.sampling import EpochSampler
from datamodules.text.corpus import CorpusError, read_shard, shards
from datamodules.text.datamodule import (
    TextPretrainingDataModule,
    collate_tokens,
    truncate_pair,
)
from multibert.core.batch import IGNORE_INDEX
from multibert.core.progress import LoggedProgress

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
    keys = [list(EpochSampler(ds, 16, seed=1, num_replicas=2, rank=r, lengths=ds.lengths, keys_with_epoch=True)) for r in (0, 1)]
    assert len(keys[0]) == len(keys[1])
    idx = [{i for _, i in k} for k in keys]
    overlap = idx[0] & idx[1]
    assert len(overlap) <= 1  # at most the one index repeated to even out an odd count
    assert idx[0] | idx[1] == set(range(len(ds)))


def test_length_bucketing_reduces_padding():
    lengths = np.random.default_rng(0).integers(8, 129, size=4000)
    dataset = list(range(4000))

    def pad_share(bucketed: bool) -> float:
        order = list(EpochSampler(dataset, 32, seed=0, lengths=lengths if bucketed else None))
        batches = [lengths[order[b : b + 32]] for b in range(0, len(order), 32)]
        return sum(b.max() * len(b) - b.sum() for b in batches) / sum(b.max() * len(b) for b in batches)

    assert pad_share(False) > 0.4
    assert pad_share(True) < 0.05


def test_truncate_pair_keeps_the_budget():
    rng = np.random.default_rng(0)
    a, b = truncate_pair(list(range(50)), list(range(100, 110)), 30, rng)
    assert len(a) + len(b) == 30 and len(b) == 10
    assert a == list(range(a[0], a[0] + 20))  # what remains is contiguous


def _google_truncate(a: list, b: list, max_tokens: int, rng: np.random.Generator) -> tuple[list, list]:
    """Google's create_pretraining_data.py loop: one token at a time from the longer segment (B on a tie)."""
    a, b = list(a), list(b)
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()
    return a, b


def test_truncate_pair_matches_googles_loop_in_constant_time():
    rng = np.random.default_rng(3)
    fronts, ours_fronts = [], []
    for _ in range(3000):
        la, lb, m = (int(x) for x in rng.integers(0, 60, size=3))
        a, b = np.arange(la), np.arange(100, 100 + lb)
        ref = _google_truncate(a.tolist(), b.tolist(), m, rng)
        ours = truncate_pair(a, b, m, rng)
        assert (len(ours[0]), len(ours[1])) == (len(ref[0]), len(ref[1])), (la, lb, m)
        for seg, orig in zip(ours, (a, b)):  # contiguous stretches of the input
            if len(seg):
                assert (np.diff(seg) == 1).all() and seg[0] >= orig[0] and seg[-1] <= orig[-1]
        if la > m + 10:
            fronts.append(ref[0][0] if ref[0] else 0)
            ours_fronts.append(int(ours[0][0]) if len(ours[0]) else 0)
    # the tokens taken from the front: the same distribution (Binomial(removed, 1/2)) as the loop's
    assert abs(np.mean(fronts) - np.mean(ours_fronts)) < 0.1 * max(1.0, np.mean(fronts))
    start = time.perf_counter()
    a, b = truncate_pair(np.arange(5_000_000), np.arange(3), 125, rng)  # the loop took minutes on such input
    assert len(a) + len(b) == 125 and time.perf_counter() - start < 0.1


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
    dm = TextPretrainingDataModule(str(tmp_path / "blank.txt"), cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match="no vocabulary"):
        dm.vocab_size  # noqa: B018  (the vocabulary is trained on first read)


def test_init_is_cheap_and_the_vocabulary_is_trained_on_first_read(tmp_path):
    dm = TextPretrainingDataModule(str(SAMPLE), train_vocab_size=300, cache_dir=str(tmp_path))
    assert not list(tmp_path.rglob("vocab.txt"))  # __init__ stored and checked its arguments only
    assert dm.vocab_size == 300
    (path,) = tmp_path.rglob("vocab.txt")
    mtime = path.stat().st_mtime_ns
    again = TextPretrainingDataModule(str(SAMPLE), train_vocab_size=300, cache_dir=str(tmp_path))
    assert again.vocab_size == 300 and path.stat().st_mtime_ns == mtime  # cached, not trained twice


def test_bad_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine sentence here."}\n{"body": "no text field"}\n')
    dm = TextPretrainingDataModule(str(path), cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match=r"bad.jsonl:2: expected an object with a string field 'text'"):
        dm.prepare_data()


def test_vocab_file_without_specials_is_rejected(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("a\nb\nc\n")
    with pytest.raises(ValueError, match=r"lacks the special tokens \['\[PAD\]'"):
        TextPretrainingDataModule(str(SAMPLE), vocab_file=str(vocab)).vocab_size  # noqa: B018


def _corpus(tmp_path: Path, documents: list[list[str]], name: str = "c.txt") -> Path:
    path = tmp_path / name
    path.write_text("\n\n".join("\n".join(d) for d in documents) + "\n")
    return path


def _documents(n: int, sentences: int = 4) -> list[list[str]]:
    words = ["the", "king", "and", "queen", "of", "denmark", "spoke", "with", "a", "ghost", "upon", "the", "castle", "walls", "at", "night"]
    rng = np.random.default_rng(0)
    return [[" ".join(rng.choice(words, 9)).capitalize() + "." for _ in range(sentences)] for _ in range(n)]


def test_a_five_megabyte_line_is_cut_reported_and_does_not_hang(tmp_path, caplog):
    docs = _documents(12)
    huge = " ".join(["lorem"] * 900_000)  # ~5.4 MB on one line, no sentence punctuation
    docs[3].insert(2, huge)
    path = _corpus(tmp_path, docs)
    start = time.perf_counter()
    dm = TextPretrainingDataModule(str(path), train_vocab_size=200, max_seq_length=32, val_fraction=0.2,
                                   max_predictions_per_seq=5, cache_dir=str(tmp_path / "c"))
    with caplog.at_level(logging.WARNING, logger="datamodules"):
        dm.prepare_data()
        dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert time.perf_counter() - start < 60
    assert all(b.input_ids.shape[1] <= 32 for b in batches)
    meta = json.loads((dm.token_cache / "meta.json").read_text())
    assert meta["cut_sentences"] == 1 and meta["cut_chars"] == len(huge) - 10_000
    assert "1 sentences longer than the cap were cut" in caplog.text and f"first at {path}:18" in caplog.text


def test_most_of_a_corpus_discarded_and_no_validation_split_are_warned(tmp_path, caplog):
    path = _corpus(tmp_path, [["Short one.", "x" * 5000, "y" * 5000]])  # one document, mostly over the cap
    dm = TextPretrainingDataModule(str(path), train_vocab_size=100, max_seq_length=16, max_sentence_chars=50,
                                   cache_dir=str(tmp_path / "c"))
    with caplog.at_level(logging.WARNING, logger="datamodules"):
        dm.prepare_data()
        dm.setup("fit")
    assert "of the corpus text was discarded" in caplog.text
    assert "no validation split remains (1 documents, val_fraction=0.01)" in caplog.text
    assert dm.val_set is None and dm.val_dataloader() == []


def test_non_utf8_corpus_names_file_line_and_encoding(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("First sentence here.\nSecond one.\n\nLa reine était là.\n".encode("latin-1"))
    dm = TextPretrainingDataModule(str(path), train_vocab_size=100, cache_dir=str(tmp_path / "c"))
    with pytest.raises(CorpusError, match=r"latin1.txt:4: not valid utf-8: invalid continuation byte at byte 10 .*"
                                          r"give the file's encoding \(data.encoding"):
        dm.vocab_size  # noqa: B018
    ok = TextPretrainingDataModule(str(path), train_vocab_size=100, encoding="latin-1", cache_dir=str(tmp_path / "c"))
    ok.prepare_data()
    ok.setup("fit")
    text = ok.vocab.tokenizer.decode(ok.train_set.corpus.tokens[:].tolist())
    assert "était" in text or "etait" in text  # (uncased BERT strips accents)


def test_binary_corpus_is_named(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"PK\x03\x04\x00\x00binary\n\x00\xff\xfe garbage\n")
    with pytest.raises(CorpusError, match=r"model.bin:1: contains NUL bytes, so this looks like a binary file"):
        TextPretrainingDataModule(str(path), cache_dir=str(tmp_path / "c")).vocab_size  # noqa: B018
    utf16 = tmp_path / "utf16.txt"
    utf16.write_bytes("Hello there.\n".encode("utf-16"))
    with pytest.raises(CorpusError, match=r"utf16.txt:1: .*iconv -f UTF-16 -t UTF-8"):
        TextPretrainingDataModule(str(utf16), cache_dir=str(tmp_path / "c")).vocab_size  # noqa: B018


def test_a_directory_or_a_pattern_is_a_corpus(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "part2").mkdir(parents=True)
    _corpus(folder, _documents(3), "a.txt")
    _corpus(folder / "part2", _documents(2), "wiki_00")  # WikiExtractor's files have no suffix
    (folder / "b.jsonl").write_text(json.dumps({"text": "A JSON document. With two sentences."}) + "\n")
    (folder / "notes.pdf").write_bytes(b"%PDF")  # skipped (reported), not read
    dm = TextPretrainingDataModule(str(folder), train_vocab_size=120, max_seq_length=16, cache_dir=str(tmp_path / "c"))
    assert [Path(f).name for f in dm.files] == ["a.txt", "b.jsonl", "wiki_00"]
    dm.prepare_data()
    assert json.loads((dm.token_cache / "meta.json").read_text())["documents"] == 6
    by_glob = TextPretrainingDataModule(str(folder / "*.txt"), cache_dir=str(tmp_path / "c"))
    assert [Path(f).name for f in by_glob.files] == ["a.txt"]
    with pytest.raises(FileNotFoundError, match=r"corpus pattern .*\*.csv matches no file"):
        TextPretrainingDataModule(str(folder / "*.csv"))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(FileNotFoundError, match=r"corpus directory .*empty_dir holds no non-empty .txt"):
        TextPretrainingDataModule(str(tmp_path / "empty_dir"))


@pytest.mark.parametrize("shard_bytes", [1, 5, 13, 64, 1000])
def test_byte_range_shards_read_every_document_once(tmp_path, shard_bytes):
    text = "\n\n  \nA one.\nA two.\n \n\n\nB one.\n\t\nC one.\nC two.\nC three."  # odd blank lines, no final newline
    path = tmp_path / "messy.txt"
    path.write_text(text)
    whole = [d for s in shards([path]) for d in read_shard(s)]
    assert [d for _, d in whole] == [["A one.", "A two."], ["B one."], ["C one.", "C two.", "C three."]]
    assert [d for s in shards([path], shard_bytes) for d in read_shard(s)] == whole
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": f"Doc {i}. It is here."}) for i in range(9)) + "\n\n")
    assert [d for s in shards([jsonl], shard_bytes) for d in read_shard(s)] == [
        d for s in shards([jsonl]) for d in read_shard(s)
    ]


def test_progress_is_logged_when_output_is_not_a_terminal(tmp_path, caplog):
    progress = LoggedProgress(total=2_000_000, desc="reading", interval=0.0)
    with caplog.at_level(logging.INFO, logger="multibert.core.progress"):
        progress.update(500_000)
        progress.update(1_500_000)
        progress.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("reading: 500.0 kB of 2.0 MB (25%)") and lines[1].startswith("reading: 2.0 MB of 2.0 MB (100%)")
    assert lines[-1].endswith("(done)")
    caplog.clear()
    dm = TextPretrainingDataModule(str(SAMPLE), train_vocab_size=300, cache_dir=str(tmp_path))
    with caplog.at_level(logging.INFO, logger="multibert.core.progress"):
        dm.vocab_size  # noqa: B018  (stderr is captured by pytest: not a terminal)
    assert "reading corpus for the vocabulary: 214.0 kB of 214.0 kB (100%)" in caplog.text
