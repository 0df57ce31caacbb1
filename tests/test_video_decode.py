"""Decoding: frame-rate resampling, clip counts, cropping, bad files (multibert.video.decode)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from datamodules.video.synthetic import write_video
from multibert.video.decode import (
    DecodeReport,
    SkipLog,
    VideoDecodeError,
    expected_clips,
    iter_clips,
    iter_frames,
    list_videos,
    safe_clips,
)


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


# ----------------------------------------------------------------- bad input, named (issue 10: videos)
def _write(path, frames, fps: int, codec: str = "mpeg4", rotation: int | None = None, first_pts: int = 0):
    """Encode frames with PyAV, optionally with a display rotation and timestamps that start at ``first_pts``."""
    import fractions

    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts, frame.time_base = first_pts + i, fractions.Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _landscape(n: int = 10) -> list[np.ndarray]:
    """32×64 frames, white in the left quarter, grey in the top half of the rest (an asymmetric picture)."""
    f = np.zeros((32, 64, 3), np.uint8)
    f[:, :16] = 255
    f[:16, 16:] = 120
    return [f.copy() for _ in range(n)]


@pytest.mark.parametrize("rotation", [90, 180, -90])
def test_display_rotation_is_applied(tmp_path, rotation):
    src = _landscape()
    path = _write(tmp_path / f"r{rotation}.mp4", src, fps=10, rotation=rotation)
    _, frame = next(iter_frames(path, fps=10, size=None))
    expect = np.rot90(src[0], rotation // 90)  # counter-clockwise quarter turns, as the display matrix says
    assert frame.shape == expect.shape
    assert np.abs(frame.astype(int) - expect.astype(int)).mean() < 8  # codec error only
    # scaled + cropped: the shorter side of the *upright* frame is the one scaled to the size
    report = DecodeReport()
    clip = next(iter_clips(path, fps=10, clip_frames=5, size=16, report=report))
    assert clip.frames.shape == (5, 16, 16, 3) and report.rotation == rotation
    side = _write(tmp_path / "plain.mp4", [np.ascontiguousarray(expect)] * 10, fps=10)
    plain = next(iter_clips(side, fps=10, clip_frames=5, size=16))
    assert np.abs(clip.frames.astype(int) - plain.frames.astype(int)).mean() < 8


def test_timestamps_that_start_late_make_no_frozen_clips(tmp_path):
    frames = [np.full((32, 32, 3), 8 * i, np.uint8) for i in range(30)]  # 3 s of a brightening picture
    path = _write(tmp_path / "late.mp4", frames, fps=10, first_pts=20)  # the first frame at 2.0 s
    report = DecodeReport()
    clips = list(iter_clips(path, fps=10, clip_frames=10, size=16, report=report))
    assert len(clips) == 3  # 3 s of frames: no clip of the first frame held for 2 s
    assert [c.start for c in clips] == pytest.approx([0.0, 1.0, 2.0])  # playback time, from the container start
    means = [float(c.frames[:, 4:-4, 4:-4].mean()) for c in clips]
    assert means[0] < means[1] < means[2] and clips[0].frames[-1].mean() > clips[0].frames[0].mean() + 40
    assert report.problem() is None


def test_truncated_file_is_named_with_its_loss(tmp_path):
    frames = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(100)]
    full = write_video(tmp_path / "full.mkv", frames, fps=10)  # 10 s, declared in the header
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size * 3 // 10])
    report = DecodeReport()
    clips = list(iter_clips(cut, fps=10, clip_frames=10, size=16, report=report))
    assert 1 <= len(clips) <= 4 and report.declared_seconds == pytest.approx(10.0)
    assert report.lost_seconds > 6 and report.problem().startswith("truncated: decoded")
    whole = DecodeReport()
    assert len(list(iter_clips(full, fps=10, clip_frames=10, size=16, report=whole))) == 10
    assert whole.problem() is None and whole.lost_seconds == pytest.approx(0.0, abs=0.05)


def test_late_decode_error_keeps_the_clips_before_it(tmp_path):
    frames = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(100)]
    data = bytearray(write_video(tmp_path / "good.mp4", frames, fps=10).read_bytes())
    middle = len(data) // 2
    data[middle : middle + 20000] = b"\xff" * 20000  # garbage half-way: FFmpeg fails at about 5 s
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    with pytest.raises(VideoDecodeError, match="bad.mp4: decoding failed"):
        list(iter_clips(bad, fps=10, clip_frames=10, size=16))  # without a report: strict
    report = DecodeReport()
    clips = list(iter_clips(bad, fps=10, clip_frames=10, size=16, report=report))
    assert 3 <= len(clips) <= 6 and report.error is not None
    assert "decoding failed at" in report.problem() and "lost" in report.problem()
    skips = SkipLog()
    kept = safe_clips(bad, skips, fps=10, clip_frames=10, size=16)
    assert len(kept) == len(clips) and len(skips) == 0


def test_exact_resize_for_torchvision_style_transforms(tmp_path):
    path = _write(tmp_path / "wide.mp4", _landscape(), fps=10)
    clip = next(iter_clips(path, fps=10, clip_frames=5, size=(20, 24)))
    assert clip.frames.shape == (5, 20, 24, 3)
    assert clip.frames[:, :, :4].mean() > 230  # the left quarter stays white: squashed, not cropped
