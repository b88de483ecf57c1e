"""Object-centric views of a fixed camera: what differs from the static background, as a soft mask and as
object boxes to crop for the teacher.

The paper (Alloulah et al. §IV-A, Data collation) suggests filtering the pairs with a light object
detector "to concentrate on learning good encodings for specific objects of interest". A mounted rig camera
does not move, so the cheapest detector there is is background subtraction: whatever is not the median
image of the camera's frames (`teachers.median_background` offline per sequence, `teachers.Background`
online per stream) is something that moves.

- `foreground_mask`: |image - background| over RGB after dividing both by the background's brightness
  (lighting changes between recordings), 3x3-smoothed, ramped between `k0` and `k0 + k1` times its
  per-frame median (the median pixel is background, so this is a noise-adaptive threshold);
- `foreground_boxes`: connected regions of that mask after a small dilation (an object's parts - head,
  torso, a car's windows - join into one), at least `min_area` of the frame, the `max_regions` largest.
  The threshold is relative to the frame's median difference, so a frame that differs everywhere (a
  moved camera, a light switched on before a running background has caught up) shows little foreground,
  not all of it: a moving camera needs whole-frame keys (`learner.teacher_region = "frame"`);
- `square_boxes`: each box grown by `margin` on every side into a square (the object with a little of its
  context, no aspect distortion), at least `min_side` of the frame height, shifted inside the image.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def foreground_mask(x: torch.Tensor, bg: torch.Tensor, k0: float = 2.5, k1: float = 2.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft foreground mask (B,1,H,W) in [0,1] and the brightness-normalised image, from float images and
    backgrounds (B,3,H,W) in [0,1]."""
    bright = bg.mean((1, 2, 3), keepdim=True).clamp_min(0.02)
    xn, bn = x / bright, bg / bright
    d = (xn - bn).abs().sum(1, keepdim=True)
    d = F.avg_pool2d(F.pad(d, (1, 1, 1, 1), mode="replicate"), 3, 1)
    noise = d.flatten(1).median(1).values.view(-1, 1, 1, 1).clamp_min(1e-3)
    return ((d - k0 * noise) / (k1 * noise)).clamp(0, 1), xn


def foreground_boxes(mask: torch.Tensor, *, min_area: float = 0.001, max_regions: int = 3,
                     dilate: float = 0.03) -> list[np.ndarray]:
    """Per image of a (B,1,H,W) soft mask: (n, 4) float boxes [x0, y0, x1, y1) in pixels, largest region
    first; n = 0 for a frame with no foreground. `min_area` and `dilate` are fractions of the frame (area,
    width)."""
    m = (mask[:, 0] > 0.5).cpu().numpy().astype(np.uint8)
    b, h, w = m.shape
    k = max(3, int(round(dilate * w)) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    out = []
    for i in range(b):
        fg = m[i]
        if int(fg.sum()) < min_area * h * w:
            out.append(np.zeros((0, 4), np.float32))
            continue
        n, lab, stats, _ = cv2.connectedComponentsWithStats(cv2.dilate(fg, kernel), connectivity=8)
        regions = []
        for j in range(1, n):
            inside = (lab == j) & (fg > 0)
            a = int(inside.sum())
            if a < min_area * h * w:
                continue
            ys, xs = np.nonzero(inside)
            regions.append((a, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]))
        regions.sort(key=lambda r: -r[0])
        out.append(np.array([r[1] for r in regions[:max_regions]], np.float32).reshape(-1, 4))
    return out


def square_boxes(boxes: np.ndarray, h: int, w: int, margin: float = 0.25, min_side: float = 0.15) -> np.ndarray:
    """Boxes (n,4) -> squares grown by `margin` of their longer side on every side, at least `min_side` x h,
    at most the image's shorter side, shifted to lie inside the (h, w) image."""
    if len(boxes) == 0:
        return boxes
    x0, y0, x1, y1 = boxes.T
    side = np.maximum(x1 - x0, y1 - y0) * (1 + 2 * margin)
    side = np.clip(side, min_side * h, min(h, w))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    nx0 = np.clip(cx - side / 2, 0, w - side)
    ny0 = np.clip(cy - side / 2, 0, h - side)
    return np.stack([nx0, ny0, nx0 + side, ny0 + side], 1).astype(np.float32)


def crop(x: torch.Tensor, boxes: list[np.ndarray], size: int) -> torch.Tensor:
    """Crops of images x (B,3,H,W) at per-image boxes (pixels), each resized to size x size (bilinear,
    averaging several samples per output pixel when shrinking: torchvision's roi_align)."""
    from torchvision.ops import roi_align
    rois = [torch.as_tensor(bx, dtype=x.dtype, device=x.device) for bx in boxes]
    if sum(len(r) for r in rois) == 0:
        return x.new_zeros((0, x.shape[1], size, size))
    return roi_align(x, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
