"""Radar encoders: (B, 2, 128, 128) range-azimuth maps (real, imag) -> (B, out_dim) embeddings.

Every encoder is `backbone` (-> penultimate features, what the linear probe and t-SNE look at)
followed by `head` (-> the embedding contrasted with the frozen image keys). Names:

- `vgg16`: paper-faithful (Alloulah et al. §IV-C): RA magnitude resized to 224x224, replicated to 3
  channels, torchvision VGG-16 sliced in its classifier stage (4096-d). `vgg_layer` picks the slice:
  4 = output of classifier[3] (fc7, pre-ReLU; "4th layer" 1-indexed), 5 = after its ReLU. The head is the
  identity when out_dim == 4096 (the paper contrasts the 4096-d vectors directly), else a linear map.
- `resnet18`: CPU-friendly; ResNet-18 with a 2-channel stem at native 128x128 and an MLP head.
- `tiny`: log-magnitude, 2x max-pool, a 4-layer CNN: tests and quick CPU runs (~0.4k img/s training on 1 core).
- `effnet-lite0`: both branches pretrained, as the paper does with VGG-16 (§IV-C), at CPU cost: the same
  ImageNet EfficientNet-Lite0 as the camera teacher (`learner.effnet`), its first conv adapted to the
  radar's one channel (log-magnitude, per-frame min-max to the [-1, 1] the network was trained on; the
  stem's RGB filters summed, the usual way to give a pretrained stem fewer input channels), at
  `effnet_radar_size`² (the 128² map max-pooled, which keeps point-target peaks), BN momentum 0.1 so its
  statistics move from ImageNet's to the radar's within a few hundred steps; 1280-d features, MLP head.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

RADAR_ENCODERS = ("vgg16", "resnet18", "tiny", "effnet-lite0")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_radar(x: torch.Tensor) -> torch.Tensor:
    """Per-frame RMS normalisation of the (real, imag) map: CRUW values are not on a fixed scale, and
    a scale-free input keeps recordings from different radars/gains comparable."""
    rms = x.float().pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
    return x / (rms + 1e-6)


class RadarEncoder(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module, feat_dim: int, name: str):
        super().__init__()
        self.backbone, self.head, self.feat_dim, self.name = backbone, head, feat_dim, name

    def front(self, x: torch.Tensor) -> torch.Tensor:
        """The fixed, parameter-free start of `features`: RMS normalisation, and for `tiny` the log-magnitude
        of the chirp DFT pooled to 64x64 (`LogMagnitude`). The same for every encoder of one architecture and
        chirp count, so evaluation computes it once per frame instead of once per epoch and model (a 4-chirp
        frame shrinks 8x); `features(front(x), fronted=True)` == `features(x)`."""
        x = normalize_radar(x)
        return self.backbone[0](x) if self._log_front else x

    @property
    def _log_front(self) -> bool:
        return isinstance(self.backbone, nn.Sequential) and isinstance(self.backbone[0], LogMagnitude)

    def features(self, x: torch.Tensor, fronted: bool = False) -> torch.Tensor:
        """Penultimate features (what the linear probe / t-SNE use); `fronted`: x is already `front(x)`."""
        if not fronted:
            x = self.front(x)
        return self.backbone[1:](x) if self._log_front else self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class VGGRadarBackbone(nn.Module):
    """Magnitude -> 224x224 -> 3 channels -> VGG-16 features -> classifier[:vgg_layer]."""

    def __init__(self, vgg: nn.Module, vgg_layer: int = 4):
        super().__init__()
        if vgg_layer not in (1, 2, 4, 5):
            raise ValueError(f"vgg_layer must be 1, 2, 4 or 5 (a 4096-d slice of the classifier), got {vgg_layer}")
        self.features, self.avgpool = vgg.features, vgg.avgpool
        self.classifier = vgg.classifier[:vgg_layer]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mag = torch.sqrt(x[:, 0:1].float() ** 2 + x[:, 1:2].float() ** 2)
        mag = torch.log1p(mag)  # heatmap dynamic range is large; log keeps weak targets visible
        lo = mag.amin(dim=(2, 3), keepdim=True)
        hi = mag.amax(dim=(2, 3), keepdim=True)
        img = (mag - lo) / (hi - lo + 1e-6)                      # [0, 1] like an image
        img = F.interpolate(img, size=(224, 224), mode="bilinear", align_corners=False)
        img = (img.expand(-1, 3, -1, -1) - self.mean) / self.std  # replicated x3 (paper §IV-C)
        return self.classifier(torch.flatten(self.avgpool(self.features(img.to(x.dtype))), 1))


def _vgg16_radar(out_dim: int, weights=None, vgg_layer: int = 4) -> RadarEncoder:
    import torchvision
    vgg = torchvision.models.vgg16(weights=None)
    if weights is not None:
        from learner.teachers import load_imagenet_state
        vgg.load_state_dict(load_imagenet_state("vgg16", weights))
    head = nn.Identity() if out_dim == 4096 else nn.Linear(4096, out_dim)
    return RadarEncoder(VGGRadarBackbone(vgg, vgg_layer), head, 4096, "vgg16")


def _resnet18_radar(out_dim: int) -> RadarEncoder:
    import torchvision
    net = torchvision.models.resnet18(weights=None)
    # 2-channel stem at native 128x128 (7x7/s2 + maxpool kept: 0.58 GMAC, CPU friendly)
    net.conv1 = nn.Conv2d(2, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net.fc = nn.Identity()
    head = nn.Sequential(nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Linear(512, out_dim))
    return RadarEncoder(net, head, 512, "resnet18")


class LogMagnitude(nn.Module):
    """(B, 2C, H, W) real/imag of C chirps (interleaved re0, im0, re1, im1, ...) -> (B, C, H/pool, W/pool).

    One chirp: log(1 + |z|); the phase of a single RA frame is close to random, so the small encoder
    spends no capacity learning the magnitude. Several chirps of one frame (CRUW keeps loops 0, 64, 128,
    192): log(1 + |DFT over the chirps|) per cell, the phase-free form of a C-point Doppler FFT: bin 0 is
    the mean echo, bins 1.. are what changed between the chirps - radial motion of bodies, limbs, wheels,
    where the class information of a moving object lives (a radar-only probe on synth data: 51 % with
    chirp 0 alone, 75 % with the chirp difference, docs/learner.md).

    `pool`: max-pool by this factor. It is taken on the power, before the square root and the log: both
    are monotone, so the numbers are those of pooling the log-magnitude, at a quarter of the transcendental
    work (the costliest part of a 4-chirp step on a CPU)."""

    def __init__(self, pool: int = 1):
        super().__init__()
        self.pool = int(pool)

    def forward(self, x):
        c = x.shape[1] // 2
        x = x.float()
        if c == 1:
            power = x[:, 0:1] ** 2 + x[:, 1:2] ** 2
        elif c == 4:
            power = _power4(x)
        else:
            # the C-point DFT as one real (2C x 2C) map over the channels: ~10x faster on a CPU than a
            # complex torch.fft over a 4-long axis of a (B, C, 128, 128) tensor, and the same numbers
            y = torch.einsum("oc,bchw->bohw", _dft_matrix(c, x.device), x)
            power = y[:, :c] ** 2 + y[:, c:] ** 2
        if self.pool > 1:
            power = F.max_pool2d(power, self.pool)
        return torch.log1p(power.sqrt() / c)


def _power4(x: torch.Tensor) -> torch.Tensor:
    """|X_k|^2 of the 4-point DFT over 4 interleaved chirps, as one radix-2 butterfly (8 complex adds): the
    rig's and CRUW's chirp count, ~2x faster than the DFT matrix on a CPU, the same numbers to 1e-6."""
    r0, i0, r1, i1, r2, i2, r3, i3 = x.unbind(1)
    ar, ai, br, bi = r0 + r2, i0 + i2, r0 - r2, i0 - i2
    cr, ci, dr, di = r1 + r3, i1 + i3, r1 - r3, i1 - i3
    # X0 = a + c, X1 = b - i d, X2 = a - c, X3 = b + i d
    return torch.stack([(ar + cr) ** 2 + (ai + ci) ** 2, (br + di) ** 2 + (bi - dr) ** 2,
                        (ar - cr) ** 2 + (ai - ci) ** 2, (br - di) ** 2 + (bi + dr) ** 2], 1)


@functools.lru_cache(maxsize=16)
def _dft_matrix(c: int, device) -> torch.Tensor:
    """(2C, 2C) real matrix: interleaved (re0, im0, re1, im1, ...) -> (Re X_0..X_{C-1}, Im X_0..X_{C-1}) of
    X_k = sum_n z_n exp(-2 pi i k n / C). Cached per (C, device): every forward pass uses it, and on a GPU
    building it would be a host-to-device copy per step."""
    k, n = torch.meshgrid(torch.arange(c, dtype=torch.float64), torch.arange(c, dtype=torch.float64), indexing="ij")
    th = 2 * torch.pi * k * n / c
    w = torch.zeros(2 * c, 2 * c, dtype=torch.float64)
    w[:c, 0::2], w[:c, 1::2] = torch.cos(th), torch.sin(th)
    w[c:, 0::2], w[c:, 1::2] = -torch.sin(th), torch.cos(th)
    return w.to(device=device, dtype=torch.float32)


def _tiny_radar(out_dim: int, width: int = 32, chirps: int = 1) -> RadarEncoder:
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    # max-pool the magnitude to 64x64 first (keeps point-target peaks, 4x cheaper on a CPU); LogMagnitude
    # pools, and the Identity keeps the layer indices (and so the state-dict keys) of earlier checkpoints
    backbone = nn.Sequential(LogMagnitude(pool=2), nn.Identity(), *block(chirps, width // 2), *block(width // 2, width),
                             *block(width, 2 * width), *block(2 * width, 2 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    head = nn.Sequential(nn.Linear(2 * width, 2 * width), nn.ReLU(inplace=True), nn.Linear(2 * width, out_dim))
    return RadarEncoder(backbone, head, 2 * width, "tiny")


class EffNetRadarBackbone(nn.Module):
    """Log-magnitude (`LogMagnitude`: one channel per chirp-DFT bin) -> max-pool to `size`² -> per-frame
    min-max to [-1, 1] -> EfficientNet-Lite0 with a stem adapted to those channels -> 1280-d average."""

    def __init__(self, net: nn.Module, size: int = 64):
        super().__init__()
        if 128 % size or size % 32:
            raise ValueError(f"effnet-lite0 radar input size must divide 128 and be a multiple of 32, got {size}")
        self.net, self.size, self.mag = net, size, LogMagnitude(pool=128 // size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from learner import effnet
        mag = self.mag(x)     # pooled to `size` for the 128-bin maps every radvis source gives
        if mag.shape[-1] != self.size:
            mag = F.adaptive_max_pool2d(mag, self.size)
        lo = mag.amin(dim=(2, 3), keepdim=True)
        hi = mag.amax(dim=(2, 3), keepdim=True)
        img = (mag - lo) / (hi - lo + 1e-6)
        return effnet.features(self.net, (img - 0.5) / 0.5)


def adapt_stem(conv: nn.Conv2d, in_channels: int) -> None:
    """Give a pretrained RGB stem `in_channels` inputs: for one channel the RGB filters summed (a grey
    image replicated x3 gives the same response); otherwise repeated and scaled by 3 / in_channels."""
    w = conv.weight.data
    if in_channels == 1:
        nw = w.sum(1, keepdim=True)
    else:
        nw = w.repeat(1, (in_channels + 2) // 3, 1, 1)[:, :in_channels] * (3.0 / in_channels)
    conv.weight = nn.Parameter(nw.contiguous())
    conv.in_channels = in_channels


def _effnet_radar(out_dim: int, weights="imagenet", size: int = 64, chirps: int = 1) -> RadarEncoder:
    from learner import effnet
    net = effnet.build(weights)
    adapt_stem(net._conv_stem, chirps)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    net._fc, net._dropout = nn.Identity(), nn.Identity()
    head = nn.Sequential(nn.Linear(effnet.FEATURE_DIM, 512), nn.ReLU(inplace=True), nn.Linear(512, out_dim))
    return RadarEncoder(EffNetRadarBackbone(net, size), head, effnet.FEATURE_DIM, "effnet-lite0")


def build_radar_encoder(name: str, out_dim: int, *, weights=None, vgg_layer: int = 4, size: int = 64,
                        chirps: int = 1) -> nn.Module:
    """(B, 2 * chirps, 128, 128) float -> (B, out_dim). `weights`: vgg16: None, "imagenet" or a .pth path (the
    paper initialises the radar VGG-16 from ImageNet too); effnet-lite0: ImageNet unless "none" (None =
    ImageNet: the name means the pretrained encoder); `size`: effnet-lite0's input size; `chirps`: chirps
    per frame in the input (tiny, effnet-lite0)."""
    if chirps > 1 and name not in ("tiny", "effnet-lite0"):
        raise ValueError(f"radar encoder {name!r} reads one chirp; several chirps work with tiny or effnet-lite0")
    if name == "vgg16":
        return _vgg16_radar(out_dim, weights, vgg_layer)
    if name == "effnet-lite0":
        return _effnet_radar(out_dim, "imagenet" if weights is None else weights, size, chirps)
    if weights not in (None, "none"):
        raise ValueError(f"radar encoder {name!r} has no pretrained weights (got weights={weights!r})")
    if name == "resnet18":
        return _resnet18_radar(out_dim)
    if name == "tiny":
        return _tiny_radar(out_dim, chirps=chirps)
    raise ValueError(f"unknown radar encoder {name!r}; expected one of {', '.join(RADAR_ENCODERS)}")
