"""Batch augmentation for EL cell images, on torch tensors of pixels in [0, 1].

Why these: EL cells are imaged on different lines with different exposure (gain/offset), cells
sit slightly rotated or shifted in the module crop (small affine), and defects have no preferred
side (flips). Results are re-quantized to 8-bit levels because the accelerator only ever sees
8-bit pixels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    flip: bool = True
    rotate_deg: float = 2.0
    translate: float = 0.04
    scale: float = 0.06
    gain: float = 0.15
    offset: float = 0.08
    noise: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _uniform(n: int, span: float, gen: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, generator=gen) * 2 - 1) * span


def affine(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Random small rotation, scale and shift; borders repeat the edge pixels."""
    n = x.shape[0]
    angle = _uniform(n, math.radians(cfg.rotate_deg), gen)
    scale = 1 + _uniform(n, cfg.scale, gen)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([
        torch.stack([cos, -sin, _uniform(n, 2 * cfg.translate, gen)], 1),
        torch.stack([sin, cos, _uniform(n, 2 * cfg.translate, gen)], 1),
    ], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def augment(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Augment a batch (N, C, H, W) of pixels in [0, 1]; returns 8-bit-quantized pixels in [0, 1]."""
    n = x.shape[0]
    if cfg.flip:
        hflip = torch.rand(n, generator=gen) < 0.5
        vflip = torch.rand(n, generator=gen) < 0.5
        x = torch.where(hflip[:, None, None, None], x.flip(3), x)
        x = torch.where(vflip[:, None, None, None], x.flip(2), x)
    if cfg.rotate_deg or cfg.translate or cfg.scale:
        x = affine(x, cfg, gen)
    gain = 1 + _uniform(n, cfg.gain, gen)
    offset = _uniform(n, cfg.offset, gen)
    x = x * gain[:, None, None, None] + offset[:, None, None, None]
    if cfg.noise:
        x = x + torch.randn(x.shape, generator=gen) * cfg.noise
    return torch.round(x.clamp(0, 1) * 255) / 255
