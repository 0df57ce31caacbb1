"""A punctuator trained with multibert's token-classification task restores sentences of unpunctuated ASR
(datamodules.video.sentences.TaggerPunctuator, configs/videobert/punctuator.yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from datamodules.video.sentences import TaggerPunctuator, split_sentences
from datamodules.video.transcripts import Sentence
from multibert.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("punct")
    main(["fit", "-c", "configs/videobert/punctuator.yaml", "--trainer.max_steps=2", "--trainer.logger=false",
          "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.limit_val_batches=0",
          f"--trainer.default_root_dir={out}", "--trainer.callbacks=[]",
          "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint", f"--trainer.callbacks.dirpath={out}",
          "--trainer.callbacks.save_last=true", f"--data.init_args.cache_dir={out / 'cache'}"])
    return out / "last.ckpt"


def test_the_punctuator_recipe_trains_and_restores_marks(checkpoint):
    punctuator = TaggerPunctuator(checkpoint)
    assert punctuator.task.labels == ["O", "B-COMMA", "B-PERIOD", "B-QUESTION"]
    words = ["first", "cut", "the", "onion", "into", "slices", "now", "heat", "some", "oil"]
    with torch.no_grad():  # rig the tagger: a period after every word
        punctuator.task.head.classifier.weight.zero_()
        punctuator.task.head.classifier.bias.copy_(torch.tensor([0.0, 0.0, 5.0, 0.0]))
    assert punctuator(words) == [w + "." for w in words]
    cues = [Sentence(0.0, 3.0, "first cut the onion"), Sentence(3.0, 6.0, "into slices now heat some oil")]
    got = split_sentences(cues, "auto", punctuator=punctuator)  # unpunctuated + a punctuator: the punctuator
    assert [s.text for s in got] == [w + "." for w in words] and got[0].start == 0.0 and got[-1].end == 6.0
    with torch.no_grad():
        punctuator.task.head.classifier.bias.copy_(torch.tensor([5.0, 0.0, 0.0, 0.0]))  # never a mark: max_words
    assert [len(s.text.split()) for s in split_sentences(cues, "punctuator", max_words=4, punctuator=punctuator)] == [
        4, 3, 3]


def test_a_checkpoint_that_is_not_a_punctuator_is_refused(tmp_path):
    main(["fit", "-c", "configs/finetune/tiny_ner.yaml", "--trainer.max_steps=1", "--trainer.logger=false",
          "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.limit_val_batches=0",
          f"--trainer.default_root_dir={tmp_path}", "--trainer.callbacks=[]",
          "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint", f"--trainer.callbacks.dirpath={tmp_path}",
          "--trainer.callbacks.save_last=true", f"--data.init_args.cache_dir={tmp_path / 'cache'}"])
    with pytest.raises(ValueError, match="is not a punctuator: its labels are"):
        TaggerPunctuator(tmp_path / "last.ckpt")
