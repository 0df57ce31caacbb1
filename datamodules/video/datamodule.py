"""VideoBERT pretraining data: visual words + timestamped transcripts → :class:`~multibert.core.batch.TokenBatch`
(Sun et al., "VideoBERT", ICCV 2019, arXiv 1904.01766, Sec. 3.3 and 4.2).

Input: a folder written by ``multibert tokenize-video`` (visual words per video, the codebook, a manifest) and
transcripts (a folder of ``<video_id>.vtt`` / ``.srt`` or a YouCook2 / HowTo100M JSON file; see
:mod:`datamodules.video.transcripts`). A sentence's video segment is the words of the clips whose midpoint falls in the
sentence's ``[start, end)``; a video without a transcript is cut into segments of ``segment_words`` words.

Each example is one of the paper's three regimes, drawn with configurable weights among those the segment allows:

- text-only      ``[CLS] text [SEP]``                 token types 0 …; masked-LM on text
- video-only     ``[CLS] video [SEP]``                [CLS] 0, the rest 1; masked-LM on visual words
- text-video     ``[CLS] text [>] video [SEP]``       text and ``[>]`` 0, video and ``[SEP]`` 1; masked-LM on both,
  plus alignment: with ``align_negative_prob`` (paper: 0.5) the video part comes from another video
  (``pair_labels`` 1), else it is the sentence's own (0); single-modality examples carry ``IGNORE_INDEX``.

Augmentations from the paper: a random number (1 … ``max_sentences``) of neighbouring sentences is concatenated
into one text (and their video spans into one segment), and video words are subsampled with a random stride
1 … ``max_stride`` (paper: 1–5) and a random phase. Masking is BERT's 80/10/10 (:mod:`datamodules.masking`),
applied to text and to video positions separately so that a random replacement stays within its modality.

Videos are split into train / validation by a hash of their id (no video in both). Training examples are drawn
afresh each epoch (seeded from torch's RNG, so ``seed_everything`` makes runs repeatable); validation examples
are fixed per index.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, NamedTuple

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules import resolve_path
from datamodules.masking import mask_tokens
from datamodules.tokenizer import load_wordpiece
from datamodules.video.transcripts import Sentence, load_transcripts
from multibert.core.batch import IGNORE_INDEX, TokenBatch
from multibert.video.quantize import read_codebook_metadata
from multibert.video.tokenize import read_words

log = logging.getLogger(__name__)

TEXT_ONLY, VIDEO_ONLY, TEXT_VIDEO = 0, 1, 2
REGIMES = ("text-only", "video-only", "text-video")


@dataclass(frozen=True)
class Segment:
    """One sentence (or fixed-length stretch) of one video: its WordPiece ids and its visual words (vocab ids)."""

    video: int
    text: np.ndarray
    words: np.ndarray


class Example(NamedTuple):
    """One encoded example. Shapes: input_ids, token_type_ids, mlm_labels (T,); pair_label: 0, 1 or IGNORE_INDEX."""

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    mlm_labels: np.ndarray
    pair_label: int


@dataclass(frozen=True)
class VideoVocab:
    """The extended vocabulary's layout (see :mod:`multibert.video.adapter`)."""

    text_size: int
    num_words: int
    cls: int
    sep: int
    mask: int
    pad: int

    @property
    def separator(self) -> int:
        return self.text_size

    @property
    def visual_offset(self) -> int:
        return self.text_size + 1

    @property
    def size(self) -> int:
        return self.text_size + 1 + self.num_words


def video_vocab(vocab_file: str | Path, codebook: str | Path) -> VideoVocab:
    """The vocabulary layout from a WordPiece ``vocab.txt`` and a codebook header."""
    tokenizer = load_wordpiece(vocab_file)
    v = tokenizer.get_vocab()
    meta = read_codebook_metadata(codebook)
    K = int(meta["branching"]) ** int(meta["depth"])
    return VideoVocab(len(v), K, v["[CLS]"], v["[SEP]"], v["[MASK]"], v["[PAD]"])


def layout(text: np.ndarray, words: np.ndarray, vocab: VideoVocab) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and token types of ``[CLS] text [>] video [SEP]`` (or ``[CLS] text [SEP]`` / ``[CLS] video [SEP]``
    when one part is empty).

    Shapes:
        text: (t,) WordPiece ids; words: (w,) visual-word vocabulary ids → ids (T,), types (T,).
    """
    if text.size and words.size:
        ids = np.concatenate([[vocab.cls], text, [vocab.separator], words, [vocab.sep]])
        types = np.r_[np.zeros(text.size + 2, np.int64), np.ones(words.size + 1, np.int64)]
    elif text.size:
        ids = np.concatenate([[vocab.cls], text, [vocab.sep]])
        types = np.zeros(ids.size, np.int64)
    else:
        ids = np.concatenate([[vocab.cls], words, [vocab.sep]])
        types = np.r_[0, np.ones(words.size + 1, np.int64)]
    return ids.astype(np.int64), types


def build_segments(
    words: dict[str, tuple[np.ndarray, np.ndarray]],
    transcripts: dict[str, list[Sentence]],
    encode,
    clip_seconds: float,
    visual_offset: int,
    segment_words: int,
) -> tuple[list[list[Segment]], dict[str, int]]:
    """Segments per video, in time order, and counts of what was found.

    Args:
        words: video id → (visual words (n,), clip start times (n,)).
        transcripts: video id → sentences.
        encode: list of texts → list of WordPiece id lists (no special tokens).
        clip_seconds: clip length; a clip belongs to the sentence holding its midpoint.
        visual_offset: vocabulary id of visual word 0.
        segment_words: words per segment for videos without a transcript.
    """
    counts = dict(videos=0, with_transcript=0, sentences=0, sentences_without_video=0, transcripts_without_video=0)
    counts["transcripts_without_video"] = len(set(transcripts) - set(words))
    out: list[list[Segment]] = []
    for vid in sorted(words):
        w, starts = words[vid]
        ids = w.astype(np.int64) + visual_offset
        index = len(out)
        segs: list[Segment] = []
        if vid in transcripts and transcripts[vid]:
            counts["with_transcript"] += 1
            sentences = transcripts[vid]
            mid = starts + clip_seconds / 2
            texts = encode([s.text for s in sentences])
            for s, t in zip(sentences, texts):
                inside = ids[(mid >= s.start) & (mid < s.end)]
                counts["sentences"] += 1
                counts["sentences_without_video"] += inside.size == 0
                segs.append(Segment(index, np.asarray(t, dtype=np.int64), inside))
        else:
            for s in range(0, len(ids), segment_words):
                segs.append(Segment(index, np.zeros(0, dtype=np.int64), ids[s : s + segment_words]))
        if segs:
            out.append(segs)
            counts["videos"] += 1
    return out, counts


class VideoTextDataset(Dataset):
    """Examples of the three regimes over a list of videos' segments (see the module docstring).

    Args:
        videos: per video, its segments in time order.
        vocab: the vocabulary layout.
        regime_weights: weights of text-only, video-only and text-video examples.
        max_seq_length, align_negative_prob, max_stride, max_sentences, mask_prob, max_predictions: see
            :class:`VideoTextDataModule`.
        seed: ``None`` draws a fresh example on every access (training); an int fixes example ``i`` (validation).
    """

    def __init__(
        self,
        videos: list[list[Segment]],
        vocab: VideoVocab,
        regime_weights: tuple[float, float, float],
        max_seq_length: int,
        align_negative_prob: float,
        max_stride: int,
        max_sentences: int,
        mask_prob: float,
        max_predictions: int | None,
        seed: int | None,
    ) -> None:
        self.videos = videos
        self.vocab = vocab
        self.weights = np.asarray(regime_weights, dtype=np.float64)
        # a segment is used only if a regime with a positive weight can be made from it
        self.index = [
            (v, s) for v, segs in enumerate(videos) for s, g in enumerate(segs) if self._feasible(g.text, g.words).any()
        ]
        unused = sum(len(segs) for segs in videos) - len(self.index)
        if unused:
            log.info("%d segments fit no regime with a positive weight (e.g. no text, text-only): not used", unused)
        self.max_len = max_seq_length
        self.neg_prob = align_negative_prob
        self.max_stride = max_stride
        self.max_sentences = max_sentences
        self.mask_prob = mask_prob
        self.max_predictions = max_predictions
        self.seed = seed
        specials = {vocab.pad, vocab.cls, vocab.sep, vocab.mask}
        self.text_replacements = np.array([i for i in range(vocab.text_size) if i not in specials], dtype=np.int64)
        self.word_replacements = np.arange(vocab.visual_offset, vocab.size, dtype=np.int64)

    def _feasible(self, text: np.ndarray, words: np.ndarray) -> np.ndarray:
        """Weights of the regimes that text and words allow. Shape: (3,)."""
        return self.weights * np.array([text.size > 0, words.size > 0, text.size > 0 and words.size > 0])

    def __len__(self) -> int:
        return len(self.index)

    def _rng(self, i: int) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng(int(torch.randint(2**62, (1,))))
        return np.random.default_rng([self.seed, i])

    def _span(self, v: int, s: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Text and words of 1 … max_sentences neighbouring segments starting at segment s of video v."""
        segs = self.videos[v][s : s + int(rng.integers(1, self.max_sentences + 1))]
        return np.concatenate([g.text for g in segs]), np.concatenate([g.words for g in segs])

    def _subsample(self, words: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        stride = int(rng.integers(1, self.max_stride + 1))
        return words[int(rng.integers(stride)) :: stride] if words.size > stride else words[:1]

    def _other_video_words(self, v: int, rng: np.random.Generator) -> np.ndarray:
        """Words of a random segment with video from another video (the same video only if it is the only one)."""
        others = [u for u in range(len(self.videos)) if u != v] or [v]
        for _ in range(20):
            u = others[int(rng.integers(len(others)))]
            segs = [g for g in self.videos[u] if g.words.size]
            if segs:
                return segs[int(rng.integers(len(segs)))].words
        return self.videos[v][0].words

    def __getitem__(self, i: int) -> Example:
        rng = self._rng(i)
        v, s = self.index[i]
        text, words = self._span(v, s, rng)
        feasible = self._feasible(text, words)  # never all zero: the span holds an indexed segment
        regime = int(rng.choice(3, p=feasible / feasible.sum()))
        pair = IGNORE_INDEX
        if regime == TEXT_VIDEO:
            pair = int(rng.random() < self.neg_prob)
            if pair:
                words = self._other_video_words(v, rng)
        if regime != TEXT_ONLY:
            words = self._subsample(words, rng)
        if regime == VIDEO_ONLY:
            text = text[:0]
        if regime == TEXT_ONLY:
            words = words[:0]
        return self.encode(text, words, pair, rng)

    def encode(self, text: np.ndarray, words: np.ndarray, pair: int, rng: np.random.Generator) -> Example:
        """Lay out, truncate and mask one example."""
        vb = self.vocab
        both = text.size > 0 and words.size > 0
        budget = self.max_len - (3 if both else 2)
        while text.size + words.size > budget:  # BERT's truncate_seq_pair: trim the longer part at its end
            if text.size >= words.size:
                text = text[:-1]
            else:
                words = words[:-1]
        ids, types = layout(text, words, vb)
        is_text = np.zeros(ids.size, bool)
        is_text[1 : 1 + text.size] = True
        is_word = (ids >= vb.visual_offset) & ~is_text
        labels = np.full(ids.size, IGNORE_INDEX, np.int64)
        for where, pool in ((is_text, self.text_replacements), (is_word, self.word_replacements)):
            if where.any():
                ids, part = mask_tokens(
                    ids, rng, mask_token_id=vb.mask, maskable=where, replacement_ids=pool,
                    mask_prob=self.mask_prob, max_predictions=self.max_predictions,
                )
                labels = np.where(part != IGNORE_INDEX, part, labels)
        return Example(ids, types, labels, pair)


def collate(examples: list[Example], pad_id: int = 0) -> TokenBatch:
    """Pad a list of encoded examples to the longest one."""
    T = max(e[0].size for e in examples)
    B = len(examples)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    types = torch.zeros(B, T, dtype=torch.long)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    for b, (ids, tt, lab, _) in enumerate(examples):
        n = ids.size
        input_ids[b, :n] = torch.from_numpy(ids)
        types[b, :n] = torch.from_numpy(tt)
        labels[b, :n] = torch.from_numpy(lab)
        mask[b, :n] = 1
    pairs = torch.tensor([e[3] for e in examples], dtype=torch.long)
    return TokenBatch(input_ids, mask, types, labels, pairs)


def _is_val(video_id: str, val_fraction: float, seed: int) -> bool:
    h = hashlib.sha1(f"{seed}:{video_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < val_fraction


class VideoTextDataModule(pl.LightningDataModule):
    """VideoBERT pretraining batches from tokenized videos and their transcripts.

    Args:
        tokens_dir: output folder of ``multibert tokenize-video`` (``words/``, ``codebook.safetensors``,
            ``manifest.json``).
        vocab_file: the WordPiece ``vocab.txt`` (a text checkpoint's, when starting from one).
        transcripts: folder of ``<video_id>.vtt`` / ``.srt`` or a YouCook2 / HowTo100M JSON file; ``None`` takes
            the one recorded in the manifest, if any.
        max_seq_length: longest example in tokens, specials included.
        text_only_weight: weight of text-only examples.
        video_only_weight: weight of video-only examples.
        text_video_weight: weight of text-video examples (the only ones with an alignment label).
        align_negative_prob: share of text-video examples whose video comes from another video (paper: 0.5).
        max_stride: video words are subsampled with a stride drawn from 1 … ``max_stride`` (paper: 5).
        max_sentences: 1 … ``max_sentences`` neighbouring sentences are concatenated into one example.
        segment_words: segment length, in visual words, of videos without a transcript (16 in the issue).
        mask_prob: masked-LM rate per modality (BERT: 0.15).
        max_predictions: cap on masked positions per modality and example (``None``: no cap).
        val_fraction: share of videos held out for validation (by a hash of the video id).
        lowercase: lower-case the text (uncased vocabularies).
        batch_size: examples per batch.
        num_workers: DataLoader workers.
        seed: seed of the split and of the validation examples.
    """

    #: vocab_size is V_text + 1 + K and the adapter reads the codebook that made the words: both follow the data.
    model_links: ClassVar[dict[str, str]] = {
        "vocab_size": "config.vocab_size",
        "codebook": "adapter.init_args.codebook",
    }

    def __init__(
        self,
        tokens_dir: str,
        vocab_file: str,
        transcripts: str | None = None,
        max_seq_length: int = 128,
        text_only_weight: float = 1.0,
        video_only_weight: float = 1.0,
        text_video_weight: float = 1.0,
        align_negative_prob: float = 0.5,
        max_stride: int = 5,
        max_sentences: int = 2,
        segment_words: int = 16,
        mask_prob: float = 0.15,
        max_predictions: int | None = None,
        val_fraction: float = 0.1,
        lowercase: bool = True,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # shipped data (datamodules/data/...) resolves from any working directory
        root = resolve_path(tokens_dir)
        self.vocab_file = str(resolve_path(vocab_file))
        manifest = root / "manifest.json"
        if not manifest.is_file():
            raise FileNotFoundError(f"{manifest} does not exist; make {root} with `multibert tokenize-video`")
        self.manifest = json.loads(manifest.read_text(encoding="utf-8"))
        for key in ("clip_seconds", "videos"):
            if key not in self.manifest:
                raise KeyError(f"{manifest} lacks {key!r}; re-run `multibert tokenize-video`")
        if min(text_only_weight, video_only_weight, text_video_weight) < 0 or not (
            text_only_weight + video_only_weight + text_video_weight
        ) > 0:
            raise ValueError("regime weights must be >= 0 and not all 0 (data.text_only_weight, ...)")
        if max_stride < 1 or max_sentences < 1 or segment_words < 1:
            raise ValueError("max_stride, max_sentences and segment_words must be >= 1")
        if max_seq_length < 5:
            raise ValueError(f"max_seq_length={max_seq_length} is too short for [CLS] text [>] video [SEP]")
        self.codebook = str(root / "codebook.safetensors")
        self.vocab = video_vocab(self.vocab_file, self.codebook)
        self.vocab_size = self.vocab.size
        self.tokens_dir = root
        transcripts = transcripts if transcripts is not None else self.manifest.get("transcripts")
        self.transcripts = str(resolve_path(transcripts)) if transcripts else None
        self.train_set: VideoTextDataset | None = None
        self.val_set: VideoTextDataset | None = None

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

    def load_segments(self) -> tuple[list[list[Segment]], list[str]]:
        """All videos' segments (and their ids), with what was found logged."""
        hp = self.hparams
        root = self.tokens_dir
        words = {vid: read_words(root / "words" / f"{vid}.safetensors") for vid in self.manifest["videos"]}
        transcripts = load_transcripts(self.transcripts) if self.transcripts else {}
        if not transcripts and hp.text_only_weight + hp.text_video_weight > 0:
            log.warning("no transcripts: only video-only examples can be made (set data.transcripts)")
        tokenizer = load_wordpiece(self.vocab_file, lowercase=hp.lowercase)

        def encode(texts: list[str]) -> list[list[int]]:
            return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]

        videos, counts = build_segments(
            words, transcripts, encode, float(self.manifest["clip_seconds"]), self.vocab.visual_offset,
            hp.segment_words,
        )
        log.info(
            "video data: %d videos (%d with transcripts), %d sentences (%d without video words), "
            "%d transcripts without a tokenized video, %d videos skipped at tokenization",
            counts["videos"], counts["with_transcript"], counts["sentences"], counts["sentences_without_video"],
            counts["transcripts_without_video"], len(self.manifest.get("skipped", [])),
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
        common = (
            self.vocab,
            (hp.text_only_weight, hp.video_only_weight, hp.text_video_weight),
            hp.max_seq_length, hp.align_negative_prob, hp.max_stride, hp.max_sentences, hp.mask_prob,
            hp.max_predictions,
        )
        self.train_set = VideoTextDataset([g for g, q in zip(videos, val) if not q], *common, seed=None)
        self.val_set = VideoTextDataset([g for g, q in zip(videos, val) if q], *common, seed=hp.seed)
        log.info("video split: %d train / %d validation videos", sum(not q for q in val), sum(val))

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            num_workers=self.hparams.num_workers,
            collate_fn=collate,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.val_set, shuffle=False)
