"""The picture of visual words (multibert.video.montage): strips of frames that show motion, a title without
internal folder names, progress lines."""

from __future__ import annotations

import logging

import numpy as np

from datamodules.video.synthetic import make_synthetic_videos
from multibert.video.montage import clip_strip, visual_word_montage
from multibert.video.tokenize import tokenize_videos


def test_clip_strip_shows_first_middle_and_last_frame():
    frames = np.stack([np.full((4, 4, 3), i, np.uint8) for i in range(30)])  # frame i has value i
    strip = clip_strip(frames, 3)
    assert strip.shape == (4, 12, 3)
    assert [int(strip[0, 4 * j, 0]) for j in range(3)] == [0, 15, 29]


def test_montage_of_a_tokenized_folder(tmp_path, monkeypatch, caplog):
    make_synthetic_videos(out=str(tmp_path / "raw"), num_videos=3, num_test_videos=0, actions_per_video=2, size=32)
    tok = tmp_path / "secret_internal_folder"
    tokenize_videos(str(tok), videos=str(tmp_path / "raw" / "train"), extractor="light", fps=10, clip_frames=15,
                    size=32, depth=1, branching=3, num_workers=0, progress=False, trainer={"accelerator": "cpu"})
    import matplotlib.figure

    titles = []
    real = matplotlib.figure.Figure.suptitle
    monkeypatch.setattr(matplotlib.figure.Figure, "suptitle", lambda self, t, **kw: titles.append(t) or real(self, t, **kw))
    with caplog.at_level(logging.INFO, logger="multibert"):
        path = visual_word_montage(tokens_dir=str(tok), out=str(tmp_path / "m.png"), words=2, clips_per_word=2,
                                   frames_per_clip=3, frame_size=32)
    from PIL import Image

    width, height = Image.open(path).size
    assert width > 2 * height  # two strips of three frames per row, two rows
    assert titles and "secret_internal_folder" not in titles[0] and "first to last" in titles[0]
    assert "montage: decoding clips" in caplog.text  # progress as a log line: stderr is not a terminal here
