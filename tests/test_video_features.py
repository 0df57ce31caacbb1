"""Clip feature extractors (multibert.video.features)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from datamodules.video.synthetic import draw_action
from multibert.video.features import (
    LightFeatures,
    R3D18Features,
    S3DFeatures,
    build_extractor,
)


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


def test_s3d_random_weights_are_explicit_and_warned(caplog):
    with caplog.at_level(logging.WARNING):
        S3DFeatures(random_weights=True)
    assert "RANDOM weights" in caplog.text
    with pytest.raises(ValueError, match="not both"):
        S3DFeatures(weights="w.pth", random_weights=True)


@pytest.fixture
def fake_torch_hub(tmp_path, monkeypatch):
    """TORCH_HOME with torchvision's S3D checkpoint name pre-populated by a random state dict (float16: small)."""
    from torchvision.models.video import s3d

    home = tmp_path / "torch_home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in s3d(weights=None).state_dict().items()}
    torch.save(state, home / "hub" / "checkpoints" / "s3d-d76dad2f.pth")
    monkeypatch.setenv("TORCH_HOME", str(home))

    def no_network(*args, **kwargs):
        raise AssertionError("the test must not download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return state


def test_s3d_kinetics_weights_come_from_the_torch_hub_cache(fake_torch_hub):
    ext = S3DFeatures()  # weights="kinetics400": torchvision's S3D_Weights.KINETICS400_V1
    mine = dict(ext.features.named_parameters())
    key = "0.0.0.weight"
    assert torch.equal(mine[key], fake_torch_hub["features." + key].float())
    assert build_extractor("s3d").feature_size == 1024


def test_s3d_offline_without_cache_names_the_file_to_create(tmp_path, monkeypatch):
    import urllib.error

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    expected = tmp_path / "empty" / "hub" / "checkpoints" / "s3d-d76dad2f.pth"
    with pytest.raises(FileNotFoundError, match="not in the torch hub cache") as err:
        S3DFeatures()
    assert str(expected) in str(err.value) and "weights=<local" in str(err.value)


def test_preprocessing_equals_torchvision_weights_transforms():
    from torchvision.models.video import R3D_18_Weights, S3D_Weights

    g = torch.Generator().manual_seed(0)
    clip = torch.randint(0, 256, (1, 6, 240, 320, 3), dtype=torch.uint8, generator=g)  # (N, F, h, w, 3)
    for ext, weights in ((S3DFeatures(random_weights=True), S3D_Weights), (R3D18Features(random_weights=True), R3D_18_Weights)):
        ref = weights.KINETICS400_V1.transforms()(clip[0].permute(0, 3, 1, 2))  # (T, C, H, W) → (C, T, h, w)
        ours = ext.preprocess(clip)[0]
        assert ours.shape == ref.shape
        torch.testing.assert_close(ours, ref, atol=0, rtol=0)
        # frames the decoder already delivers at resize_size skip the resize: still the transform's output
        sized = clip[:, :, : ext.resize_size[0], : ext.resize_size[1]]
        ref = weights.KINETICS400_V1.transforms()(sized[0].permute(0, 3, 1, 2))
        torch.testing.assert_close(ext.preprocess(sized)[0], ref, atol=0, rtol=0)


def test_s3d_loads_a_local_torchvision_state_dict(tmp_path):
    from torchvision.models.video import s3d

    net = s3d(weights=None)  # a stand-in for the Kinetics checkpoint: same keys, classifier included
    torch.save(net.state_dict(), tmp_path / "s3d.pth")
    ext = S3DFeatures(weights=str(tmp_path / "s3d.pth"), resize_size=36, crop_size=32)
    x = torch.randint(0, 255, (2, 16, 36, 36, 3), dtype=torch.uint8)
    with torch.inference_mode():
        f = ext(x)
        net.eval()
        ref = net.features(ext.preprocess(x))
    assert f.shape == (2, 1024)
    torch.testing.assert_close(f, ref.mean((2, 3, 4)))


def test_wrong_weight_file_is_refused(tmp_path):
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "w.pth")
    with pytest.raises(ValueError, match="S3D weights missing"):
        S3DFeatures(weights=str(tmp_path / "w.pth"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        R3D18Features(weights=str(tmp_path / "missing.pth"))


def test_r3d18_features():
    ext = build_extractor("r3d_18", random_weights=True, size=32)
    assert (ext.resize_size, ext.crop_size) == ((37, 49), (32, 32))
    with torch.inference_mode():
        f = ext(torch.randint(0, 255, (1, 8, 37, 49, 3), dtype=torch.uint8))
    assert f.shape == (1, 512) and torch.isfinite(f).all()


def test_build_extractor_errors():
    with pytest.raises(ValueError, match="unknown feature extractor 'vit'"):
        build_extractor("vit")
    with pytest.raises(ValueError, match="no weights"):
        build_extractor("light", weights="x.pth")
