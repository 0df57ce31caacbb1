"""Fine-tuning data: label vocabularies, long-document windows, SQuAD features, CoNLL first-piece labels."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from datamodules.finetune.conll import ConllDataModule, read_conll
from datamodules.finetune.labels import LabelledTextDataModule, read_labelled
from datamodules.finetune.squad import SquadDataModule, read_squad
from datamodules.tokenizer import SPECIAL_TOKENS

WORDS = "the a an of to and in is was cat dog bird house river tree stone red blue green big small eats runs flies".split()


@pytest.fixture
def vocab(tmp_path) -> str:
    pieces = ["##s", "##ing", "##ed"] + list("abcdefghijklmnopqrstuvwxyz") + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join([*SPECIAL_TOKENS, ".", ",", "?", ":", *WORDS, *pieces]) + "\n")
    return str(path)


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


# ----------------------------------------------------------------------------------------------- classification


def test_label_vocabulary_round_trip(tmp_path, vocab, caplog):
    train = write_jsonl(tmp_path / "train.jsonl", [
        {"id": "a", "text": "the cat runs", "label": "noun.animal"},
        {"id": "b", "text": "red house", "label": "noun.artifact"},
        {"id": "c", "text": "the bird flies", "label": "noun.animal"},
    ])
    val = write_jsonl(tmp_path / "val.jsonl", [
        {"id": "d", "text": "a dog", "label": "noun.animal"},
        {"id": "e", "text": "a stone", "label": "noun.object"},  # not in the training labels
    ])
    dm = LabelledTextDataModule(train_file=train, val_file=val, vocab_file=vocab, max_seq_length=16, batch_size=4)
    assert dm.labels == ["noun.animal", "noun.artifact"] and dm.num_labels == 2 and dm.vocab_size > 40
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert "1 records carry labels outside" in caplog.text and "1 skipped" in caplog.text
    assert [ex["id"] for ex in dm.datasets["val"]] == ["d"]
    state = dm.state_dict()
    assert state["labels"] == ["noun.animal", "noun.artifact"]
    # the same data accepts its own state; another label vocabulary is refused with a clear message
    LabelledTextDataModule(train_file=train, vocab_file=vocab).load_state_dict(state)
    other = LabelledTextDataModule(train_file=train, vocab_file=vocab, labels=["noun.artifact", "noun.animal"])
    with pytest.raises(ValueError, match="label vocabulary"):
        other.load_state_dict(state)
    batch = dm.collate(dm.datasets["val"])
    assert batch.labels.tolist() == [0] and batch.ids == ["d"]


def test_multilabel_csv_with_separator(tmp_path, vocab):
    path = tmp_path / "claims.csv"
    path.write_text('id,claim,cpc\np1,"a big stone house",E04B H04L\np2,the river,H04L\n')
    dm = LabelledTextDataModule(
        train_file=str(path), text_field="claim", label_field="cpc", multi_label=True, label_separator=" ",
        vocab_file=vocab, max_seq_length=16,
    )
    assert dm.labels == ["E04B", "H04L"]
    dm.setup("fit")
    batch = dm.collate(dm.datasets["train"])
    assert batch.labels.tolist() == [[1.0, 1.0], [0.0, 1.0]]


def test_bad_records_name_file_line_and_field(tmp_path, vocab):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": "a cat", "label": "x"}, {"txt": "oops", "label": "y"}])
    with pytest.raises(ValueError, match=r"bad.jsonl:2: field 'text' missing"):
        list(read_labelled(path))
    with pytest.raises(ValueError, match="unknown format"):
        list(read_labelled(Path(write_jsonl(tmp_path / "x.txt", []))))
    with pytest.raises(FileNotFoundError, match="data.train_file"):
        LabelledTextDataModule(train_file=str(tmp_path / "missing.jsonl"), vocab_file=vocab)


def test_sliding_windows_cover_the_document(tmp_path, vocab):
    text = " ".join(WORDS[9:] * 2)  # 30 word tokens
    train = write_jsonl(tmp_path / "t.jsonl", [{"id": "long", "text": text, "label": "x"}])
    dm = LabelledTextDataModule(
        train_file=train, vocab_file=vocab, max_seq_length=12, long_documents="windows", window_stride=6, max_windows=10,
    )
    ids = dm.tokenizer.encode(text, add_special_tokens=False).ids
    windows, cut = dm.windows(ids)
    assert not cut
    # windows of 10 tokens every 6 tokens until one reaches the end: starts 0, 6, 12, 18, 24
    assert [w[0][1:-1] for w in windows] == [ids[s : s + 10] for s in (0, 6, 12, 18, 24)]
    assert all(w[0][0] == dm.cls_id and w[0][-1] == dm.sep_id for w in windows)
    dm.max_windows = 2
    assert dm.windows(ids)[1] is True and len(dm.windows(ids)[0]) == 2


# ----------------------------------------------------------------------------------------------- SQuAD


def squad_file(tmp_path: Path) -> str:
    context = "the red cat eats in the big house. the blue bird flies to the green tree. a dog runs to the river."
    doc = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": [
        {"id": "q1", "question": "what flies?", "answers": [{"text": "blue bird", "answer_start": context.index("blue bird")}]},
        {"id": "q2", "question": "where does a dog run?", "answers": [{"text": "the river", "answer_start": context.index("the river")}]},
        {"id": "q3", "question": "what is small?", "answers": [], "is_impossible": True},
    ]}]}]}
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_squad_features_point_at_the_answer_in_every_window(tmp_path, vocab):
    path = squad_file(tmp_path)
    dm = SquadDataModule(train_file=path, val_file=path, vocab_file=vocab, max_seq_length=20, doc_stride=4, max_query_length=6)
    assert dm.version_2_with_negative  # detected from the file
    dm.setup("fit")
    items = {it["example"].id: it for it in dm.datasets["val"]}
    q1 = items["q1"]
    assert len(q1["features"]) > 3  # the context needs several windows of 20 tokens
    hits = 0
    for f in q1["features"]:
        assert len(f["ids"]) <= 20 and f["ids"][0] == dm.cls_id
        if f["start"]:
            a, b = f["offsets"][f["start"]][0], f["offsets"][f["end"]][1]
            assert q1["example"].context[a:b] == "blue bird"
            hits += 1
    assert hits >= 1
    assert all(f["start"] == f["end"] == 0 for f in items["q3"]["features"])
    batch = dm.collate([items["q1"], items["q3"]])
    assert batch.input_ids.shape[0] == len(items["q1"]["features"]) + len(items["q3"]["features"])
    assert batch.owner.tolist().count(0) == len(items["q1"]["features"]) and batch.answers[1] == []


def test_squad_bad_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": "x", "qas": [{"id": "1"}]}]}]}))
    with pytest.raises(ValueError, match=r"paragraphs\[0\].qas\[0\]: needs 'id' and a 'question'"):
        read_squad(path)


# ----------------------------------------------------------------------------------------------- CoNLL


def test_conll_labels_on_first_piece(tmp_path, vocab, caplog):
    path = tmp_path / "ner.conll"
    path.write_text("-DOCSTART- O\n\nthe O\ncats B-animal\nrun O\n\nbig B-thing\nhouses I-thing\nflies O\n")
    sentences = read_conll(path)
    assert [s.words for s in sentences] == [["the", "cats", "run"], ["big", "houses", "flies"]]
    dm = ConllDataModule(train_file=str(path), vocab_file=vocab, max_seq_length=16)
    assert dm.labels == ["O", "B-animal", "B-thing", "I-thing"]
    dm.setup("fit")
    batch = dm.collate(dm.datasets["train"])
    for i, sentence in enumerate(sentences):
        first = batch.word_index[i] >= 0
        assert batch.word_index[i][first].tolist() == list(range(len(sentence.words)))
        assert [dm.labels[t] for t in batch.labels[i][first].tolist()] == sentence.tags
        assert (batch.labels[i][~first] == -100).all()
    assert int((batch.word_index[0] >= 0).sum()) < int(batch.attention_mask[0].sum()) - 2  # "cats" has 2+ pieces
    # truncation: the lost words are counted and logged
    path.write_text(path.read_text() + "\n" + "".join(f"{w} O\n" for w in "the big red cat eats the small blue bird".split()))
    small = ConllDataModule(train_file=str(path), vocab_file=vocab, max_seq_length=8)
    with caplog.at_level(logging.WARNING):
        small.setup("fit")
    assert "lose" in caplog.text and "predicted O" in caplog.text
    path.write_text("the O\ncats\n")
    with pytest.raises(ValueError, match=r"ner.conll:2: expected 'token tag'"):
        read_conll(path)


def test_shipped_sets_are_readable():
    root = Path(__file__).parents[1] / "datamodules" / "data" / "wordnet"
    senses = list(read_labelled(root / "senses_val.jsonl"))
    assert len(senses) == 1500 and len({l for r in senses for l in r.labels}) > 40
    lemmas = list(read_labelled(root / "lemmas_val.jsonl", label_field="labels"))
    assert any(len(r.labels) > 1 for r in lemmas)
    examples, version = read_squad(root / "qa_dev.json")
    assert version == "v2.0" and any(e.is_impossible for e in examples)
    assert all(e.context[s : s + len(a)] == a for e in examples for a, s in zip(e.answers, e.answer_starts))
    assert all(len(s.words) == len(s.tags) for s in read_conll(root / "supersense_dev.conll"))
    assert (root / "LICENSE").read_text().count("WordNet 3.0 Copyright 2006 by Princeton University") == 1


def test_formats_recognised_by_content_when_the_suffix_says_nothing(tmp_path, caplog):
    rows = [{"text": "the cat runs", "label": "a"}, {"text": "red house", "label": "b"}]
    scicite = write_jsonl(tmp_path / "scicite_train.txt", rows)  # SciCite ships JSON lines named .txt
    tsv = tmp_path / "train.data"
    tsv.write_text("label\ttext\na\tthe cat runs\nb\tred house\n")
    with caplog.at_level(logging.INFO, logger="datamodules"):
        for path in (scicite, tsv):
            assert [(r.text, r.labels) for r in read_labelled(path)] == [("the cat runs", ["a"]), ("red house", ["b"])]
    assert "scicite_train.txt: read as JSON lines (the first line is a JSON object); the suffix '.txt' says nothing" in caplog.text
    assert "train.data: read as tab-separated values (the header names 'text'); the suffix '.data' says nothing" in caplog.text
    (tmp_path / "prose.txt").write_text("just some words\n")
    with pytest.raises(ValueError, match=r"prose.txt: unknown format '.txt': expected .csv, .tsv or .jsonl, and the "
                                         r"first line is neither a JSON object nor a header naming the text field 'text'"):
        list(read_labelled(tmp_path / "prose.txt"))


def test_init_stores_arguments_and_the_vocabulary_comes_on_first_use(tmp_path):
    rows = [{"text": " ".join(WORDS[i % 20 : i % 20 + 5]), "label": "xy"[i % 2]} for i in range(40)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    cache = tmp_path / "cache"
    dm = LabelledTextDataModule(train_file=train, train_vocab_size=60, cache_dir=str(cache))
    assert not cache.exists() and "labels" not in vars(dm)  # nothing trained, nothing read
    assert dm.hparams["train_vocab_size"] == 60 and "labels" not in dm.hparams  # a model link, kept out of them
    assert dm.labels == ["x", "y"] and 30 < dm.vocab_size <= 60  # first reads: the CLI's model links
    assert len(list((cache / "vocab").glob("*/vocab.txt"))) == 1
    squad = SquadDataModule(train_file=str(tmp_path / "train.jsonl"), vocab_file=str(dm.vocab_path))
    with pytest.raises(ValueError, match="not JSON"):  # the training file is read when the link asks, not before
        squad.version_2_with_negative
