"""Clip feature extractors for VideoBERT's visual words (Sun et al., ICCV 2019, arXiv 1904.01766, Sec. 4.2).

The paper embeds each 1.5 s clip with S3D (Xie et al., 2018) pretrained on Kinetics, taking the 1024-d activation
before the classifier after 3D average pooling. :class:`S3DFeatures` does that with ``torchvision``'s S3D; the
final pooling is made adaptive (torchvision's fixed ``(2, 7, 7)`` pool needs 224 px and 16+ frames), which equals
the paper's global average pool at 224 px. Weights come from a local file the user supplies (torchvision's
``s3d-d76dad2f.pth`` or any state dict of the same architecture); random weights need ``random_weights=True`` and
log a warning. :class:`R3D18Features` (512-d) is the alternative network.

:class:`LightFeatures` is a weight-free descriptor that runs far faster than real time on a CPU, for the
embedded synthetic demo: colour, shape moments and their change over the clip of the foreground against a
roughly uniform background. It is not a learned representation and is not what the paper used.

All extractors take clips as ``(N, F, S, S, 3)`` uint8 and return ``(N, D)`` float32.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

#: Kinetics-400 normalisation used by torchvision's video models.
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


class ClipFeatureExtractor(nn.Module, ABC):
    """Maps clips to one vector each.

    Attributes:
        name: short name stored with cached features (a cache made by another extractor is not reused).
        feature_size: D.
    """

    name: str = ""
    feature_size: int = 0

    @abstractmethod
    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """Shapes:
        clips: (N, F, S, S, 3) uint8 → (N, D) float32.
        """


def _load_weights(model: nn.Module, weights: str | None, random_weights: bool, what: str) -> None:
    """Load a local state dict into ``model`` (classifier keys ignored), or keep random weights if allowed."""
    if weights is None:
        if not random_weights:
            raise ValueError(
                f"{what} needs pretrained weights: pass weights=<local .pth / .safetensors file> "
                "(e.g. torchvision's Kinetics-400 checkpoint); random_weights=True runs with random weights"
            )
        log.warning("%s runs with RANDOM weights: its features carry no learned semantics", what)
        return
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"{what} weight file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = sorted(set(own) - set(usable))
    if missing:
        raise ValueError(f"{path}: {len(missing)} {what} weights missing or of the wrong shape, e.g. {missing[:4]}")
    model.load_state_dict(usable)
    log.info("%s: loaded %d tensors from %s", what, len(usable), path)


def _normalise(clips: torch.Tensor) -> torch.Tensor:
    x = clips.float().div_(255.0)  # (N, F, S, S, 3)
    mean = x.new_tensor(KINETICS_MEAN)
    std = x.new_tensor(KINETICS_STD)
    x = (x - mean) / std
    return x.permute(0, 4, 1, 2, 3).contiguous()  # (N, 3, F, S, S)


class S3DFeatures(ClipFeatureExtractor):
    """torchvision S3D with the classifier removed: 1024-d per clip (the paper's features).

    Args:
        weights: a local state-dict file of ``torchvision.models.video.s3d`` (classifier keys are ignored).
        random_weights: allow running without ``weights`` (a warning is logged).
    """

    name = "s3d"
    feature_size = 1024

    def __init__(self, weights: str | None = None, random_weights: bool = False) -> None:
        super().__init__()
        from torchvision.models.video import s3d

        net = s3d(weights=None)
        net.classifier = nn.Identity()
        _load_weights(net, weights, random_weights, "S3D")
        self.features = net.features
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.eval()

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        x = self.features(_normalise(clips))  # (N, 1024, F', S', S')
        return self.pool(x).flatten(1)  # (N, 1024)


class R3D18Features(ClipFeatureExtractor):
    """torchvision R3D-18 without its final layer: 512-d per clip.

    Args:
        weights: a local state-dict file of ``torchvision.models.video.r3d_18`` (``fc`` keys are ignored).
        random_weights: allow running without ``weights`` (a warning is logged).
    """

    name = "r3d_18"
    feature_size = 512

    def __init__(self, weights: str | None = None, random_weights: bool = False) -> None:
        super().__init__()
        from torchvision.models.video import r3d_18

        net = r3d_18(weights=None)
        net.fc = nn.Identity()
        _load_weights(net, weights, random_weights, "R3D-18")
        self.net = net
        self.eval()

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.net(_normalise(clips))  # (N, 512)


class LightFeatures(ClipFeatureExtractor):
    """Weight-free foreground-shape and motion descriptor (fast on a CPU; for the synthetic demo).

    Per frame, a soft foreground mask is the distance of each pixel from the frame's median colour beyond a noise
    floor (so it assumes a roughly uniform background). From the mask (13 statistics): area, centroid, size,
    compactness, four moment invariants under rotation, translation and scale (Hu's φ2-φ4 and the isotropic
    fourth moment: shape) and four orientation-dependent moments (second and fourth order: rotation). Per clip:
    the mean foreground colour, the statistics over the first quarter of the clip, their change to the last
    quarter (motion, growth, rotation) and the mean absolute frame difference. D = 3 + 13 + 13 + 1 = 30.
    Frames larger than 32 px are averaged down to 32 px first, so the cost per clip does not grow with the size.
    """

    name = "light"
    feature_size = 30

    def frame_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shapes: x (M, 3, S, S) in [0, 1] → stats (M, 13), foreground colour (M, 3)."""
        M, _, S, _ = x.shape
        bg = x.flatten(2).median(dim=2).values  # (M, 3)
        # soft foreground: colour distance beyond a noise floor of 0.15 (summed over RGB in [0, 1])
        w = (((x - bg[:, :, None, None]).abs().sum(1) - 0.15) / 0.15).clamp(0, 1)  # (M, S, S)
        axis = torch.linspace(-1, 1, S, dtype=x.dtype)
        u, v = axis[None, None, :], axis[None, :, None]  # x varies along columns, y along rows
        mass = w.sum((1, 2)).clamp_min(1e-6)  # (M,)
        cx = (w * u).sum((1, 2)) / mass
        cy = (w * v).sum((1, 2)) / mass
        du, dv = u - cx[:, None, None], v - cy[:, None, None]  # (M, S, S) by broadcasting

        def mu(p: int, q: int) -> torch.Tensor:
            return (w * du**p * dv**q).sum((1, 2)) / mass  # (M,)

        size = (mu(2, 0) + mu(0, 2)).clamp_min(1e-6)  # (M,)

        def eta(p: int, q: int) -> torch.Tensor:  # scale-normalised central moment
            return mu(p, q) / size ** ((p + q) / 2)

        e20, e02, e11 = eta(2, 0), eta(0, 2), eta(1, 1)
        e30, e03, e21, e12 = eta(3, 0), eta(0, 3), eta(2, 1), eta(1, 2)
        e40, e04, e22, e31, e13 = eta(4, 0), eta(0, 4), eta(2, 2), eta(3, 1), eta(1, 3)
        compact = (mass / (S * S) * 4) / size  # area over spread: ≈ 5 for a disc or square, ≈ 2 for a bar
        phi2 = (e20 - e02) ** 2 + 4 * e11**2
        phi3 = (e30 - 3 * e12) ** 2 + (3 * e21 - e03) ** 2
        phi4 = (e30 + e12) ** 2 + (e21 + e03) ** 2
        iso4 = e40 + 2 * e22 + e04
        stats = torch.stack(
            [
                (mass / (S * S)).sqrt(), cx, cy, size.sqrt(),
                compact / 2, 4 * phi2, phi3.sqrt(), phi4.sqrt(), iso4 / 3,  # shape: rotation invariant
                2 * (e20 - e02), 4 * e11, e40 + e04 - 6 * e22, 4 * (e31 - e13),  # orientation (2θ and 4θ)
            ],
            dim=1,
        )  # (M, 13)
        colour = (w[:, None] * x).sum((2, 3)) / mass[:, None]  # (M, 3)
        return stats, colour

    #: frames larger than this are averaged down to it first: the statistics need no more detail
    max_side = 32

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        N, Fr = clips.shape[:2]
        x = clips.float().div_(255.0).permute(0, 1, 4, 2, 3).flatten(0, 1)  # (N·F, 3, S, S)
        if x.size(-1) > self.max_side:
            x = F.adaptive_avg_pool2d(x, self.max_side)  # (N·F, 3, 32, 32)
        stats, colour = self.frame_stats(x)  # (N·F, 13), (N·F, 3)
        x = x.unflatten(0, (N, Fr))  # (N, F, 3, S, S)
        stats = stats.unflatten(0, (N, Fr))  # (N, F, 13)
        q = max(1, Fr // 4)
        first, last = stats[:, :q].mean(1), stats[:, -q:].mean(1)  # (N, 13)
        energy = (x[:, 1:] - x[:, :-1]).abs().mean((1, 2, 3, 4)) * 10 if Fr > 1 else x.new_zeros(N)  # (N,)
        colour = colour.unflatten(0, (N, Fr)).mean(1)  # (N, 3)
        return torch.cat([0.5 * colour, first, 2 * (last - first), energy[:, None]], dim=1)  # (N, 30)


#: Extractors by name, as the tokenization command accepts them.
EXTRACTORS: dict[str, type[ClipFeatureExtractor]] = {
    "s3d": S3DFeatures,
    "r3d_18": R3D18Features,
    "light": LightFeatures,
}


def build_extractor(name: str, weights: str | None = None, random_weights: bool = False) -> ClipFeatureExtractor:
    """An extractor by name (``s3d``, ``r3d_18``, ``light``); ``weights`` / ``random_weights`` for the networks."""
    if name not in EXTRACTORS:
        raise ValueError(f"unknown feature extractor {name!r}; choose one of {sorted(EXTRACTORS)}")
    if name == "light":
        if weights is not None:
            raise ValueError("the light extractor has no weights; drop the weights argument")
        return LightFeatures()
    return EXTRACTORS[name](weights=weights, random_weights=random_weights)
