"""VideoBERT pretraining data: visual words + timestamped transcripts → regime-tagged token batches
(Sun et al., "VideoBERT", ICCV 2019, arXiv 1904.01766, Sec. 3.3 and 4.2).

Input: a folder written by ``multibert tokenize-video`` (visual words per video, the codebook, a manifest) and
transcripts (a folder of ``<video_id>.vtt`` / ``.srt`` or a HowTo100M / YouCook2 JSON file; see
:mod:`datamodules.video.transcripts`). ASR cues are cut into sentences first (:mod:`datamodules.video.sentences`:
punctuation where the transcript has it, else a trained punctuator or pause / length rules). A sentence's video
segment is the words of the clips whose midpoint falls in the sentence's ``[start, end)``; a video without a
transcript is cut into segments of ``segment_words`` words.

**Enough video per example.** A sentence whose segment holds fewer than ``min_clips`` clips is merged with the
next sentence(s) (text and clips) until it has enough; a short tail joins the previous segment; a video with fewer
than ``min_clips`` clips in all gives text-only examples only. All of it is counted and logged.

The examples themselves (the three regimes, augmentations, joint masking) are
:mod:`datamodules.video.examples`.

Videos are split into train / validation by a hash of their id (no video in both). Evaluation videos never enter
pretraining: ``eval_videos`` names them (zero-shot labels, a tokenized folder, an id list, YouCook2's validation
split), and a pretraining video among them stops the run (``on_eval_leak: error``) or is dropped with a warning
(``drop``); a YouCook2 annotation file used as transcripts contributes its validation videos by itself.

Every example is a pure function of ``(seed, epoch, index)``: the training sampler (a ``DistributedSampler``
subclass: one shard per rank) shuffles per ``(seed, epoch)``, and torchdata's ``StatefulDataLoader`` saves the
position inside an epoch in the checkpoint, so a run resumed mid-epoch continues with exactly the batches the
uninterrupted run would have seen. Validation examples are fixed (epoch 0).
"""

from __future__ import annotations

import hashlib
import json
import logging
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as pl
from torchdata.stateful_dataloader import StatefulDataLoader as DataLoader

from datamodules import resolve_path
from datamodules.sampling import EpochSampler
from datamodules.tokenizer import load_wordpiece
from datamodules.video.examples import (
    REGIMES,
    Segment,
    VideoTextDataset,
    VideoVocab,
    build_segments,
    collate,
    video_vocab,
)
from datamodules.video.sentences import METHODS, TaggerPunctuator, split_sentences
from datamodules.video.transcripts import Sentence, load_transcripts, youcook2_subsets
from multibert.video.tokenize import read_words

log = logging.getLogger(__name__)

#: regime names, in regime-id order (linked to the task's ``regime_names``)
def _is_val(video_id: str, val_fraction: float, seed: int) -> bool:
    h = hashlib.sha1(f"{seed}:{video_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < val_fraction


def read_video_ids(source: str | Path) -> set[str]:
    """Video ids named by an evaluation source.

    Accepts: a tokenized folder or its ``manifest.json`` (its ``videos``), zero-shot labels (``.jsonl`` with
    ``video_id``), a YouCook2 annotation file (the ids outside its training split), a JSON list of ids, or a text
    file with one id per line.
    """
    path = resolve_path(source)
    if path.is_dir():
        path = path / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"data.eval_videos: {path} does not exist")
    if path.suffix == ".jsonl":
        return {str(json.loads(line)["video_id"]) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, list):
            return {str(v) for v in data}
        if "videos" in data:
            return {str(v) for v in data["videos"]}
        if "database" in data:
            return {vid for vid, subset in youcook2_subsets(path).items() if subset != "training"}
        raise ValueError(f"data.eval_videos: {path} is neither a manifest, a YouCook2 file nor a list of ids")
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


class VideoTextDataModule(pl.LightningDataModule):
    """VideoBERT pretraining batches from tokenized videos and their transcripts.

    Args:
        tokens_dir: output folder of ``multibert tokenize-video`` (``words/``, ``codebook.safetensors``,
            ``manifest.json``).
        vocab_file: the WordPiece ``vocab.txt`` (a text checkpoint's, when starting from one).
        transcripts: folder of ``<video_id>.vtt`` / ``.srt`` or a HowTo100M / YouCook2 JSON file; ``None`` takes
            the one recorded in the manifest, if any. Pretrain on ASR of training videos only.
        sentence_split: how cues become sentences: ``auto`` (punctuation if present, else the punctuator if given,
            else rules), ``punctuation``, ``punctuator``, ``rules`` or ``cues`` (:mod:`datamodules.video.sentences`).
        max_sentence_words: longest sentence in words.
        sentence_pause: a pause (seconds) between cues that ends a sentence under the rules.
        punctuator: a token-classification ``.ckpt`` that restores punctuation (``configs/videobert/punctuator.yaml``).
        max_seq_length: longest example in tokens, specials included.
        text_only_weight: share of text-only examples.
        video_only_weight: share of video-only examples.
        text_video_weight: share of text-video examples (the only ones with an alignment label).
        align_negative_prob: share of text-video examples whose video comes from another video (paper: 0.5).
        max_stride: video words are subsampled with a stride drawn from 1 … ``max_stride`` (paper: 5).
        max_sentences: 1 … ``max_sentences`` neighbouring sentences are concatenated into one example.
        segment_words: segment length, in visual words, of videos without a transcript.
        min_clips: fewest visual words in a segment (shorter ones are merged with neighbours) and after
            subsampling.
        mask_prob: masked-LM rate over the joint sequence (BERT: 0.15).
        max_predictions: cap on masked positions per example (``None``: no cap).
        eval_videos: evaluation videos that must not be pretrained on: paths of zero-shot labels (``.jsonl``), a
            tokenized folder, a YouCook2 annotation file (its non-training splits) or an id list (``.txt``).
        on_eval_leak: what a pretraining video among them does: ``error`` (stop, naming them) or ``drop`` (leave
            it out, with a warning).
        val_fraction: share of videos held out for validation (by a hash of the video id).
        lowercase: lower-case the text (uncased vocabularies).
        batch_size: examples per batch and device.
        num_workers: DataLoader workers.
        seed: seed of the split, the order and every example.
    """

    #: vocab_size is V_text + 1 + K, the adapter reads the codebook that made the words, and the task names the
    #: regimes of its loss: all follow the data.
    model_links: ClassVar[dict[str, str]] = {
        "vocab_size": "config.vocab_size",
        "codebook": "adapter.init_args.codebook",
        "regime_names": "regime_names",
    }

    def __init__(
        self,
        tokens_dir: str,
        vocab_file: str,
        transcripts: str | None = None,
        sentence_split: str = "auto",
        max_sentence_words: int = 32,
        sentence_pause: float = 1.0,
        punctuator: str | None = None,
        max_seq_length: int = 128,
        text_only_weight: float = 1.0,
        video_only_weight: float = 1.0,
        text_video_weight: float = 1.0,
        align_negative_prob: float = 0.5,
        max_stride: int = 5,
        max_sentences: int = 2,
        segment_words: int = 16,
        min_clips: int = 4,
        mask_prob: float = 0.15,
        max_predictions: int | None = None,
        eval_videos: list[str] | None = None,
        on_eval_leak: str = "error",
        val_fraction: float = 0.1,
        lowercase: bool = True,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # shipped data (datamodules/data/...) resolves from any working directory
        self.tokens_dir = resolve_path(tokens_dir)
        self.vocab_file = str(resolve_path(vocab_file))
        manifest = self.tokens_dir / "manifest.json"
        if not manifest.is_file():
            raise FileNotFoundError(f"{manifest} does not exist; make {self.tokens_dir} with `multibert tokenize-video`")
        if not Path(self.vocab_file).is_file():
            raise FileNotFoundError(f"data.vocab_file {self.vocab_file} does not exist")
        if min(text_only_weight, video_only_weight, text_video_weight) < 0 or not (
            text_only_weight + video_only_weight + text_video_weight
        ) > 0:
            raise ValueError("regime weights must be >= 0 and not all 0 (data.text_only_weight, ...)")
        if max_stride < 1 or max_sentences < 1 or segment_words < 1 or min_clips < 1:
            raise ValueError("max_stride, max_sentences, segment_words and min_clips must be >= 1")
        if max_seq_length < 5:
            raise ValueError(f"max_seq_length={max_seq_length} is too short for [CLS] text [>] video [SEP]")
        if sentence_split not in METHODS:
            raise ValueError(f"data.sentence_split={sentence_split!r}; choose one of {METHODS}")
        if on_eval_leak not in ("error", "drop"):
            raise ValueError(f"data.on_eval_leak={on_eval_leak!r}; choose 'error' or 'drop'")
        if punctuator is not None and not resolve_path(punctuator).is_file():
            raise FileNotFoundError(f"data.punctuator {punctuator} does not exist")
        self.codebook = str(self.tokens_dir / "codebook.safetensors")
        self.regime_names = list(REGIMES)
        self.train_set: VideoTextDataset | None = None
        self.val_set: VideoTextDataset | None = None

    # ----------------------------------------------------------------- values the model links read (lazily)
    @cached_property
    def manifest(self) -> dict[str, Any]:
        path = self.tokens_dir / "manifest.json"
        manifest = json.loads(path.read_text(encoding="utf-8"))
        for key in ("clip_seconds", "videos"):
            if key not in manifest:
                raise KeyError(f"{path} lacks {key!r}; re-run `multibert tokenize-video`")
        return manifest

    @cached_property
    def vocab(self) -> VideoVocab:
        return video_vocab(self.vocab_file, self.codebook)

    @property
    def vocab_size(self) -> int:
        return self.vocab.size

    @property
    def transcripts(self) -> str | None:
        given = self.hparams.transcripts if self.hparams.transcripts is not None else self.manifest.get("transcripts")
        return str(resolve_path(given)) if given else None

    def extended_vocab(self) -> str:
        """``vocab.txt`` of the extended vocabulary: the text tokens, ``[>]``, then ``[VW0]`` … ``[VW{K-1}]``."""
        text = Path(self.vocab_file).read_text(encoding="utf-8").splitlines()[: self.vocab.text_size]
        return "\n".join([*text, "[>]", *(f"[VW{k}]" for k in range(self.vocab.num_words))]) + "\n"

    def state_dict(self) -> dict[str, str]:
        # stored in checkpoints so `multibert export` writes a vocab.txt with one line per embedding row
        return {"vocab": self.extended_vocab()}

    def load_state_dict(self, state_dict: dict[str, str]) -> None:
        """The vocabulary is rebuilt from ``data.vocab_file`` and the codebook; resuming with another one is an error."""
        stored = state_dict.get("vocab")
        if stored is not None and stored != self.extended_vocab():
            raise ValueError(
                "the checkpoint was trained with a different text vocabulary or number of visual words than "
                f"{self.vocab_file} + this codebook; resume with the same data.vocab_file and tokens"
            )

    # ----------------------------------------------------------------- reading
    def evaluation_ids(self) -> set[str]:
        """Ids of evaluation videos: ``eval_videos``, plus a YouCook2 transcript file's non-training splits."""
        ids: set[str] = set()
        for source in self.hparams.eval_videos or []:
            ids |= read_video_ids(source)
        if self.transcripts and Path(self.transcripts).suffix == ".json":
            data = json.loads(Path(self.transcripts).read_text(encoding="utf-8"))
            if isinstance(data, dict) and "database" in data:
                log.warning(
                    "%s holds YouCook2's human captions, not ASR: the paper pretrains on ASR transcripts "
                    "(HowTo100M-style captions or WebVTT / SRT)", self.transcripts,
                )
                ids |= {v for v, subset in youcook2_subsets(self.transcripts).items() if subset != "training"}
        return ids

    def pretraining_videos(self) -> list[str]:
        """The manifest's videos minus evaluation videos (which stop the run unless ``on_eval_leak: drop``)."""
        videos = list(self.manifest["videos"])
        leaked = sorted(set(videos) & self.evaluation_ids())
        if leaked:
            what = (
                f"{len(leaked)} evaluation videos are in the pretraining set {self.tokens_dir} "
                f"(e.g. {leaked[:5]}): zero-shot numbers on them would measure memory, not generalisation"
            )
            if self.hparams.on_eval_leak == "error":
                raise ValueError(
                    f"{what}. Tokenize only training videos for pretraining, or set data.on_eval_leak=drop to leave "
                    "them out"
                )
            log.warning("%s; leaving them out (data.on_eval_leak=drop)", what)
            videos = [v for v in videos if v not in set(leaked)]
        return videos

    def sentences(self, transcripts: dict[str, list[Sentence]]) -> dict[str, list[Sentence]]:
        """Each video's cues cut into sentences (``sentence_split``)."""
        hp = self.hparams
        punctuator = TaggerPunctuator(resolve_path(hp.punctuator)) if hp.punctuator else None
        return {
            vid: split_sentences(cues, hp.sentence_split, hp.max_sentence_words, hp.sentence_pause, punctuator)
            for vid, cues in transcripts.items()
        }

    def load_segments(self) -> tuple[list[list[Segment]], list[str]]:
        """All pretraining videos' segments (and their ids), with what was found logged."""
        hp = self.hparams
        root = self.tokens_dir
        words = {vid: read_words(root / "words" / f"{vid}.safetensors") for vid in self.pretraining_videos()}
        transcripts = load_transcripts(self.transcripts) if self.transcripts else {}
        if not transcripts and hp.text_only_weight + hp.text_video_weight > 0:
            log.warning("no transcripts: only video-only examples can be made (set data.transcripts)")
        transcripts = self.sentences({vid: cues for vid, cues in transcripts.items() if vid in words})
        tokenizer = load_wordpiece(self.vocab_file, lowercase=hp.lowercase)

        def encode(texts: list[str]) -> list[list[int]]:
            return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]

        videos, counts = build_segments(
            words, transcripts, encode, float(self.manifest["clip_seconds"]), self.vocab.visual_offset,
            hp.segment_words, hp.min_clips,
        )
        log.info(
            "video data: %d videos (%d with transcripts), %d sentences (%d without video words; %d merges to reach "
            "%d clips; %d videos shorter than that: text only), %d transcripts without a tokenized video, %d videos "
            "skipped at tokenization",
            counts["videos"], counts["with_transcript"], counts["sentences"], counts["sentences_without_video"],
            counts["merged"], hp.min_clips, counts["videos_too_short"], counts["transcripts_without_video"],
            len(self.manifest.get("skipped", [])),
        )
        ids = sorted(words)
        return videos, [ids[segs[0].video] for segs in videos]

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        videos, ids = self.load_segments()
        if not videos:
            raise ValueError(f"{self.tokens_dir}: no video has any visual word")
        val = [_is_val(v, hp.val_fraction, hp.seed) for v in ids]
        if hp.val_fraction > 0 and not any(val) and len(videos) > 1:
            val[-1] = True  # at least one validation video
        if all(val):
            val[0] = False
        common = dict(
            vocab=self.vocab,
            regime_weights=(hp.text_only_weight, hp.video_only_weight, hp.text_video_weight),
            max_seq_length=hp.max_seq_length, align_negative_prob=hp.align_negative_prob, max_stride=hp.max_stride,
            max_sentences=hp.max_sentences, mask_prob=hp.mask_prob, max_predictions=hp.max_predictions,
            seed=hp.seed, min_clips=hp.min_clips,
        )

        def renumber(segs_list: list[list[Segment]]) -> list[list[Segment]]:  # video index = position in the split
            return [[Segment(i, g.text, g.words) for g in segs] for i, segs in enumerate(segs_list)]

        self.train_set = VideoTextDataset(renumber([g for g, q in zip(videos, val) if not q]), **common)
        self.val_set = VideoTextDataset(renumber([g for g, q in zip(videos, val) if q]), **common)
        log.info("video split: %d train / %d validation videos", sum(not q for q in val), sum(val))

    def _loader(self, dataset: VideoTextDataset, train: bool) -> DataLoader:
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = EpochSampler(dataset, self.hparams.batch_size, shuffle=train, seed=self.hparams.seed,
                               num_replicas=world, rank=rank, fixed_epoch=None if train else 0, keys_with_epoch=True)
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            sampler=sampler,
            num_workers=self.hparams.num_workers,
            collate_fn=collate,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.val_set, train=False)
