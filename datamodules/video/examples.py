"""VideoBERT's training examples (Sun et al., "VideoBERT", ICCV 2019, arXiv 1904.01766, Sec. 3.3 and 4.2): the
joint vocabulary layout, sentence segments with enough video, and the three regimes; :mod:`datamodules.video.datamodule`
reads the inputs and serves these examples.

Each example is one of the paper's three regimes, drawn with the shares ``text_only_weight`` /
``video_only_weight`` / ``text_video_weight`` among those the segment allows:

- text-only      ``[CLS] text [SEP]``                 token types 0 …; masked-LM on text
- video-only     ``[CLS] video [SEP]``                [CLS] 0, the rest 1; masked-LM on visual words
- text-video     ``[CLS] text [>] video [SEP]``       text and ``[>]`` 0, video and ``[SEP]`` 1; masked-LM on both,
  plus alignment: with ``align_negative_prob`` (paper: 0.5) the video part comes from another video
  (``pair_labels`` 1), else it is the sentence's own (0); single-modality examples carry ``IGNORE_INDEX``.

Batches are :class:`~multibert.core.pretraining.RegimeTokenBatch` es: each example's regime travels with it, and the
task weighs the regimes' losses (``model.regime_weights``; the regime names are linked to the model).

Augmentations from the paper: a random number (1 … ``max_sentences``) of neighbouring sentences is concatenated
into one text (and their video spans into one segment), and video words are subsampled with a random stride
1 … ``max_stride`` (paper: 1–5; never below ``min_clips`` words) and a random phase. Masking is BERT's 80/10/10
(:mod:`datamodules.masking`) over the **joint** sequence: ``mask_prob`` of all its text and visual-word positions
(at least one per example), a random replacement staying within its position's modality.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.masking import mask_tokens
from datamodules.tokenizer import load_wordpiece
from datamodules.video.transcripts import Sentence
from multibert.core.batch import IGNORE_INDEX
from multibert.core.pretraining import RegimeTokenBatch
from multibert.video.quantize import read_codebook_metadata

log = logging.getLogger(__name__)

TEXT_ONLY, VIDEO_ONLY, TEXT_VIDEO = 0, 1, 2
REGIMES = ("text_only", "video_only", "text_video")


@dataclass(frozen=True)
class Segment:
    """One sentence (or fixed-length stretch) of one video: its WordPiece ids and its visual words (vocab ids)."""

    video: int
    text: np.ndarray
    words: np.ndarray


class Example(NamedTuple):
    """One encoded example. Shapes: input_ids, token_type_ids, mlm_labels (T,); pair_label: 0, 1 or IGNORE_INDEX;
    regime: 0 text-only, 1 video-only, 2 text-video."""

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    mlm_labels: np.ndarray
    pair_label: int
    regime: int = TEXT_VIDEO


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


def trimmed_lengths(t: int, w: int, budget: int) -> tuple[int, int]:
    """Lengths BERT's ``truncate_seq_pair`` leaves (remove one token at a time from the longer part, the first on a
    tie), in O(1)."""
    excess = t + w - budget
    if excess <= 0:
        return t, w
    if t >= w:
        cut = min(excess, t - w)
        t -= cut
    else:
        cut = min(excess, w - t)
        w -= cut
    rest = excess - cut  # now t == w (or nothing is left to cut): alternate, the first part first
    return t - (rest + 1) // 2, w - rest // 2


def _join(a: Segment, b: Segment) -> Segment:
    return Segment(a.video, np.concatenate([a.text, b.text]), np.concatenate([a.words, b.words]))


def merge_short(segs: list[Segment], min_clips: int) -> tuple[list[Segment], int]:
    """Merge each segment with fewer than ``min_clips`` visual words into the next (a short tail into the previous).

    Returns the merged segments and how many merges were made. A video with fewer than ``min_clips`` words in all
    keeps its segments, without their words (text only).
    """
    if min_clips <= 1:
        return segs, 0
    if sum(g.words.size for g in segs) < min_clips:
        return [Segment(g.video, g.text, g.words[:0]) for g in segs if g.text.size], 0
    out: list[Segment] = []
    pending: Segment | None = None
    merges = 0
    for g in segs:
        if pending is not None:
            g, merges = _join(pending, g), merges + 1
        pending = None
        if g.words.size >= min_clips:
            out.append(g)
        else:
            pending = g
    if pending is not None:
        out[-1] = _join(out[-1], pending)
        merges += 1
    return out, merges


def build_segments(
    words: dict[str, tuple[np.ndarray, np.ndarray]],
    transcripts: dict[str, list[Sentence]],
    encode,
    clip_seconds: float,
    visual_offset: int,
    segment_words: int,
    min_clips: int = 1,
) -> tuple[list[list[Segment]], dict[str, int]]:
    """Segments per video, in time order, and counts of what was found.

    Args:
        words: video id → (visual words (n,), clip start times (n,)).
        transcripts: video id → sentences.
        encode: list of texts → list of WordPiece id lists (no special tokens).
        clip_seconds: clip length; a clip belongs to the sentence holding its midpoint.
        visual_offset: vocabulary id of visual word 0.
        segment_words: words per segment for videos without a transcript.
        min_clips: segments with fewer visual words are merged with their neighbours (:func:`merge_short`).
    """
    counts = dict(videos=0, with_transcript=0, sentences=0, sentences_without_video=0, transcripts_without_video=0,
                  merged=0, videos_too_short=0)
    counts["transcripts_without_video"] = len(set(transcripts) - set(words))
    out: list[list[Segment]] = []
    for vid in sorted(words):
        w, starts = words[vid]
        ids = w.astype(np.int64) + visual_offset
        index = len(out)
        segs: list[Segment] = []
        if transcripts.get(vid):
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
        counts["videos_too_short"] += 0 < ids.size < min_clips
        segs, merges = merge_short(segs, min_clips)
        counts["merged"] += merges
        if segs:
            out.append(segs)
            counts["videos"] += 1
    return out, counts


class VideoTextDataset(Dataset):
    """Examples of the three regimes over a list of videos' segments (see the module docstring).

    Items are keyed by ``(epoch, index)`` (an int index means epoch 0); the example is a pure function of
    ``(seed, epoch, index)``.

    Args:
        videos: per video, its segments in time order.
        vocab: the vocabulary layout.
        regime_weights: shares of text-only, video-only and text-video examples.
        max_seq_length, align_negative_prob, max_stride, max_sentences, mask_prob, max_predictions, min_clips:
            see :class:`VideoTextDataModule`.
        seed: seed of every draw.
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
        seed: int,
        min_clips: int = 1,
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
        self.min_clips = max(1, min_clips)
        specials = {vocab.pad, vocab.cls, vocab.sep, vocab.mask}
        text_pool = np.array([i for i in range(vocab.text_size) if i not in specials], dtype=np.int64)
        word_pool = np.arange(vocab.visual_offset, vocab.size, dtype=np.int64)
        self.pools = (text_pool, word_pool)  # random replacements stay within their modality
        self.with_video = [u for u, segs in enumerate(videos) if any(g.words.size for g in segs)]

    def _feasible(self, text: np.ndarray, words: np.ndarray) -> np.ndarray:
        """Weights of the regimes that text and words allow. Shape: (3,)."""
        return self.weights * np.array([text.size > 0, words.size > 0, text.size > 0 and words.size > 0])

    def __len__(self) -> int:
        return len(self.index)

    def _span(self, v: int, s: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Text and words of 1 … max_sentences neighbouring segments starting at segment s of video v."""
        segs = self.videos[v][s : s + int(rng.integers(1, self.max_sentences + 1))]
        return np.concatenate([g.text for g in segs]), np.concatenate([g.words for g in segs])

    def _subsample(self, words: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A stride drawn from 1 … max_stride that keeps at least ``min_clips`` words, and a random phase."""
        top = max(1, min(self.max_stride, words.size // self.min_clips))
        stride = int(rng.integers(1, top + 1))
        return words[int(rng.integers(stride)) :: stride]

    def _other_video_words(self, v: int, rng: np.random.Generator) -> np.ndarray:
        """Words of a random segment with video from another video (the same video only if it is the only one)."""
        others = [u for u in self.with_video if u != v] or [v]
        u = others[int(rng.integers(len(others)))]
        segs = [g for g in self.videos[u] if g.words.size]
        return segs[int(rng.integers(len(segs)))].words

    def __getitem__(self, key: int | tuple[int, int]) -> Example:
        epoch, i = key if isinstance(key, tuple) else (0, key)
        rng = np.random.default_rng([self.seed, epoch, i])
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
        return self.encode(text, words, pair, rng, regime)

    def encode(
        self, text: np.ndarray, words: np.ndarray, pair: int, rng: np.random.Generator, regime: int = TEXT_VIDEO
    ) -> Example:
        """Lay out, truncate and mask one example (jointly over text and visual words)."""
        vb = self.vocab
        both = text.size > 0 and words.size > 0
        budget = self.max_len - (3 if both else 2)
        if text.size + words.size > budget:  # BERT's truncate_seq_pair: trim the longer part at its end
            t, w = trimmed_lengths(text.size, words.size, budget)
            text, words = text[:t], words[:w]
        ids, types = layout(text, words, vb)
        is_text = np.zeros(ids.size, bool)
        is_text[1 : 1 + text.size] = True
        is_word = (ids >= vb.visual_offset) & ~is_text
        ids, labels = mask_tokens(
            ids, rng, mask_token_id=vb.mask, maskable=is_text | is_word, replacement_ids=self.pools,
            mask_prob=self.mask_prob, max_predictions=self.max_predictions, replacement_groups=is_word.astype(np.int64),
        )
        return Example(ids, types, labels, pair, regime)


def collate(examples: list[Example], pad_id: int = 0) -> RegimeTokenBatch:
    """Pad a list of encoded examples to the longest one."""
    T = max(e.input_ids.size for e in examples)
    B = len(examples)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    types = torch.zeros(B, T, dtype=torch.long)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    for b, e in enumerate(examples):
        n = e.input_ids.size
        input_ids[b, :n] = torch.from_numpy(e.input_ids)
        types[b, :n] = torch.from_numpy(e.token_type_ids)
        labels[b, :n] = torch.from_numpy(e.mlm_labels)
        mask[b, :n] = 1
    pairs = torch.tensor([e.pair_label for e in examples], dtype=torch.long)
    regimes = torch.tensor([e.regime for e in examples], dtype=torch.long)
    return RegimeTokenBatch(input_ids, mask, types, labels, pairs, regimes)
