"""Clip feature extractors for VideoBERT's visual words (Sun et al., ICCV 2019, arXiv 1904.01766, Sec. 4.2).

The paper embeds each 1.5 s clip with S3D (Xie et al., 2018) pretrained on Kinetics, taking the 1024-d activation
before the classifier after 3D average pooling. :class:`S3DFeatures` does that with ``torchvision``'s S3D; the
final pooling is made adaptive (torchvision's fixed ``(2, 7, 7)`` pool needs 224 px and 16+ frames), which is the
paper's global average pool at any size. :class:`R3D18Features` (512-d) is the alternative network.

Weights (:func:`torchvision_state_dict`): by default torchvision's Kinetics-400 checkpoint
(``S3D_Weights.KINETICS400_V1`` / ``R3D_18_Weights.KINETICS400_V1``), read from torch hub's cache
(``$TORCH_HOME/hub/checkpoints/``, e.g. ``s3d-d76dad2f.pth``) and downloaded there once when online; offline and
not cached, the error says where to put the file. A local state-dict file (``.pth`` / ``.safetensors``) replaces
it; random weights need ``random_weights=True`` and log a warning.

Preprocessing (:meth:`TorchvisionVideoFeatures.preprocess`) is the weights' own transform
(``weights.transforms()``): resize every frame to ``resize_size`` (bilinear, no antialiasing, as torchvision
hard-codes for its video models), centre-crop ``crop_size``, scale to [0, 1], normalise with the Kinetics mean and
std, and lay out ``(N, 3, F, h, w)``. The decoder can already deliver frames at ``resize_size``
(:attr:`ClipFeatureExtractor.decode_size`; FFmpeg's swscale does that resize while decoding, with its own
antialiased filter), in which case the resize is skipped.

:class:`LightFeatures` is a weight-free descriptor that runs far faster than real time on a CPU, for the
embedded synthetic demo: colour, shape moments and their change over the clip of the foreground against a
roughly uniform background. It is not a learned representation and is not what the paper used.

All extractors take clips as ``(N, F, h, w, 3)`` uint8 and return ``(N, D)`` float32.
"""

from __future__ import annotations

import logging
import urllib.error
from abc import ABC, abstractmethod
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

#: Kinetics-400 normalisation used by torchvision's video models.
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)

#: ``weights`` value that selects torchvision's Kinetics-400 checkpoint (the default of the networks).
KINETICS400 = "kinetics400"


class ClipFeatureExtractor(nn.Module, ABC):
    """Maps clips to one vector each.

    Attributes:
        name: short name stored with cached features (a cache made by another extractor is not reused).
        feature_size: D.
        decode_size: the frame size the decoder should deliver (:mod:`multibert.video.decode`'s ``size``).
    """

    name: str = ""
    feature_size: int = 0
    decode_size: int | tuple[int, int] = 224

    @abstractmethod
    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """Shapes:
        clips: (N, F, h, w, 3) uint8 → (N, D) float32.
        """


def _read_state_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def torchvision_state_dict(weights_enum, what: str) -> dict[str, torch.Tensor]:
    """A torchvision checkpoint from torch hub's cache, downloaded into it if missing and the network answers.

    Args:
        weights_enum: e.g. ``torchvision.models.video.S3D_Weights.KINETICS400_V1``.
        what: the network's name for messages.

    Raises:
        FileNotFoundError: not cached and the download failed; the message names the cache file to create.
    """
    url = weights_enum.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    if cached.is_file():
        log.info("%s: Kinetics-400 weights from the torch hub cache %s", what, cached)
        return _read_state_file(cached)
    log.info("%s: downloading Kinetics-400 weights %s into %s", what, url, cached.parent)
    try:
        return torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=False, check_hash=True, weights_only=True
        )
    except (urllib.error.URLError, OSError, ConnectionError) as err:
        raise FileNotFoundError(
            f"{what}: torchvision's Kinetics-400 weights are not in the torch hub cache ({cached}) and could not be "
            f"downloaded from {url} ({err}). Download that file once on a machine with network and copy it to "
            f"{cached} (TORCH_HOME moves the cache), or pass weights=<local .pth / .safetensors file>; "
            "random_weights=True runs without pretrained weights"
        ) from err


def _load_weights(model: nn.Module, weights: str | None, random_weights: bool, what: str, weights_enum) -> None:
    """Load torchvision's Kinetics-400 checkpoint (``weights="kinetics400"``) or a local state dict into
    ``model`` (classifier keys ignored), or keep random weights if allowed."""
    if random_weights:
        if weights not in (None, KINETICS400):
            raise ValueError(f"{what}: give either weights={weights!r} or random_weights=True, not both")
        log.warning("%s runs with RANDOM weights: its features carry no learned semantics", what)
        return
    if weights is None or weights == KINETICS400:
        state, source = torchvision_state_dict(weights_enum, what), "torchvision's Kinetics-400 checkpoint"
    else:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"{what} weight file {path} does not exist; give a local state dict, weights={KINETICS400!r} "
                "(torchvision's checkpoint through torch hub's cache) or random_weights=True"
            )
        state, source = _read_state_file(path), str(path)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = sorted(set(own) - set(usable))
    if missing:
        raise ValueError(f"{source}: {len(missing)} {what} weights missing or of the wrong shape, e.g. {missing[:4]}")
    model.load_state_dict(usable)
    log.info("%s: loaded %d tensors from %s", what, len(usable), source)


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class TorchvisionVideoFeatures(ClipFeatureExtractor):
    """A torchvision video network with its classifier removed, its Kinetics weights and its transform.

    Args:
        weights: ``"kinetics400"`` (torchvision's checkpoint through torch hub's cache), a local state-dict file,
            or ``None`` with ``random_weights=True``.
        random_weights: run with random weights (a warning is logged).
        resize_size: frames are resized to this ``(h, w)`` (an int: square) before the crop.
        crop_size: side (or ``(h, w)``) of the centre crop the network sees.
    """

    weights_enum = None
    default_resize: tuple[int, int] = (256, 256)
    default_crop: tuple[int, int] = (224, 224)

    def __init__(
        self,
        weights: str | None = KINETICS400,
        random_weights: bool = False,
        resize_size: int | tuple[int, int] | None = None,
        crop_size: int | tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.resize_size = _pair(resize_size) if resize_size is not None else self.default_resize
        self.crop_size = _pair(crop_size) if crop_size is not None else self.default_crop
        if self.crop_size[0] > self.resize_size[0] or self.crop_size[1] > self.resize_size[1]:
            raise ValueError(f"crop_size {self.crop_size} exceeds resize_size {self.resize_size}")
        self.decode_size = self.resize_size
        self.register_buffer("mean", torch.tensor(KINETICS_MEAN).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(KINETICS_STD).view(1, 3, 1, 1, 1), persistent=False)
        self.weights = weights
        self.random_weights = random_weights

    def preprocess(self, clips: torch.Tensor) -> torch.Tensor:
        """torchvision's ``weights.transforms()`` on channels-last uint8 clips.

        Shapes:
            clips: (N, F, h, w, 3) uint8 → (N, 3, F, crop_h, crop_w) float32.
        """
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        N, Fr = clips.shape[:2]
        x = clips.permute(0, 1, 4, 2, 3).flatten(0, 1)  # (N·F, 3, h, w) uint8
        if tuple(x.shape[-2:]) != self.resize_size:
            x = TF.resize(x, list(self.resize_size), interpolation=InterpolationMode.BILINEAR, antialias=False)
        x = TF.center_crop(x, list(self.crop_size))  # (N·F, 3, ch, cw)
        x = x.float().div_(255.0).unflatten(0, (N, Fr)).transpose(1, 2)  # (N, 3, F, ch, cw)
        return (x - self.mean) / self.std


class S3DFeatures(TorchvisionVideoFeatures):
    """torchvision S3D with the classifier removed and an adaptive global average pool: 1024-d per clip (the
    paper's features). Transform: resize 256 × 256, centre crop 224 (``S3D_Weights.KINETICS400_V1.transforms()``).
    """

    name = "s3d"
    feature_size = 1024

    def __init__(self, weights: str | None = KINETICS400, random_weights: bool = False,
                 resize_size: int | tuple[int, int] | None = None, crop_size: int | tuple[int, int] | None = None) -> None:
        super().__init__(weights, random_weights, resize_size, crop_size)
        from torchvision.models.video import S3D_Weights, s3d

        net = s3d(weights=None)
        net.classifier = nn.Identity()
        _load_weights(net, weights, random_weights, "S3D", S3D_Weights.KINETICS400_V1)
        self.features = net.features
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.eval()

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        x = self.features(self.preprocess(clips))  # (N, 1024, F', S', S')
        return self.pool(x).flatten(1)  # (N, 1024)


class R3D18Features(TorchvisionVideoFeatures):
    """torchvision R3D-18 without its final layer: 512-d per clip. Transform: resize 128 × 171, centre crop 112
    (``R3D_18_Weights.KINETICS400_V1.transforms()``)."""

    name = "r3d_18"
    feature_size = 512
    default_resize = (128, 171)
    default_crop = (112, 112)

    def __init__(self, weights: str | None = KINETICS400, random_weights: bool = False,
                 resize_size: int | tuple[int, int] | None = None, crop_size: int | tuple[int, int] | None = None) -> None:
        super().__init__(weights, random_weights, resize_size, crop_size)
        from torchvision.models.video import R3D_18_Weights, r3d_18

        net = r3d_18(weights=None)
        net.fc = nn.Identity()
        _load_weights(net, weights, random_weights, "R3D-18", R3D_18_Weights.KINETICS400_V1)
        self.net = net
        self.eval()

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(clips))  # (N, 512)


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
    decode_size = 32

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


def build_extractor(
    name: str, weights: str | None = None, random_weights: bool = False, size: int | None = None
) -> ClipFeatureExtractor:
    """An extractor by name (``s3d``, ``r3d_18``, ``light``).

    Args:
        name: the extractor.
        weights: for the networks: a local state-dict file; ``None`` or ``"kinetics400"``: torchvision's
            Kinetics-400 checkpoint through torch hub's cache.
        random_weights: run a network with random weights.
        size: ``None``: each extractor's own input (S3D: resize 256, crop 224). For a network, an int is the crop
            side, with the resize scaled in the weights' proportion (S3D: ``round(size · 256 / 224)``); for
            ``light``, the side the decoder scales and crops frames to.
    """
    if name not in EXTRACTORS:
        raise ValueError(f"unknown feature extractor {name!r}; choose one of {sorted(EXTRACTORS)}")
    if name == "light":
        if weights is not None:
            raise ValueError("the light extractor has no weights; drop the weights argument")
        ext = LightFeatures()
        if size is not None:
            ext.decode_size = size
        return ext
    cls = EXTRACTORS[name]
    resize = crop = None
    if size is not None:
        (rh, rw), (ch, cw) = cls.default_resize, cls.default_crop
        crop = (size, size)
        resize = (max(size, round(size * rh / ch)), max(size, round(size * rw / cw)))
    return cls(weights=weights, random_weights=random_weights, resize_size=resize, crop_size=crop)
