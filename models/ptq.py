"""Post-training fixed-point check: does the model keep its accuracy at FPGA word widths?

This is the training-time sanity check, not the hardware's precision search (that is
``edgefpga.hw``, which works on the hls4ml graph). It mimics ``ap_fixed``: weights are rounded to
nearest (they are constants, so the converter can round them once) with ``weight_bits`` and just
enough integer bits for the largest weight of their layer; every layer output is truncated and
saturated (hls4ml's default AP_TRN, AP_SAT) to ``activation_bits`` with just enough integer bits
for the largest value seen on calibration images. If accuracy holds here at 8-bit weights, the precision
search has room to work with.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from .export import fold_batchnorm

QUANTIZED_OUTPUTS = (nn.Conv2d, nn.Linear, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d)


def integer_bits(max_abs: float) -> int:
    """Integer bits (sign included) of a signed fixed-point type holding +-``max_abs``."""
    return max(1, math.floor(math.log2(max_abs)) + 2) if max_abs > 0 else 1


def fixed_point(x: torch.Tensor, bits: int, int_bits: int, rounding: str = "trn") -> torch.Tensor:
    """``ap_fixed<bits, int_bits, AP_TRN|AP_RND_CONV, AP_SAT>`` applied to ``x``
    (``rounding`` "trn" truncates toward minus infinity, "rnd" rounds to nearest even)."""
    step = 2.0 ** (int_bits - bits)
    low, high = -(2.0 ** (int_bits - 1)), 2.0 ** (int_bits - 1) - step
    scaled = torch.floor(x / step) if rounding == "trn" else torch.round(x / step)
    return torch.clamp(scaled * step, low, high)


def output_ranges(model: nn.Module, calib: torch.Tensor) -> dict[str, float]:
    """Largest |output| of every quantized layer over the calibration inputs."""
    ranges: dict[str, float] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, QUANTIZED_OUTPUTS):
            def record(_m, _i, out, name=name):
                ranges[name] = max(ranges.get(name, 0.0), float(out.abs().max()))
            hooks.append(mod.register_forward_hook(record))
    with torch.no_grad():
        model(calib)
    for h in hooks:
        h.remove()
    return ranges


@contextmanager
def quantized(model: nn.Module, ranges: dict[str, float], weight_bits: int, activation_bits: int):
    """Temporarily quantize weights and layer outputs of ``model`` in place."""
    saved = {n: p.detach().clone() for n, p in model.named_parameters()}
    hooks = []
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                w = mod.weight
                w.copy_(fixed_point(w, weight_bits, integer_bits(float(w.abs().max())), rounding="rnd"))
            if name in ranges:
                ib = integer_bits(ranges[name])
                hooks.append(mod.register_forward_hook(
                    lambda _m, _i, out, ib=ib: fixed_point(out, activation_bits, ib)))
    try:
        yield model
    finally:
        for h in hooks:
            h.remove()
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(saved[n])


def ptq_check(model: nn.Module, calib: np.ndarray, inputs: np.ndarray, labels: np.ndarray,
              settings: tuple[tuple[int, int], ...] = ((8, 16), (8, 12), (8, 8))) -> list[dict]:
    """Accuracy and top-1 agreement with float for each (weight_bits, activation_bits) setting.

    ``inputs`` are normalized float images (N, C, H, W); the input itself is quantized to
    ``activation_bits`` too, as the accelerator's first layer sees fixed-point values."""
    folded = fold_batchnorm(model)
    x = torch.from_numpy(inputs)
    ranges = output_ranges(folded, torch.from_numpy(calib))
    with torch.no_grad():
        reference = folded(x).argmax(1).numpy()
    in_bits = integer_bits(float(np.abs(calib).max()))
    rows = []
    for wb, ab in settings:
        with quantized(folded, ranges, wb, ab), torch.no_grad():
            pred = folded(fixed_point(x, ab, in_bits)).argmax(1).numpy()
        rows.append({"weight_bits": wb, "activation_bits": ab,
                     "accuracy": round(float((pred == labels).mean()), 4),
                     "top1_agreement": round(float((pred == reference).mean()), 4)})
    return rows
