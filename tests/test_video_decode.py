"""Decoding: frame-rate resampling, clip counts, cropping, bad files (multibert.video.decode)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from datamodules.video.synthetic import write_video
from multibert.video.decode import SkipLog, expected_clips, iter_clips, iter_frames, list_videos, safe_clips


def _frames(n: int, h: int = 48, w: int = 64):
    for i in range(n):
        frame = np.zeros((h, w, 3), np.uint8)
        frame[:, : (i * 7) % w] = 200  # a bar that grows, so frames differ
        yield frame


@pytest.fixture(scope="module")
def video_25fps(tmp_path_factory):
    """4.0 s at 25 fps (100 frames), 64×48."""
    return write_video(tmp_path_factory.mktemp("v") / "a.mp4", _frames(100), fps=25)


@pytest.mark.parametrize("fps,clip_frames", [(20, 30), (10, 15), (30, 30), (7, 5)])
def test_clip_count_at_another_fps(video_25fps, fps, clip_frames):
    clips = list(iter_clips(video_25fps, fps=fps, clip_frames=clip_frames, size=32))
    assert len(clips) == expected_clips(4.0, fps, clip_frames) == int(4.0 * fps) // clip_frames
    assert all(c.frames.shape == (clip_frames, 32, 32, 3) and c.frames.dtype == np.uint8 for c in clips)
    assert [c.start for c in clips] == pytest.approx([i * clip_frames / fps for i in range(len(clips))])


def test_resampled_frames_are_held_source_frames(video_25fps):
    # at 20 fps, target instant n/20 shows source frame floor(n/20 * 25): 0,1,2,3,5,6,7,8,10,...
    times, frames = zip(*iter_frames(video_25fps, fps=20, size=None))
    assert len(frames) == 80
    assert times[:3] == pytest.approx((0.0, 0.05, 0.10))
    width = [int((f[:, :, 0] > 100).all(axis=0).sum()) for f in frames]  # bar width = 7 · source index (mod 64)
    expect = [(int(n * 25 / 20) * 7) % 64 for n in range(80)]
    assert np.mean(np.abs(np.array(width) - np.array(expect)) <= 2) > 0.95  # codec blur at the bar's edge


def test_center_crop_of_wide_frames(tmp_path):
    frames = []
    for _ in range(10):
        f = np.zeros((40, 80, 3), np.uint8)
        f[:, 20:60] = 255  # the central square of a 2:1 frame
        frames.append(f)
    path = write_video(tmp_path / "wide.mp4", frames, fps=10)
    clip = next(iter_clips(path, fps=10, clip_frames=10, size=20))
    assert clip.frames.shape == (10, 20, 20, 3)
    assert clip.frames[:, 2:-2, 2:-2].mean() > 230  # the crop kept the white centre, not the black sides


def test_bad_files_are_skipped_and_counted(tmp_path, video_25fps, caplog):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(video_25fps.read_bytes()[:2000])
    garbage = tmp_path / "garbage.mkv"
    garbage.write_bytes(b"\x00not a video" * 100)
    skips = SkipLog()
    with caplog.at_level(logging.WARNING):
        results = [safe_clips(p, skips, fps=10, clip_frames=10, size=16) for p in (empty, truncated, garbage, video_25fps)]
    assert results[:3] == [None, None, None]
    assert len(results[3]) == 4
    assert len(skips) == 3
    assert {p for p, _ in skips.skipped} == {str(empty), str(truncated), str(garbage)}
    assert str(truncated) in caplog.text


def test_too_short_video_is_a_counted_skip(tmp_path):
    path = write_video(tmp_path / "short.mp4", _frames(5), fps=25)
    skips = SkipLog()
    assert safe_clips(path, skips, fps=20, clip_frames=30, size=16) is None
    assert "shorter than one clip" in skips.skipped[0][1]


def test_webm_vp9(tmp_path):
    path = write_video(tmp_path / "a.webm", _frames(30), fps=15, codec="libvpx-vp9")
    assert len(list(iter_clips(path, fps=15, clip_frames=10, size=16))) == 3


def test_list_videos(tmp_path):
    with pytest.raises(ValueError, match="no video file"):
        list_videos(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.MP4").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_videos(tmp_path)] == ["b.MP4"]
