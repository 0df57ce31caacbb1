"""Model links (multibert/commands/links.py): values the data decides fill the model's arguments, a target the model
lacks is reported, and a value the user set is never overwritten — a conflict stops the command naming both."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from jsonargparse import Namespace

from multibert.cli import main
from multibert.commands.links import apply_model_links

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SAMPLE = str(Path(__file__).resolve().parents[1] / "datamodules" / "data" / "shakespeare_sample.txt")


class FakeData:
    model_links = {"vocab_size": "config.vocab_size", "codebook": "adapter.init_args.codebook", "labels": "labels"}

    def __init__(self, vocab_size=512, codebook="words.safetensors", labels=None):
        self.vocab_size, self.codebook, self.labels = vocab_size, codebook, labels


def model(**init_args) -> Namespace:
    return Namespace(class_path="some.Task", init_args=Namespace(**init_args))


def test_links_fill_the_targets_the_model_has_and_report_the_others(caplog):
    cfg = model(config=Namespace(vocab_size=30522, hidden_size=8))  # no adapter arguments, no labels argument
    with caplog.at_level(logging.WARNING, logger="multibert.commands.links"):
        applied = apply_model_links(FakeData(), cfg)
    assert applied == {"config.vocab_size": 512} and cfg.init_args.config.vocab_size == 512
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "data.codebook to model.init_args.adapter.init_args.codebook" in warned[0]
    assert "some.Task has no such argument" in warned[0]  # labels is None: nothing to link, nothing reported


def test_a_value_set_in_the_config_is_never_overwritten():
    explicit = model(config=Namespace(vocab_size=600))
    cfg = model(config=Namespace(vocab_size=600, hidden_size=8))
    with pytest.raises(ValueError, match=r"model.init_args.config.vocab_size is set to 600 in the config, but the data "
                                         r"decides 512 \(FakeData.vocab_size\)"):
        apply_model_links(FakeData(), cfg, explicit)
    same = model(config=Namespace(vocab_size=512))  # stated and equal to the data's: fine
    assert apply_model_links(FakeData(), model(config=Namespace(vocab_size=512)), same) == {"config.vocab_size": 512}


def test_the_command_refuses_a_vocabulary_size_the_data_contradicts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"config.vocab_size is set to 123 in the config, but the data decides 1000"):
        main(["fit", "-c", str(CONFIGS / "bert" / "tiny.yaml"), f"--data.init_args.corpus={SAMPLE}",
              "--model.init_args.config.vocab_size=123", "--trainer.max_steps=1", "--trainer.logger=false"])
