"""Zero-shot fill-in-the-blank pieces (multibert.commands.zeroshot_video)."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
import torch

from datamodules.tokenizer import load_wordpiece
from datamodules.video.examples import video_vocab
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
    """With the MLM output rigged to one verb and one noun, top-1 equals those labels' frequencies; a model that
    ignores the video scores exactly its language prior."""
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
        task.mlm.head.bias[tok.token_to_id(first.noun)] = 9.0
    expect_v = np.mean([c.verb == first.verb for c in clips])
    expect_n = np.mean([c.noun == first.noun for c in clips])
    closed = evaluate_zeroshot(task, vocab, tok, clips, words, 1.5, verbs, nouns, scoring="closed")
    assert closed["clips"] == 6 and closed["verb_top1"] == pytest.approx(expect_v)
    assert closed["noun_top1"] == pytest.approx(expect_n)  # among the nouns only, the rigged noun is first
    # open vocabulary: the same output everywhere puts the verb first in the noun slot too: the noun is second
    r = evaluate_zeroshot(task, vocab, tok, clips, words, 1.5)
    assert r["verb_top1"] == pytest.approx(expect_v) and r["noun_top1"] == 0.0
    assert r["noun_top5"] == pytest.approx(expect_n) and r["candidates_verb"] == vocab.text_size - 5
    for key in ("verb_top1", "verb_top5", "noun_top1", "noun_top5"):
        assert r[f"prior_{key}"] == pytest.approx(r[key])  # the video changes nothing: exactly the language prior


def test_open_vocabulary_is_harder_than_the_label_list():
    """A model whose favourite word is not a label: closed-set scoring still credits it, open scoring does not."""
    vocab = video_vocab(f"{SHIPPED}/vocab.txt", f"{SHIPPED}/tokens/codebook.safetensors")
    tok = load_wordpiece(f"{SHIPPED}/vocab.txt")
    cfg = BertConfig(vocab_size=vocab.size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=37, max_position_embeddings=64)
    task = PretrainingTask(cfg, adapter=partial(VideoAdapter, codebook=f"{SHIPPED}/tokens/codebook.safetensors"))
    clips = [c for c in read_labels(f"{SHIPPED}/test_labels.jsonl") if c.verb == "push"][:4]
    words = {c.video_id: (np.zeros(8, np.int64), np.arange(8) * 1.5) for c in clips}
    with torch.no_grad():
        task.mlm.head.decoder.weight.mul_(0)
        task.mlm.head.bias.zero_()
        task.mlm.head.bias[tok.token_to_id("the")] = 10.0  # the top word everywhere
        task.mlm.head.bias[tok.token_to_id("push")] = 5.0
    verbs = ["rotate", "grow", "shrink", "lift", "drop", "push", "pull"]
    closed = evaluate_zeroshot(task, vocab, tok, clips, words, 1.5, verbs, scoring="closed")
    opened = evaluate_zeroshot(task, vocab, tok, clips, words, 1.5, verbs)
    assert closed["verb_top1"] == 1.0 and opened["verb_top1"] == 0.0 and opened["verb_top5"] == 1.0
    with pytest.raises(ValueError, match="scoring='fuzzy'"):
        evaluate_zeroshot(task, vocab, tok, clips, words, 1.5, scoring="fuzzy")


def test_the_evaluation_template_is_never_a_training_sentence():
    """The shipped synthetic transcripts never contain the zero-shot template (nor its 7-word prefix)."""
    import re

    from datamodules.video.sentences import split_sentences
    from datamodules.video.transcripts import load_transcripts

    pattern = re.compile(TEMPLATE.replace("[MASK]", r"\w+"))
    prefix = TEMPLATE.split("[MASK]")[0].strip()
    sentences = [s.text for cues in load_transcripts(f"{SHIPPED}/transcripts").values()
                 for s in split_sentences(cues, "rules", pause=0.5)]
    assert len(sentences) == 256 and all(len(s.split()) >= 4 for s in sentences)
    assert not any(pattern.search(s) or prefix in s for s in sentences)
    text = " ".join(sentences)
    assert all(w in text.split() for w in prefix.split())  # its words do occur, in other sentences


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
