"""VideoBERT examples: sequence format, segment ids, regimes, alignment pairs, augmentation (datamodules.video.datamodule)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from datamodules.video.datamodule import VideoTextDataModule, collate
from multibert.core.batch import IGNORE_INDEX
from multibert.video.tokenize import tokenize_videos

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "cut", "the", "onion", "add", "salt", "stir", "pot", "now"]
N_VIDEOS, CLIPS, D = 6, 12, 4  # 12 clips of 1.5 s = 18 s per video


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Precomputed features where video v's clips sit around centre v·10 (so words tell videos apart)."""
    root = tmp_path_factory.mktemp("video")
    (root / "feats").mkdir()
    g = np.random.default_rng(0)
    for v in range(N_VIDEOS):
        feats = v * 10.0 + 0.01 * g.standard_normal((CLIPS, D))
        feats[:, 1] += np.arange(CLIPS) * 0.001
        np.save(root / "feats" / f"vid{v}.npy", feats.astype(np.float32))
    captions = {
        f"vid{v}": {"start": [0.0, 6.0, 12.0], "end": [6.0, 12.0, 18.0],
                    "text": ["cut the onion", "add the salt now", "stir the pot"]}
        for v in range(N_VIDEOS - 1)  # the last video has no transcript
    }
    (root / "caption.json").write_text(json.dumps(captions))
    (root / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    tokenize_videos(str(root / "tokens"), features_dir=str(root / "feats"), transcripts=str(root / "caption.json"),
                    clip_frames=30, fps=20.0, depth=2, branching=3, progress=False)
    return root


def make(data, **kw) -> VideoTextDataModule:
    args = dict(tokens_dir=str(data / "tokens"), vocab_file=str(data / "vocab.txt"), val_fraction=0.0,
                max_seq_length=40, segment_words=4, batch_size=4)
    dm = VideoTextDataModule(**{**args, **kw})
    dm.setup("fit")
    return dm


def originals(ids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.where(labels != IGNORE_INDEX, labels, ids)


def test_vocabulary_size_and_extended_vocab(data):
    dm = make(data)
    assert dm.vocab_size == len(WORDS) + 1 + 9 == dm.vocab.size
    lines = dm.state_dict()["vocab"].splitlines()
    assert len(lines) == dm.vocab_size and lines[13] == "[>]" and lines[14] == "[VW0]"
    dm.load_state_dict(dm.state_dict())  # resuming with the same vocabulary is fine
    with pytest.raises(ValueError, match="different text vocabulary or number of visual words"):
        dm.load_state_dict({"vocab": "\n".join(lines[:-1]) + "\n"})


def test_text_video_sequence_format_and_segment_ids(data):
    dm = make(data, text_only_weight=0, video_only_weight=0, max_stride=1, max_sentences=1, align_negative_prob=0.0)
    ds, vb = dm.train_set, dm.vocab
    for i in range(len(ds)):
        ids, types, labels, pair = ds[i]
        orig = originals(ids, labels)
        sep = int(np.flatnonzero(orig == vb.separator)[0])
        assert orig[0] == vb.cls and orig[-1] == vb.sep and pair == 0
        assert np.all((orig[1:sep] >= 5) & (orig[1:sep] < 13))  # text
        assert np.all(orig[sep + 1 : -1] >= vb.visual_offset)  # visual words
        assert np.all(types[: sep + 1] == 0) and np.all(types[sep + 1 :] == 1)
        assert sep + 1 < len(ids) - 1 and (labels != IGNORE_INDEX).sum() >= 2  # both parts masked


def test_aligned_video_is_the_sentence_span(data):
    dm = make(data, text_only_weight=0, video_only_weight=0, max_stride=1, max_sentences=1, align_negative_prob=0.0,
              mask_prob=0.0)
    ds = dm.train_set
    v, s = ds.index[1]
    assert ds.videos[v][1].words.size == 4  # clips with midpoints in [6, 12): 4 clips of 1.5 s
    ids, _, labels, _ = ds[1]
    assert np.array_equal(originals(ids, labels)[-5:-1], ds.videos[v][1].words)


def test_alignment_labels_are_balanced_and_negatives_come_from_other_videos(data):
    dm = make(data, text_only_weight=0, video_only_weight=0, max_stride=1, max_sentences=1)
    ds, vb = dm.train_set, dm.vocab
    torch.manual_seed(0)
    pairs, foreign = [], []
    own_words = [set(np.concatenate([g.words for g in segs]).tolist()) for segs in ds.videos]
    for n in range(1500):
        i = n % len(ds)
        ids, _, labels, pair = ds[i]
        orig = originals(ids, labels)
        words = set(orig[orig >= vb.visual_offset].tolist())
        pairs.append(pair)
        foreign.append(not words <= own_words[ds.index[i][0]])
    pairs = np.array(pairs)
    assert abs(pairs.mean() - 0.5) < 0.04  # 1500 draws: 3.1 standard deviations
    assert np.all(np.array(foreign)[pairs == 1]) and not np.any(np.array(foreign)[pairs == 0])


def test_single_modality_regimes(data):
    dm = make(data, video_only_weight=0, text_video_weight=0)
    vb = dm.vocab
    for i in range(len(dm.train_set)):
        ids, types, labels, pair = dm.train_set[i]
        assert pair == IGNORE_INDEX and np.all(types == 0)
        assert not np.any(originals(ids, labels) >= vb.separator)
    dm = make(data, text_only_weight=0, text_video_weight=0)
    for i in range(len(dm.train_set)):
        ids, types, labels, pair = dm.train_set[i]
        orig = originals(ids, labels)
        assert pair == IGNORE_INDEX and np.all(orig[1:-1] >= vb.visual_offset) and types[0] == 0 and np.all(types[1:] == 1)


def test_video_without_transcript_is_cut_into_fixed_segments(data):
    dm = make(data, text_only_weight=0, text_video_weight=0)
    last = dm.train_set.videos[-1]
    assert [g.words.size for g in last] == [4, 4, 4] and all(g.text.size == 0 for g in last)


def test_temporal_subsampling_strides(data):
    dm = make(data, text_only_weight=0, text_video_weight=0, max_stride=3, mask_prob=0.0, segment_words=12)
    ds = dm.train_set
    full = ds.videos[-1][0].words  # the transcript-less video: one segment of 12 words
    i = len(ds) - 1
    lengths = set()
    for _ in range(200):
        ids, _, labels, _ = ds[i]
        got = originals(ids, labels)[1:-1]
        lengths.add(got.size)
        # a stride-k subsequence with a phase: found at some (phase, stride)
        assert any(np.array_equal(got, full[p::k]) for k in (1, 2, 3) for p in range(k))
    assert lengths == {12, 6, 4}


def test_neighbouring_sentences_are_concatenated(data):
    dm = make(data, video_only_weight=0, text_video_weight=0, max_sentences=3, mask_prob=0.0)
    ds = dm.train_set
    seen = set()
    for _ in range(200):
        ids, _, _, _ = ds[0]
        seen.add(ids.size - 2)
    assert seen == {3, 3 + 4, 3 + 4 + 3}  # "cut the onion" + "add the salt now" + "stir the pot"


def test_masking_keeps_replacements_within_their_modality(data):
    dm = make(data, text_only_weight=0, video_only_weight=0, mask_prob=0.5, align_negative_prob=0.0, max_stride=1)
    vb, ds = dm.vocab, dm.train_set
    replaced = 0
    for n in range(400):
        ids, _, labels, _ = ds[n % len(ds)]
        at = (labels != IGNORE_INDEX) & (ids != vb.mask) & (ids != labels)
        for pos in np.flatnonzero(at):
            replaced += 1
            assert (labels[pos] >= vb.visual_offset) == (ids[pos] >= vb.visual_offset)
            assert ids[pos] not in (vb.cls, vb.sep, vb.pad, vb.mask, vb.separator)
    assert replaced > 20


def test_truncation_keeps_both_parts(data):
    dm = make(data, text_only_weight=0, video_only_weight=0, max_seq_length=8, max_stride=1, max_sentences=3)
    for i in range(len(dm.train_set)):
        ids, types, _, _ = dm.train_set[i]
        assert ids.size <= 8 and types[1] == 0 and types[-2] == 1


def test_validation_examples_are_fixed_and_the_batches_typed(data):
    dm = make(data, val_fraction=0.3)
    assert len(dm.val_set) > 0 and len(dm.train_set) > 0
    a, b = dm.val_set[0], dm.val_set[0]
    assert all(np.array_equal(x, y) for x, y in zip(a[:3], b[:3]))
    batch = next(iter(dm.train_dataloader()))
    assert batch.input_ids.shape == batch.mlm_labels.shape == batch.token_type_ids.shape
    assert batch.pair_labels.shape == (4,)
    assert torch.equal(batch.attention_mask.bool(), batch.input_ids != 0)


def test_collate_pads():
    ex = [
        (np.array([2, 5, 3]), np.zeros(3, np.int64), np.full(3, -100), 0),
        (np.array([2, 3]), np.zeros(2, np.int64), np.full(2, -100), 1),
    ]
    b = collate(ex)
    assert b.input_ids.tolist() == [[2, 5, 3], [2, 3, 0]] and b.attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]


def test_errors(data, tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenize-video"):
        VideoTextDataModule(tokens_dir=str(tmp_path), vocab_file=str(data / "vocab.txt"))
    with pytest.raises(ValueError, match="regime weights"):
        VideoTextDataModule(tokens_dir=str(data / "tokens"), vocab_file=str(data / "vocab.txt"),
                            text_only_weight=0, video_only_weight=0, text_video_weight=0)
