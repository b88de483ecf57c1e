"""Which torch device a learner runs on (`learner.device`, `--device`)."""
from __future__ import annotations

import torch


class DeviceError(ValueError):
    """The configured device is not there."""


def resolve_device(name: str) -> torch.device:
    """auto = cuda when a CUDA device is available, else cpu. Asking for cuda on a machine without one is
    an error here, before any data is read, rather than a crash at the first step."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"learner.device = {name!r} but no CUDA device is available (use auto or cpu)")
    return dev
