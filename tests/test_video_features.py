"""Clip feature extractors (multibert.video.features)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from datamodules.video.synthetic import draw_action
from multibert.video.features import LightFeatures, R3D18Features, S3DFeatures, build_extractor


def _clip(verb: str, noun: str = "square", frames: int = 16, size: int = 32) -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.from_numpy(np.stack(list(draw_action(verb, noun, "red", frames, size, rng))))  # (F, S, S, 3)


def test_light_features_see_motion_growth_and_shape():
    clips = torch.stack([_clip(v) for v in ("push", "pull", "lift", "drop", "grow", "shrink")])
    f = LightFeatures()(clips)
    assert f.shape == (6, 30) and f.dtype == torch.float32
    d_area, d_cx, d_cy = f[:, 16], f[:, 17], f[:, 18]  # changes first → last quarter
    assert d_cx[0] > 0.3 and d_cx[1] < -0.3  # push moves right, pull left
    assert d_cy[2] < -0.3 and d_cy[3] > 0.3  # lift moves up (y down), drop down
    assert d_area[4] > 0.05 and d_area[5] < -0.05
    assert d_cx[2:].abs().max() < 0.1
    bar, square = LightFeatures()(torch.stack([_clip("grow", "bar"), _clip("grow", "square")]))
    assert bar[7] < 0.7 * square[7]  # a bar is less compact than a square
    assert bar[8] > square[8] + 0.3  # and elongated (Hu's φ2)
    spun = LightFeatures()(torch.stack([_clip("rotate", "bar"), _clip("push", "bar")]))
    assert spun[0, 25].abs() > 1.0 > 0.5 > spun[1, 25].abs()  # rotating, not sliding, turns the 2θ moment


def test_light_features_batched_equals_one_by_one():
    clips = torch.stack([_clip("push"), _clip("rotate")])
    m = LightFeatures()
    torch.testing.assert_close(m(clips), torch.cat([m(clips[:1]), m(clips[1:])]))


def test_s3d_needs_weights_or_explicit_random(caplog):
    with pytest.raises(ValueError, match="random_weights=True"):
        S3DFeatures()
    with caplog.at_level(logging.WARNING):
        S3DFeatures(random_weights=True)
    assert "RANDOM weights" in caplog.text


def test_s3d_loads_a_local_torchvision_state_dict(tmp_path):
    from torchvision.models.video import s3d

    net = s3d(weights=None)  # a stand-in for the Kinetics checkpoint: same keys, classifier included
    torch.save(net.state_dict(), tmp_path / "s3d.pth")
    ext = S3DFeatures(weights=str(tmp_path / "s3d.pth"))
    x = torch.randint(0, 255, (2, 16, 32, 32, 3), dtype=torch.uint8)
    with torch.inference_mode():
        f = ext(x)
        net.eval()
        ref = net.features(_norm(x))
    assert f.shape == (2, 1024)
    torch.testing.assert_close(f, ref.mean((2, 3, 4)))


def _norm(x: torch.Tensor) -> torch.Tensor:
    from multibert.video.features import _normalise

    return _normalise(x)


def test_wrong_weight_file_is_refused(tmp_path):
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "w.pth")
    with pytest.raises(ValueError, match="S3D weights missing"):
        S3DFeatures(weights=str(tmp_path / "w.pth"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        R3D18Features(weights=str(tmp_path / "missing.pth"))


def test_r3d18_features():
    ext = build_extractor("r3d_18", random_weights=True)
    with torch.inference_mode():
        f = ext(torch.randint(0, 255, (1, 8, 32, 32, 3), dtype=torch.uint8))
    assert f.shape == (1, 512) and torch.isfinite(f).all()


def test_build_extractor_errors():
    with pytest.raises(ValueError, match="unknown feature extractor 'vit'"):
        build_extractor("vit")
    with pytest.raises(ValueError, match="no weights"):
        build_extractor("light", weights="x.pth")
