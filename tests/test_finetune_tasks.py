"""Fine-tuning tasks: window pooling, windows = truncation for short documents, span decoding, and each task's
tiny config through ``multibert fit | test | predict``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from run_folders import last_checkpoint, latest_metrics
from sklearn.metrics import accuracy_score, f1_score

from datamodules.finetune.labels import LabelledTextDataModule
from multibert.cli import main
from multibert.core.checkpoint import checkpoint_vocab
from multibert.core.config import BertConfig
from multibert.core.task import EncoderTask
from multibert.finetune.classification import SequenceClassificationTask
from multibert.finetune.heads import SpanHead, pool_windows
from multibert.finetune.metrics import entity_counts, f1_from_counts, squad_evaluate
from multibert.finetune.qa import best_answer

ROOT = Path(__file__).parents[1]
CONFIGS = ROOT / "configs"
WORDNET = ROOT / "datamodules" / "data" / "wordnet"
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, max_position_embeddings=64,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def test_pool_windows_by_hand():
    vectors = torch.tensor([[1.0, 4.0], [3.0, 0.0], [5.0, 5.0], [-1.0, 2.0]])
    owner = torch.tensor([0, 0, 1, 2])
    assert pool_windows(vectors, owner, 3, "mean").tolist() == [[2.0, 2.0], [5.0, 5.0], [-1.0, 2.0]]
    assert pool_windows(vectors, owner, 3, "max").tolist() == [[3.0, 4.0], [5.0, 5.0], [-1.0, 2.0]]
    assert pool_windows(vectors, owner, 3, "first").tolist() == [[1.0, 4.0], [5.0, 5.0], [-1.0, 2.0]]
    with pytest.raises(ValueError, match="window pooling"):
        pool_windows(vectors, owner, 3, "sum")


def test_windows_equal_truncation_when_documents_fit(scratch):
    train = str(WORDNET / "senses_val.jsonl")
    common = dict(train_file=train, val_file=train, train_vocab_size=500, max_seq_length=64, batch_size=6)
    truncate = LabelledTextDataModule(**common)
    windows = LabelledTextDataModule(**common, long_documents="windows", window_stride=20)
    for dm in (truncate, windows):
        dm.setup("validate")
    config = BertConfig(vocab_size=truncate.vocab_size, **TINY)
    outputs, long_outputs = [], []
    for dm, pooling in ((truncate, "first"), (windows, "mean"), (windows, "max")):
        torch.manual_seed(0)
        task = SequenceClassificationTask(config, labels=truncate.labels, window_pooling=pooling).eval()
        short = [ex for ex in dm.datasets["val"] if len(ex["windows"]) == 1][:6]
        longest = max(dm.datasets["val"], key=lambda ex: len(ex["windows"]))
        with torch.no_grad():
            outputs.append(task(dm.collate(short)))
            long_outputs.append(task(dm.collate([longest])))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=1e-6)
    torch.testing.assert_close(outputs[0], outputs[2], rtol=0, atol=1e-6)
    # the longest definition gets several windows, and pooling them changes its logits
    assert len(max(windows.datasets["val"], key=lambda ex: len(ex["windows"]))["windows"]) > 1
    assert not torch.allclose(long_outputs[0], long_outputs[1])


def test_span_head_masks_padding():
    config = BertConfig(vocab_size=10, **TINY)
    head = SpanHead(config)
    hidden = torch.randn(2, 5, 32)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    start, end = head(hidden, mask)
    assert start.shape == end.shape == (2, 5)
    assert start[0, 3:].max() < -1e30 and torch.isfinite(start[1]).all()


def test_best_answer_decoding_by_hand():
    context = "the cat sat on the mat"
    # window: [CLS] q [SEP] the cat sat on the mat [SEP]; context tokens at positions 3..8
    offsets = [None, None, None, (0, 3), (4, 7), (8, 11), (12, 14), (15, 18), (19, 22), None]
    start = torch.tensor([0.0, 0, 0, 0, 5, 0, 0, 0, 1, 0])
    end = torch.tensor([0.0, 0, 0, 0, 0, 4, 0, 0, 3, 0])
    assert best_answer([start], [end], [offsets], context) == ("cat sat", 9.0)
    # the length limit applies: one token → "cat" (5 + 0) beats "mat" (1 + 3)
    assert best_answer([start], [end], [offsets], context, max_answer_length=1) == ("cat", 5.0)
    # an end before its start is never chosen: (start "cat", end "the") would score 14
    late_start = torch.tensor([0.0, 0, 0, -20, 5, 0, 0, 0, 1, 0])
    early_end = torch.tensor([0.0, 0, 0, 9, 0, 0, 0, 0, 3, 0])
    assert best_answer([late_start], [early_end], [offsets], context) == ("cat sat on the mat", 8.0)
    # v2.0: "" when the [CLS] score beats the best span by more than the threshold
    null_start, null_end = start.clone(), end.clone()
    null_start[0], null_end[0] = 6.0, 6.0
    assert best_answer([null_start], [null_end], [offsets], context, allow_null=True) == ("", 12.0)
    assert best_answer([null_start], [null_end], [offsets], context, allow_null=True, null_score_diff_threshold=5.0)[0] == "cat sat"
    # over two windows the best span wins wherever it is
    other = torch.zeros(10)
    assert best_answer([other, start], [other, end], [offsets, offsets], context)[0] == "cat sat"


def read_metrics() -> list[dict]:
    """The metrics of the latest run (each command writes a new run folder)."""
    return latest_metrics()


def run(subcommand: str, config: str, *args: str) -> None:
    main([subcommand, "-c", config, "-c", str(CONFIGS / "trainer" / "cpu.yaml"), "--trainer.enable_progress_bar=false", *args])


@pytest.mark.parametrize("family", ["tiny_classification", "tiny_qa", "tiny_ner"])
def test_tiny_config_fits_tests_and_predicts(scratch, family):
    config = str(CONFIGS / "finetune" / f"{family}.yaml")
    run("fit", config, "--trainer.log_every_n_steps=1")
    losses = [float(r["train/loss_step"]) for r in read_metrics() if r.get("train/loss_step")]
    assert len(losses) == 20 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) < sum(losses[:5])  # falling
    ckpt = str(last_checkpoint())
    run("test", config, "--ckpt_path", ckpt)
    tested = {k: float(v) for r in read_metrics() for k, v in r.items() if v and k.startswith("test/")}
    run("predict", config, "--ckpt_path", ckpt, "--data.init_args.predictions_out", "out/predictions")
    text = Path("out/predictions").read_text()
    task = EncoderTask.from_checkpoint(ckpt)
    # test and predict read the same 32 examples in order, so each logged test metric must equal the metric of
    # the written predictions, computed independently of the task's metric states
    if family == "tiny_classification":
        rows = [json.loads(line) for line in text.splitlines()]
        assert len(rows) == 32 and all(r["label"] in task.labels for r in rows)
        assert task.labels == sorted({json.loads(l)["label"] for l in (WORDNET / "senses_train.jsonl").read_text().splitlines()})
        gold = [json.loads(l)["label"] for l in (WORDNET / "senses_test.jsonl").read_text().splitlines()[:32]]
        pred = [r["label"] for r in rows]
        assert tested["test/acc"] == pytest.approx(accuracy_score(gold, pred), abs=1e-6)
        macro = f1_score(gold, pred, labels=task.labels, average="macro", zero_division=0)
        assert tested["test/macro_f1"] == pytest.approx(macro, abs=1e-6)
        assert math.isfinite(tested["test/loss"]) and tested["test/loss"] > 0
    elif family == "tiny_qa":
        answers = json.loads(text)
        dev = json.loads((WORDNET / "qa_dev.json").read_text())
        questions = [qa for p in dev["data"][0]["paragraphs"] for qa in p["qas"]][:16]
        assert list(answers) == [qa["id"] for qa in questions] and all(isinstance(a, str) for a in answers.values())
        gold = {qa["id"]: [a["text"] for a in qa["answers"]] for qa in questions}
        assert tested["test/exact"] == pytest.approx(squad_evaluate(answers, gold)["exact"], abs=1e-4)
        assert tested["test/f1"] == pytest.approx(squad_evaluate(answers, gold)["f1"], abs=1e-4)
        main(["squad-eval", "--data_file", str(WORDNET / "qa_dev.json"), "--predictions", "out/predictions", "--out", "out/scores.json"])
        scores = json.loads(Path("out/scores.json").read_text())
        assert scores["total"] == 420 and scores["missing_predictions"] == 420 - 16
        assert scores["exact"] == pytest.approx(tested["test/exact"] * 16 / 420, abs=1e-4)  # missing ones score 0
    else:
        sentences = [s.splitlines() for s in text.strip().split("\n\n")]
        assert len(sentences) == 32 and all(line.split()[1] in task.labels for s in sentences for line in s)
        gold = [s.splitlines() for s in (WORDNET / "supersense_test.conll").read_text().strip().split("\n\n")[:32]]
        assert [[l.split()[0] for l in s] for s in sentences] == [[l.split()[0] for l in s] for s in gold]
        pred_tags = [[l.split()[1] for l in s] for s in sentences]
        gold_tags = [[l.split()[-1] for l in s] for s in gold]
        precision, recall, f1 = f1_from_counts(*entity_counts(pred_tags, gold_tags))
        assert tested["test/f1"] == pytest.approx(f1, abs=1e-6) and tested["test/precision"] == pytest.approx(precision, abs=1e-6)
        assert tested["test/recall"] == pytest.approx(recall, abs=1e-6)
        first_pieces = sum(len(s) for s in gold)  # every word of these short sentences keeps its first piece
        correct = sum(p == g for ps, gs in zip(pred_tags, gold_tags) for p, g in zip(ps, gs))
        assert tested["test/token_acc"] == pytest.approx(correct / first_pieces, abs=1e-6)


def test_test_and_predict_restore_the_training_data_settings(scratch):
    """A fine-tune on one's own files; ``test`` / ``predict --ckpt_path`` need no data flags, and the shipped data
    (other labels) is refused with the command that works."""
    import random

    rng = random.Random(0)
    words = "red green blue cat dog bird runs sits flies house tree river".split()
    rows = [{"id": f"r{i}", "text": " ".join(rng.choices(words, k=6)), "label": rng.choice(["pos", "neg"])} for i in range(64)]
    Path("train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:48]))
    Path("test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[48:]))
    config = str(CONFIGS / "finetune" / "tiny_classification.yaml")
    own = ["--data.init_args.train_file=train.jsonl", "--data.init_args.val_file=null", "--data.init_args.test_file=test.jsonl",
           "--data.init_args.predict_file=test.jsonl", "--data.init_args.train_vocab_size=40", "--data.init_args.batch_size=8"]
    run("fit", config, *own, "--trainer.max_steps=3", "--trainer.limit_val_batches=0")
    ckpt = str(last_checkpoint())
    trainer = ["-c", str(CONFIGS / "trainer" / "cpu.yaml"), "--trainer.enable_progress_bar=false"]
    main(["test", *trainer, "--ckpt_path", ckpt])
    tested = {k: float(v) for r in read_metrics() for k, v in r.items() if v and k.startswith("test/")}
    main(["predict", *trainer, "--ckpt_path", ckpt, "--data.init_args.predictions_out", "p.jsonl"])
    predicted = [json.loads(line) for line in Path("p.jsonl").read_text().splitlines()]
    assert [p["id"] for p in predicted] == [r["id"] for r in rows[48:]] and {p["label"] for p in predicted} <= {"neg", "pos"}
    gold = [r["label"] for r in rows[48:]]
    assert tested["test/acc"] == pytest.approx(accuracy_score(gold, [p["label"] for p in predicted]), abs=1e-6)
    with pytest.raises(ValueError, match=r"; run `multibert test --ckpt_path .*last.ckpt` with no data config or data flags "
                                         r"\(the training data settings are restored from the checkpoint\), or "
                                         r"`multibert test -c .*version_0/config.yaml --ckpt_path"):
        run("test", config, "--ckpt_path", ckpt)  # the shipped WordNet data: another vocabulary and other labels


def test_scibert_recipe_learns_a_domain_vocabulary(scratch):
    """configs/bert/scibert.yaml (sizes shrunk): a WordPiece vocabulary learnt on the domain corpus, MLM from scratch."""
    tiny = [f"--model.init_args.config.{k}={v}" for k, v in TINY.items()]
    run(
        "fit", str(CONFIGS / "bert" / "scibert.yaml"), *tiny, "--data.init_args.train_vocab_size=3000",
        "--data.init_args.max_seq_length=64", "--data.init_args.batch_size=8", "--trainer.max_steps=3",
        "--trainer.limit_val_batches=0", "--model.init_args.lr_scheduler.init_args.warmup_steps=1", "--trainer.log_every_n_steps=1",
    )
    task = EncoderTask.from_checkpoint(last_checkpoint())
    assert 1000 < task.config.vocab_size <= 3000
    vocab = checkpoint_vocab(last_checkpoint()).split("\n")
    assert "genus" in vocab and "shrub" in vocab  # frequent domain words are whole tokens of the new vocabulary
    losses = [float(r["train/mlm_loss_step"]) for r in read_metrics() if r.get("train/mlm_loss_step")]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)


def test_docbert_recipe_multilabel_windows(scratch):
    """configs/finetune/docbert.yaml (sizes shrunk) on the multi-label lemma set with sliding windows."""
    config = str(CONFIGS / "finetune" / "docbert.yaml")
    small = [f"--model.init_args.config.{k}={v}" for k, v in TINY.items()] + [
        "--data.init_args.max_seq_length=32", "--data.init_args.long_documents=windows", "--data.init_args.window_stride=16",
        "--data.init_args.train_vocab_size=800", "--model.init_args.window_pooling=max", "--model.init_args.optimizer.init_args.lr=5e-3",
        "--trainer.limit_test_batches=3", "--trainer.limit_predict_batches=2",
    ]
    run("fit", config, *small, "--trainer.max_steps=4", "--trainer.limit_val_batches=2", "--trainer.log_every_n_steps=1")
    ckpt = str(last_checkpoint())
    run("test", config, *small, "--ckpt_path", ckpt)
    tested = {k: float(v) for r in read_metrics() for k, v in r.items() if v and k.startswith("test/")}
    assert {"test/micro_f1", "test/macro_f1", "test/p@1", "test/loss"} <= set(tested)
    assert 0.0 <= tested["test/p@1"] <= 1.0 and math.isfinite(tested["test/loss"])
    run("predict", config, *small, "--ckpt_path", ckpt, "--data.init_args.predictions_out", "out/p.jsonl")
    rows = [json.loads(line) for line in Path("out/p.jsonl").read_text().splitlines()]
    labels = set(EncoderTask.from_checkpoint(ckpt).labels)
    assert len(rows) == 32 and all(isinstance(r["labels"], list) and set(r["labels"]) <= labels for r in rows)


def test_tasks_start_from_a_multibert_checkpoint(tmp_path):
    """init_from a multibert .ckpt (e.g. a pretraining run): the encoder tensors are taken, the new head is not."""
    from multibert.core.pretraining import PretrainingTask
    from multibert.finetune.tokens import TokenClassificationTask

    config = BertConfig(vocab_size=50, **TINY)
    pretrained = PretrainingTask(config)
    path = tmp_path / "pretrained.ckpt"
    torch.save({"state_dict": pretrained.state_dict()}, path)
    task = TokenClassificationTask(config, labels=["O", "B-x", "I-x"], init_from=str(path))
    head_before = task.head.classifier.weight.detach().clone()
    task.setup("fit")
    for name, tensor in task.encoder.state_dict().items():
        torch.testing.assert_close(tensor, pretrained.encoder.state_dict()[name])
    torch.testing.assert_close(task.head.classifier.weight.detach(), head_before)
