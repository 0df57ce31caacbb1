"""Zero-shot fill-in-the-blank pieces (multibert.commands.zeroshot_video)."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
import torch

from datamodules.tokenizer import load_wordpiece
from datamodules.video.datamodule import video_vocab
from multibert.commands.zeroshot_video import (
    TEMPLATE,
    evaluate_zeroshot,
    label_ids,
    read_labels,
    template_ids,
    topk_hits,
)
from multibert.core.config import BertConfig
from multibert.core.pretraining import PretrainingTask
from multibert.video.adapter import VideoAdapter
from multibert.video.quantize import HierarchicalKMeans

SHIPPED = "datamodules/data/videobert_synthetic"


def test_topk_hits_hand_computed():
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.5, 0.2, 0.3], [0.0, 0.1, 0.2]])
    targets = torch.tensor([1, 2, 0])  # ranks 0, 1, 2
    assert topk_hits(scores, targets, (1, 2, 3)) == {1: 1, 2: 2, 3: 3}


def test_template_and_labels():
    tok = load_wordpiece(f"{SHIPPED}/vocab.txt")
    ids, slots = template_ids(tok, TEMPLATE, mask_id=4)
    words = [tok.id_to_token(int(i)) for i in ids]
    assert words == ["now", "let", "me", "show", "you", "how", "to", "[MASK]", "the", "[MASK]"]
    assert slots == [7, 9]
    lab, split = label_ids(tok, ["rotate", "zebra"])
    assert tok.id_to_token(int(lab[0])) == "rotate" and split == 1  # "zebra" is several pieces


def test_read_labels_errors(tmp_path):
    (tmp_path / "l.jsonl").write_text(json.dumps({"video_id": "a", "start": 0, "end": 1, "verb": "cut"}) + "\n")
    with pytest.raises(KeyError, match=r"l.jsonl:1: missing fields \['noun'\]"):
        read_labels(tmp_path / "l.jsonl")


def test_a_model_that_knows_the_answer_scores_full_marks():
    """With the MLM output rigged to one verb and one noun, top-1 equals those labels' frequencies."""
    vocab = video_vocab(f"{SHIPPED}/vocab.txt", f"{SHIPPED}/tokens/codebook.safetensors")
    tok = load_wordpiece(f"{SHIPPED}/vocab.txt")
    cfg = BertConfig(vocab_size=vocab.size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=37, max_position_embeddings=64)
    task = PretrainingTask(cfg, adapter=partial(VideoAdapter, codebook=f"{SHIPPED}/tokens/codebook.safetensors"))
    clips = read_labels(f"{SHIPPED}/test_labels.jsonl")[:6]
    verbs, nouns = ["rotate", "grow", "shrink", "lift", "drop", "push", "pull"], ["square", "circle", "triangle", "cross", "bar"]
    words = {c.video_id: (np.zeros(8, np.int64), np.arange(8) * 1.5) for c in clips}
    with torch.no_grad():
        task.mlm.head.bias.zero_()
        task.mlm.head.decoder.weight.mul_(0)  # every logit is its bias (the tied embedding is zeroed too)
    # every clip gets the same prediction: the first clip's verb and noun
    first = clips[0]
    with torch.no_grad():
        task.mlm.head.bias[tok.token_to_id(first.verb)] = 10.0
        task.mlm.head.bias[tok.token_to_id(first.noun)] = 10.0
    r = evaluate_zeroshot(task, vocab, tok, clips, words, 1.5, verbs, nouns)
    expect_v = np.mean([c.verb == first.verb for c in clips])
    expect_n = np.mean([c.noun == first.noun for c in clips])
    assert r["clips"] == 6 and r["verb_top1"] == pytest.approx(expect_v) and r["noun_top1"] == pytest.approx(expect_n)


def test_wrong_codebook_is_refused(tmp_path):
    from multibert.commands.zeroshot_video import load_video_task

    book = f"{SHIPPED}/tokens/codebook.safetensors"
    vocab = video_vocab(f"{SHIPPED}/vocab.txt", book)
    cfg = BertConfig(vocab_size=vocab.size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=37, max_position_embeddings=64)
    task = PretrainingTask(cfg, adapter=partial(VideoAdapter, codebook=book))
    import lightning.pytorch as pl

    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(task)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    assert isinstance(load_video_task(tmp_path / "m.ckpt", book).encoder.adapter, VideoAdapter)
    other = HierarchicalKMeans.load(book)
    other.centroids = [c + 1 for c in other.centroids]
    other.save(tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="not the codebook"):
        load_video_task(tmp_path / "m.ckpt", tmp_path / "other.safetensors")
