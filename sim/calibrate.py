"""Regenerate the resource calibration of the hardware models (hw/layers/calibration/*.json).

For every RTL module of ``hw/rtl`` this synthesizes a grid of parameter sets with Yosys exactly
as ``edgefpga verify --resources`` counts a design (sim/resources.py: the same wrapper, script,
cell classes and content-keyed cache), ROMs filled with seeded random words shaped like real
weights (a ROM that Yosys maps to logic costs what its contents cost), then fits each module's
structural model (``features`` of its hw/layers module: memories, multipliers, adders,
registers) with non-negative least squares, and writes the data points, the coefficients and
how well they fit to ``hw/layers/calibration/<module>.json``.

    .venv/bin/python -m edgefpga.sim.calibrate [--modules ef_conv2d ef_dense] [--jobs N] [--fit-only]

The grids cover what real designs use (the ELPV build's stages, ResNet-8 and MobileNet-V1 0.25
shapes, and one-factor variations around them: lanes, widths, map size, kernel, channels,
depthwise, DSP or LUT multipliers). A cold run takes about an hour of one core; a rerun after a
change of the fit alone reads every point from the cache (seconds).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from edgefpga.hw.layers.base import CALIBRATION_DIR
from edgefpga.hw.layers.conv import fold_rom, read_regs, steps_per_pixel, weight_word_bits
from edgefpga.hw.layers.stage import exact_divider, frame_overlap
from edgefpga.hw.rtlgen import INCLUDE_FILES, RTL_DIR
from edgefpga.progress import progress_bar

from .resources import CACHE_VERSION, TOOL, adapter_unit, stage_unit, synthesize_unit, yosys_version

MODULES = ("ef_axis_in", "ef_axis_out", "ef_fork", "ef_fifo", "ef_add", "ef_act", "ef_affine", "ef_conv2d",
           "ef_dense", "ef_pool2d", "ef_gpool", "ef_concat", "ef_resize")
ADAPTERS = ("ef_axis_in", "ef_axis_out")
TIMEOUT_S = 1200  # per unit; a unit past it is left out of the fit (logged), not the run


# ---- parameter sets as hw/rtlgen.py writes them --------------------------------------------------

def relu_cast(ow: int) -> dict:
    return dict(OMIN=0, OMAX=(1 << ow) - 1)


def conv(h, w, c, oc, k, ci, po, kp=1, *, s=1, p=None, dw=0, xw=8, ww=8, accw=24, ow=8, dsp=1, xsigned=0, pack=0):
    """ef_conv2d parameters of a k x k convolution (pads k//2 unless given), ReLU after it; ``pack``:
    two products per DSP48 (PACK)."""
    p = k // 2 if p is None else p
    oh, owd = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    params = dict(H=h, W=w, KH=k, KW=k, SH=s, SW=s, PT=p, PL=p, OH=oh, OWD=owd, C=c, OC=oc, CI=ci, PO=po, KP=kp,
                  DW=dw, XW=xw, XSIGNED=xsigned, WW=ww, ACCW=accw, SHIFT=max(0, accw - ow - 8), OW=ow,
                  FRAME_OVERLAP=frame_overlap(h, oh, s), **relu_cast(ow))
    if not dsp:
        params["USE_DSP"] = 0
    if pack:
        params["PACK"] = 1
    params.update(read_regs(params))  # as hw/layers/conv.py's stage() sets them
    return params


def dense(npix, c, oc, ci, po, *, xw=8, ww=8, accw=24, ow=16):
    return dict(NPIX=npix, C=c, OC=oc, CI=ci, PO=po, XW=xw, XSIGNED=0, WW=ww, ACCW=accw,
                SHIFT=max(0, accw - ow - 4), OW=ow, OMIN=-(1 << (ow - 1)), OMAX=(1 << (ow - 1)) - 1)


def average(count: int, xw: int, xsigned: int, ow: int, align: int = 8) -> dict:
    """The divider and cast of an average over ``count`` values (hw/layers/stage.py average_params)."""
    top = (1 << (xw - 1)) if xsigned else (1 << xw) - 1
    window_sum = count * top
    m, sh = exact_divider(count, window_sum << align)
    return dict(MODE=1, OW=ow, ALIGN=align, SHIFT=align, SUMW=window_sum.bit_length() + 1, DIV_M=m, DIV_SH=sh,
                **relu_cast(ow))


def pool(h, w, c, k, s, *, p=0, mode=0, xw=8, xsigned=0, ow=None):
    oh, owd = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    base = dict(H=h, W=w, C=c, KH=k, KW=k, SH=s, SW=s, PT=p, PL=p, OH=oh, OWD=owd, XW=xw, XSIGNED=xsigned,
                FRAME_OVERLAP=frame_overlap(h, oh, s))
    if mode == 0:
        return dict(base, MODE=0, OW=xw, OMIN=-(1 << (xw - 1)) if xsigned else 0,
                    OMAX=(1 << (xw - 1)) - 1 if xsigned else (1 << xw) - 1)
    return dict(base, **average(k * k, xw, xsigned, ow or xw))


def gpool(h, w, c, ci, *, mode=1, xw=8, xsigned=0, ow=None):
    base = dict(H=h, W=w, C=c, CI=ci, XW=xw, XSIGNED=xsigned)
    if mode == 0:
        return dict(base, MODE=0, OW=xw, OMIN=0, OMAX=(1 << xw) - 1)
    return dict(base, **average(h * w, xw, xsigned, ow or xw))


def affine(c, xw, sw, ow, *, ssigned=0, shift=None):
    """ef_affine parameters; SHIFT as rtlgen's normalization makes it: the scale fills its SW bits."""
    shift = sw - 1 - ssigned - ow + xw if shift is None else shift
    return dict(C=c, XW=xw, XSIGNED=0, SW=sw, SSIGNED=ssigned, ACCW=48, SHIFT=shift, OW=ow,
                OMIN=-(1 << (ow - 1)), OMAX=(1 << (ow - 1)) - 1)


def act(c, xw, ow, *, mode=0, alpha_bits=7):
    if mode == 0:
        return dict(MODE=0, AF=0, SHIFT=max(0, xw - ow), CLO=0, CHI=(1 << (xw - 1)) - 1, C=c, XW=xw, XSIGNED=1,
                    OW=ow, **relu_cast(ow))
    if mode == 2:  # HardSwish: x with alpha_bits fractional bits, 1/6 at 16 bits (18 fractional), as act.stage
        sixth = round((1 << 18) / 6)
        return dict(MODE=2, AF=18, ALPHA=sixth, AWID=sixth.bit_length(), XSH=0, XF=alpha_bits,
                    SHIFT=2 * alpha_bits + 18 - max(0, alpha_bits - (xw - ow)), C=c, XW=xw, XSIGNED=1, OW=ow,
                    OMIN=-(1 << (ow - 1)), OMAX=(1 << (ow - 1)) - 1)
    alpha = round(0.1 * (1 << alpha_bits))
    return dict(MODE=1, AF=alpha_bits, ALPHA=alpha, AWID=alpha.bit_length(), SHIFT=alpha_bits + max(0, xw - ow),
                C=c, XW=xw, XSIGNED=1, OW=ow, OMIN=-(1 << (ow - 1)), OMAX=(1 << (ow - 1)) - 1)


def add(c, aw, bw, ow, *, align_a=0, align_b=0, shift=None, bsigned=1, cp=None):
    """ef_add parameters (a residual join with a ReLU after it); SHIFT: the sum's extra
    fractional bits over the output's (rtlgen: usually 0, the output keeps the finer grid);
    CP: channels a cycle (C, or fewer where the join is paced: hw/layers/add.py)."""
    frac = max(align_a, align_b)
    shift = max(0, frac + max(aw, bw) - ow) if shift is None else shift
    return dict(C=c, CP=c if cp is None else cp, AW_=aw, ASIGNED=1, ALIGN_A=align_a, BW_=bw, BSIGNED=bsigned,
                ALIGN_B=align_b, SHIFT=shift, OW=ow, **relu_cast(ow))


def concat(ca, aw, cb, bw, *, asigned=0, bsigned=0, align_a=0, align_b=0):
    """ef_concat parameters as hw/layers/concat.py sets them: the output type holds both branches
    (the finer grid, an unsigned branch one bit more next to a signed one)."""
    signed = asigned or bsigned
    ow = max(aw + align_a + int(signed and not asigned), bw + align_b + int(signed and not bsigned))
    return dict(C_A=ca, AW_=aw, ASIGNED=asigned, ALIGN_A=align_a, C_B=cb, BW_=bw, BSIGNED=bsigned,
                ALIGN_B=align_b, OW=ow)


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def random_convs(count: int, seed: int = 28) -> list[dict]:
    """Convolutions drawn (seeded) from the ranges real designs use: maps 3-96, channels 1-128,
    kernels 1-5, depthwise or not, lanes up to 64 multipliers, widths 6-16, DSP or LUT multipliers."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        h = int(rng.choice([3, 6, 12, 24, 48, 96]))
        k = int(rng.choice([1, 3, 3, 3, 5])) if h > 3 else int(rng.choice([1, 3]))
        dw = int(rng.random() < 0.25 and k > 1)
        c = int(rng.choice([1, 3, 8, 16, 32, 64, 128])) if not dw else int(rng.choice([8, 16, 32, 64]))
        oc = c if dw else int(rng.choice([8, 16, 32, 64, 128]))
        if c * oc * k * k > 1 << 16 or h * h * c > 96 * 96 * 8:
            continue
        ci = 1 if dw else int(rng.choice(divisors(c)))
        po = int(rng.choice(divisors(c if dw else oc)))
        kp = int(rng.choice(divisors(k)))
        if ci * po * kp > 64:
            continue
        xw, ww = int(rng.integers(6, 17)), int(rng.integers(4, 17))
        accw = min(48, xw + ww + int(np.ceil(np.log2(k * k * (1 if dw else c)))) + int(rng.integers(0, 6)))
        ow = int(rng.integers(6, min(16, accw) + 1))
        dsp = int(rng.random() < 0.7 or ci * po * kp > 32)
        if not dsp and accw > 38:  # LUT multipliers into a 39-bit accumulator: Yosys ran 40 minutes on one
            continue
        out.append(conv(h, h, c, oc, k, ci, po, kp, s=int(rng.choice([1, 1, 2])) if k > 1 else 1, dw=dw, xw=xw,
                        ww=ww, accw=accw, ow=ow, dsp=dsp, xsigned=int(rng.random() < 0.3)))
    return out


def grid(module: str) -> list[dict]:
    """The parameter sets synthesized for ``module``."""
    if module == "ef_conv2d":
        return [
            # the shipped ELPV design's convolutions (planned lanes and widths)
            conv(96, 96, 1, 8, 3, 1, 8, 3, xw=15, ww=11, accw=29, ow=13, xsigned=1),
            conv(48, 48, 8, 16, 3, 8, 8, 1, xw=13, ww=14, accw=34, ow=10),
            conv(24, 24, 16, 32, 3, 16, 4, 1, xw=10, ww=14, accw=32, ow=11),
            conv(12, 12, 32, 48, 3, 16, 1, 3, xw=11, ww=12, accw=32, ow=10, dsp=0),
            conv(6, 6, 48, 64, 3, 24, 1, 1, xw=10, ww=7, accw=26, ow=10, dsp=0),
            conv(3, 3, 64, 80, 3, 4, 5, 1, xw=10, ww=9, accw=29, ow=10),
            # ResNet-8 shapes (32x32x3, 16/32/64 channels, strided 3x3 and 1x1 shortcuts)
            conv(32, 32, 3, 16, 3, 3, 4, 1, xsigned=1),
            conv(32, 32, 16, 16, 3, 4, 4, 3),
            conv(32, 32, 16, 32, 3, 8, 2, 1, s=2),
            conv(32, 32, 16, 32, 1, 16, 1, 1, s=2, accw=20),
            conv(16, 16, 32, 32, 3, 8, 4, 1, dsp=0),
            conv(16, 16, 32, 64, 3, 4, 4, 1, s=2),
            conv(8, 8, 64, 64, 3, 16, 2, 1),
            # MobileNet-V1 0.25 shapes (96x96, depthwise 3x3 and pointwise 1x1)
            conv(96, 96, 3, 8, 3, 3, 8, 1, s=2, accw=20, xsigned=1),
            conv(48, 48, 8, 8, 3, 1, 8, 3, dw=1, accw=20),
            conv(48, 48, 8, 16, 1, 8, 4, 1, accw=20),
            conv(48, 48, 16, 16, 3, 1, 4, 1, s=2, dw=1, accw=20, dsp=0),
            conv(24, 24, 16, 32, 1, 16, 2, 1, accw=22),
            conv(12, 12, 64, 64, 3, 1, 8, 1, dw=1),
            conv(6, 6, 128, 128, 1, 16, 4, 1),
            conv(3, 3, 256, 256, 1, 32, 2, 1),
            conv(3, 3, 256, 256, 3, 1, 16, 3, dw=1),
            # the shipped module detector's convolutions (models/zoo/elpv_modules_detect)
            conv(160, 160, 1, 12, 3, 1, 6, 3, s=2, xw=12, ww=12, accw=27, ow=11, xsigned=1),
            conv(40, 40, 12, 24, 3, 12, 3, 3, xw=11, ww=11, accw=29, ow=11),
            conv(20, 20, 24, 32, 3, 24, 1, 3, xw=11, ww=10, accw=29, ow=12, dsp=0),
            conv(20, 20, 32, 2, 1, 1, 1, 1, xw=12, ww=8, accw=26, ow=15),
            # products too narrow for a DSP48 (under 9 bits: Yosys builds them in LUTs), as the
            # test suite's `convs` net has them
            conv(24, 20, 8, 8, 3, 1, 4, 3, s=2, dw=1, xw=4, ww=3, accw=11, ow=4),
            conv(12, 10, 8, 16, 1, 8, 2, 1, xw=4, ww=2, accw=10, ow=6),
            conv(16, 16, 1, 8, 3, 1, 8, 3, xw=4, ww=3, accw=12, ow=6, xsigned=1),
            conv(12, 12, 8, 8, 3, 1, 4, 3, dw=1, xw=4, ww=3, accw=12, ow=6),
            conv(12, 12, 8, 16, 1, 8, 2, 1, xw=4, ww=2, accw=12, ow=6),
            # MobileNet's 1x1 stages of one output lane (distributed line buffers, 8-16-way slices)
            conv(24, 24, 32, 32, 1, 8, 1, 1, xw=10, ww=9, accw=25, ow=9),
            conv(12, 12, 64, 64, 1, 8, 1, 1, xw=9, ww=9, accw=25, ow=8),
            conv(6, 6, 128, 128, 1, 8, 1, 1, xw=10, ww=8, accw=26, ow=9),
            conv(3, 3, 256, 256, 1, 16, 1, 1, xw=10, ww=8, accw=26, ow=8),
            # depthwise stages of one or two lanes (their line buffer sliced: LB_SLICED)
            conv(12, 12, 64, 64, 3, 1, 2, 1, dw=1, xw=9, ww=7, accw=20, ow=9),
            conv(6, 6, 128, 128, 3, 1, 1, 1, dw=1, xw=11, ww=8, accw=23, ow=10),
            conv(6, 6, 128, 128, 3, 1, 1, 1, s=2, dw=1, xw=11, ww=10, accw=25, ow=9),
            conv(3, 3, 256, 256, 3, 1, 1, 1, dw=1, xw=9, ww=9, accw=22, ow=10),
            # one factor at a time around a 16x16x16 -> 16 3x3 layer
            conv(16, 16, 16, 16, 3, 1, 1, 1),
            conv(16, 16, 16, 16, 3, 1, 1, 1, dsp=0),
            conv(16, 16, 16, 16, 3, 4, 4, 1),
            conv(16, 16, 16, 16, 3, 4, 4, 1, dsp=0),
            conv(16, 16, 16, 16, 3, 4, 1, 3),
            conv(16, 16, 16, 16, 3, 1, 16, 1),
            conv(16, 16, 16, 16, 3, 16, 1, 1),
            conv(16, 16, 16, 16, 3, 16, 8, 1),
            conv(16, 16, 16, 16, 3, 4, 4, 1, xw=12, ww=12, accw=32, ow=12),
            conv(16, 16, 16, 16, 3, 4, 4, 1, xw=12, ww=12, accw=32, ow=12, dsp=0),
            conv(16, 16, 16, 16, 3, 4, 4, 1, xw=16, ww=16, accw=40, ow=16),
            conv(16, 16, 16, 16, 3, 4, 4, 1, xw=6, ww=4, accw=16, ow=6),
            conv(16, 16, 16, 16, 3, 4, 4, 1, xw=6, ww=4, accw=16, ow=6, dsp=0),
            conv(16, 16, 64, 64, 3, 4, 4, 1),
            conv(16, 16, 16, 16, 1, 4, 4, 1),
            conv(16, 16, 16, 16, 5, 4, 4, 5),
            conv(64, 64, 16, 16, 3, 4, 4, 1),
            conv(4, 4, 16, 16, 3, 4, 4, 1),
            # kernels 5 and 7, narrow and wide operands, tiny and large maps
            conv(24, 24, 8, 8, 5, 8, 2, 1, xw=16, ww=16, accw=40, ow=16),
            conv(24, 24, 8, 8, 5, 2, 1, 1, xw=16, ww=16, accw=40, ow=16, dsp=0),
            conv(12, 12, 8, 16, 7, 4, 2, 7, xw=6, ww=4, accw=16, ow=6),
            conv(12, 12, 8, 16, 7, 2, 2, 1, xw=6, ww=4, accw=16, ow=6, dsp=0),
            conv(2, 2, 4, 8, 1, 1, 1, 1, accw=20),
            conv(64, 64, 1, 4, 3, 1, 1, 1, ww=6, accw=18),
            conv(96, 96, 8, 8, 3, 1, 1, 1, dw=1, xw=12, ww=10, accw=28, ow=12, dsp=0),
            # products past one DSP48E1 (25 x 18 signed)
            conv(8, 8, 4, 4, 3, 1, 2, 1, xw=16, ww=20, accw=44, ow=16),
            conv(8, 8, 4, 4, 3, 1, 2, 1, xw=24, ww=18, accw=48, ow=16),
            conv(8, 8, 4, 4, 3, 1, 2, 1, xw=26, ww=20, accw=48, ow=16),
            *random_convs(16),
            # two products per DSP48 (PACK: 2*WW+XW+1 <= 25), their unpacked twins above
            conv(16, 16, 16, 16, 3, 4, 4, 1, pack=1),
            conv(16, 16, 16, 16, 3, 1, 16, 1, pack=1),
            conv(16, 16, 16, 16, 3, 16, 8, 1, pack=1),
            conv(16, 16, 16, 16, 3, 4, 2, 3, pack=1),
            conv(16, 16, 16, 12, 3, 4, 3, 1, pack=1),
            conv(16, 16, 16, 16, 3, 4, 4, 1, xw=10, ww=7, accw=24, ow=10, pack=1),
            conv(16, 16, 16, 16, 3, 4, 4, 1, xw=6, ww=4, accw=16, ow=6, pack=1),
            conv(32, 32, 16, 32, 3, 8, 2, 1, s=2, pack=1),
            conv(8, 8, 64, 64, 3, 16, 2, 1, pack=1),
            conv(48, 48, 8, 16, 1, 8, 4, 1, accw=20, pack=1),
            conv(24, 24, 16, 32, 3, 16, 4, 1, xsigned=1, pack=1),
            conv(96, 96, 1, 8, 3, 1, 8, 3, xw=8, ww=8, accw=22, ow=8, xsigned=1, pack=1),
            # small stages, as the test suite's tiny builds have them (gray 16x16, a few channels)
            conv(16, 16, 1, 4, 3, 1, 4, 3, xw=7, ww=5, accw=15, ow=7, xsigned=1),
            conv(16, 16, 1, 8, 3, 1, 8, 1, ww=6, accw=16),
            conv(8, 8, 4, 4, 3, 4, 4, 1, xw=6, ww=5, accw=14, ow=6),
            conv(32, 32, 1, 2, 3, 1, 1, 3, ww=4, accw=14),
            conv(8, 8, 8, 8, 3, 2, 2, 1, xw=7, ww=6, accw=18, ow=7, dsp=0),
            # shift-and-add products from a ROM of few steps: many of the weights' bits are constants
            conv(32, 32, 3, 8, 3, 3, 8, 3, xw=7, ww=6, accw=17, ow=5, dsp=0, xsigned=1),
            conv(16, 16, 4, 4, 3, 4, 4, 3, xw=6, ww=5, accw=16, ow=6, dsp=0),
            conv(16, 16, 4, 8, 1, 4, 4, 1, xw=7, ww=6, accw=16, ow=6, dsp=0),
            conv(8, 8, 4, 4, 1, 4, 4, 1, xw=6, ww=5, accw=14, ow=6, dsp=0),
        ]
    if module == "ef_dense":
        return [
            dense(1, 80, 2, 1, 1, xw=10, ww=9, accw=26, ow=13),
            dense(1, 64, 10, 8, 1),
            dense(1, 256, 2, 16, 2),
            dense(1, 128, 10, 4, 2, xw=12, ww=12, accw=32),
            dense(9, 32, 10, 8, 2),
            dense(16, 16, 4, 4, 4),
            dense(1, 512, 16, 32, 4, accw=28),
            dense(1, 8, 2, 8, 2, xw=16, ww=16, accw=40),
            dense(36, 64, 10, 16, 1),
            dense(1, 1024, 10, 64, 1, accw=28),
            dense(1, 64, 64, 1, 1),
            dense(4, 32, 32, 2, 8, xw=6, ww=4, accw=16, ow=8),
            dense(1, 32, 10, 32, 10, xw=10, ww=10, accw=28),
            dense(1, 128, 2, 8, 1, xw=10, ww=9, accw=26, ow=13),
            dense(16, 4, 2, 4, 1, xw=7, ww=6, accw=20, ow=8),
            dense(4, 8, 2, 8, 1, xw=6, ww=5, accw=16, ow=8),
            dense(16, 8, 4, 4, 2),
            dense(16, 4, 2, 1, 1, xw=7, ww=6, accw=20, ow=8),  # a whole-interval head: one lane, C/CI steps
            dense(64, 16, 2, 1, 1, xw=8, ww=7, accw=22, ow=8),
            dense(9, 32, 10, 2, 1),
            dense(1, 16, 2, 16, 2, ww=6, accw=18, ow=8),
        ]
    if module == "ef_pool2d":
        return [
            pool(96, 96, 8, 2, 2, xw=13), pool(48, 48, 16, 2, 2, xw=10), pool(24, 24, 32, 2, 2, xw=11),
            pool(12, 12, 48, 2, 2, xw=10), pool(6, 6, 64, 2, 2, xw=10),
            pool(32, 32, 16, 3, 2, p=1, xw=8, xsigned=1),
            pool(16, 16, 16, 2, 2, mode=1), pool(8, 8, 32, 3, 1, p=1, mode=1),
            pool(4, 4, 128, 2, 2), pool(96, 96, 3, 2, 2, mode=1, xw=12),
            pool(64, 64, 1, 2, 2, xw=8), pool(16, 16, 64, 2, 2, mode=1, xw=12, ow=10),
            pool(16, 16, 4, 4, 4, xw=7), pool(8, 8, 2, 2, 2, xw=6),
        ]
    if module == "ef_gpool":
        return [
            gpool(3, 3, 80, 1, xw=10), gpool(8, 8, 64, 1), gpool(3, 3, 256, 1), gpool(8, 8, 64, 4),
            gpool(6, 6, 32, 1, mode=0, xw=10), gpool(12, 12, 16, 2, mode=0), gpool(4, 4, 128, 8, xw=12),
            gpool(24, 24, 8, 1, xw=16, ow=12),
        ]
    if module == "ef_affine":
        return [affine(1, 8, 17, 15), affine(3, 8, 16, 8), affine(3, 8, 12, 12, ssigned=1), affine(1, 8, 8, 8),
                affine(3, 8, 17, 15), affine(1, 8, 12, 12, ssigned=1), affine(1, 8, 17, 7)]
    if module == "ef_act":
        return [act(16, 8, 8), act(64, 12, 8), act(16, 8, 8, mode=1), act(32, 10, 10, mode=1, alpha_bits=10),
                act(32, 8, 10), act(8, 16, 8, mode=1),
                act(16, 8, 8, mode=2, alpha_bits=4), act(32, 10, 10, mode=2, alpha_bits=6),
                act(8, 12, 8, mode=2, alpha_bits=8)]
    if module == "ef_add":
        return [add(16, 8, 8, 8), add(32, 10, 12, 10, align_a=2), add(64, 8, 8, 8), add(16, 16, 16, 16, align_b=3),
                add(32, 8, 10, 8, align_a=1), add(64, 12, 12, 10), add(16, 8, 8, 8, align_b=2),
                # as rtlgen joins ResNet-8's blocks: no rounding, the aligned sum saturated to the output
                add(16, 12, 12, 12, align_a=1, shift=0, bsigned=0), add(32, 11, 10, 10, align_b=1, shift=0),
                add(64, 9, 9, 9, align_a=1, shift=0), add(24, 13, 12, 12, align_b=2, shift=0),
                add(48, 8, 8, 9, shift=0),
                # paced joins, a few channels a cycle (ResNet-8's three at CP 1)
                add(16, 13, 12, 12, shift=0, bsigned=0, cp=1), add(32, 11, 14, 10, align_a=4, shift=4, cp=1),
                add(64, 13, 10, 12, align_b=2, shift=0, cp=1), add(64, 8, 8, 8, cp=4), add(32, 8, 10, 8, align_a=1, cp=2),
                add(48, 9, 9, 9, shift=0, cp=3), add(24, 12, 12, 12, align_a=1, shift=0, cp=8), add(16, 8, 8, 8, cp=8)]
    if module == "ef_concat":  # fire modules' expands (ReLU: unsigned), one signed branch, Inception widths
        return [concat(8, 8, 8, 8), concat(16, 7, 16, 9, align_a=2), concat(32, 10, 32, 10),
                concat(4, 8, 12, 12, bsigned=1, align_a=3), concat(64, 8, 64, 8, asigned=1, bsigned=1),
                concat(24, 12, 8, 6, align_b=4)]
    if module == "ef_resize":  # (W, C, XW, KH, KW): the row buffer in LUT RAM, in block RAM, none at KH 1
        return [dict(W=w, C=c, XW=xw, KH=kh, KW=kw) for w, c, xw, kh, kw in (
            (8, 8, 8, 2, 2), (16, 16, 10, 2, 2), (32, 4, 8, 3, 3), (96, 8, 13, 2, 1), (16, 8, 8, 1, 2),
            (64, 64, 8, 2, 2))]
    if module == "ef_fork":
        return [dict(BITS=b) for b in (24, 128, 256, 512)]
    if module == "ef_fifo":
        return [dict(BITS=b, DEPTH=d) for b, d in ((24, 16), (128, 72), (256, 40), (512, 24), (128, 300),
                                                    (64, 1100), (256, 140), (8, 4000))]
    if module == "ef_axis_in":
        return [dict(H=96, W=96, C=1), dict(H=32, W=32, C=3), dict(H=224, W=224, C=3), dict(H=16, W=16, C=1)]
    if module == "ef_axis_out":
        return [dict(N=2, OW=13, TW=16, P=1), dict(N=10, OW=16, TW=16, P=1), dict(N=6, OW=12, TW=16, P=36),
                dict(N=2, OW=8, TW=16, P=1)]
    raise ValueError(f"no calibration grid for {module}")


# ---- ROM contents: seeded random words shaped like real weights -----------------------------------

def signed_words(rng: np.random.Generator, count: int, bits: int, spread_bits: float) -> np.ndarray:
    """``count`` integers of a ``bits``-bit two's complement type, normal with a standard deviation
    of 2**spread_bits, clipped (the shipped ELPV weights: sigma about 2**(WW-1)/6; biases,
    aligned to the accumulator, about 2**(ACCW-12))."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return np.clip(np.round(rng.normal(0.0, 2.0 ** spread_bits, count)), lo, hi).astype(object)


def pack(values, bits: int, per_word: int) -> list[str]:
    words = []
    for start in range(0, len(values), per_word):
        word = 0
        for i, v in enumerate(values[start:start + per_word]):
            word |= (int(v) & ((1 << bits) - 1)) << (i * bits)
        words.append(format(word, "x"))
    return words


def rom_files(module: str, params: dict) -> dict[str, list[str]]:
    """The ROM files of one parameter set (parameter -> lines), seeded by the parameters."""
    rng = np.random.default_rng(zlib.crc32(json.dumps(params, sort_keys=True).encode()))
    p = params
    if module in ("ef_conv2d", "ef_dense"):
        groups = p["OC"] // p["PO"]
        if module == "ef_conv2d":  # the ROM's shape as the hardware model and rtlgen give it
            depth = steps_per_pixel(p)
            lanes = weight_word_bits(p) // p["WW"]
        else:
            depth = p["NPIX"] * groups * (p["C"] // p["CI"])
            lanes = p["PO"] * p["CI"]
        ww, accw = p["WW"], p["ACCW"]
        weights = signed_words(rng, depth * lanes, ww, ww - 1 - np.log2(6))
        biases = signed_words(rng, groups * p["PO"], accw, max(1, accw - 12))
        words = pack(weights, ww, lanes)
        if module == "ef_conv2d":
            words = fold_rom(words, p.get("WFOLD", 1), lanes * ww)
        return {"WFILE": words, "BFILE": pack(biases, accw, p["PO"])}
    if module == "ef_affine":
        # a normalization as rtlgen builds it: the input range maps onto the output type's
        # (a scale that would saturate every pixel lets Yosys fold the whole stage away)
        sw, accw, xw, ow, shift = p["SW"], p["ACCW"], p["XW"], p["OW"], p["SHIFT"]
        gain = rng.uniform(0.5, 1.0, p["C"]) * 2.0 ** (ow + shift - xw)
        scale = np.minimum(np.round(gain), (1 << (sw - 1 if p["SSIGNED"] else sw)) - 1).astype(np.int64)
        if p["SSIGNED"]:
            scale = scale * rng.choice([-1, 1], p["C"])
        bias = (-scale * (1 << (xw - 1)) + rng.normal(0, 2.0 ** (shift + ow - 4), p["C"])).round().astype(np.int64)
        return {"AFILE": [format(((int(b) & ((1 << accw) - 1)) << sw) | (int(s) & ((1 << sw) - 1)), "x")
                          for s, b in zip(scale, bias)]}
    return {}


def stage_ports(module: str, params: dict) -> list[dict]:
    """The instance's stream ports, as hw/rtlgen.py ``stage_ports`` records them."""
    p = params
    if module == "ef_add":
        return [{"port": "a", "dir": "in", "bits": p["C"] * p["AW_"]}, {"port": "b", "dir": "in", "bits": p["C"] * p["BW_"]},
                {"port": "out", "dir": "out", "bits": p["C"] * p["OW"]}]
    if module == "ef_concat":
        return [{"port": "a", "dir": "in", "bits": p["C_A"] * p["AW_"]},
                {"port": "b", "dir": "in", "bits": p["C_B"] * p["BW_"]},
                {"port": "out", "dir": "out", "bits": (p["C_A"] + p["C_B"]) * p["OW"]}]
    if module == "ef_fork":
        return [{"port": "in", "dir": "in", "bits": p["BITS"]}, {"port": "a", "dir": "out", "bits": p["BITS"]},
                {"port": "b", "dir": "out", "bits": p["BITS"]}]
    if module == "ef_fifo":
        return [{"port": "in", "dir": "in", "bits": p["BITS"]}, {"port": "out", "dir": "out", "bits": p["BITS"]}]
    out_channels = p["OC"] if module in ("ef_conv2d", "ef_dense") else p["C"]
    return [{"port": "in", "dir": "in", "bits": p["C"] * p["XW"]},
            {"port": "out", "dir": "out", "bits": out_channels * p.get("OW", p["XW"])}]


def unit_of(module: str, params: dict, src: Path) -> tuple[dict[str, str], str]:
    """Files and Yosys script of one parameter set, exactly as sim/resources.py builds a design's units."""
    if module in ADAPTERS:
        return adapter_unit(RTL_DIR, module, params)
    roms = rom_files(module, params)
    names = {key: f"{key.lower()}.mem" for key in roms}
    folder = src / hashlib.sha256(json.dumps([module, params], sort_keys=True).encode()).hexdigest()[:12]
    folder.mkdir(parents=True, exist_ok=True)
    for name in (f"{module}.v", *INCLUDE_FILES):
        if (RTL_DIR / name).is_file():
            (folder / name).write_text((RTL_DIR / name).read_text())
    for key, lines in roms.items():
        (folder / names[key]).write_text("\n".join(lines) + "\n")
    stage = {"name": module, "module": module, "params": params, "roms": names, "ports": stage_ports(module, params)}
    return stage_unit(folder, stage)


def verilog_logic(text: str) -> str:
    """The Verilog that synthesis reads: comments removed, spacing normalized, blank lines dropped
    (a comment edited is no reason to synthesize a calibration grid again; any other edit is)."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    return "\n".join(" ".join(line.split()) for line in text.splitlines() if line.strip())


def rtl_digest(module: str) -> str:
    """A digest of the module's Verilog (and includes), comments aside: the calibration is stale
    when it changes (tests/hw/test_resource_model.py checks every calibration against it)."""
    h = hashlib.sha256()
    for name in (f"{module}.v", *INCLUDE_FILES):
        if (RTL_DIR / name).is_file():
            h.update(verilog_logic((RTL_DIR / name).read_text()).encode())
    return h.hexdigest()[:16]


# ---- collection and fit ----------------------------------------------------------------------------

def collect(modules: list[str], work: Path, jobs: int, log=print) -> dict[str, list[dict]]:
    """Synthesize every grid point of ``modules`` (cached by content); the points per module."""
    src = work / "src"
    units = [(m, i, params, *unit_of(m, params, src)) for m in modules for i, params in enumerate(grid(m))]
    points: dict[str, list] = {m: [None] * len(grid(m)) for m in modules}
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(synthesize_unit, work / "yosys", files, script, TIMEOUT_S): (m, i, params)
                   for m, i, params, files, script in units}
        bar = progress_bar(total=len(units), desc="calibrate", unit="unit")
        for future in as_completed(futures):
            module, i, params = futures[future]
            bar.update(1)
            try:
                result = future.result()
            except Exception as error:  # noqa: BLE001  (a timeout or a Yosys failure: logged, left out)
                log(f"[calibrate] {module} FAILED {json.dumps(params, separators=(',', ':'))}: "
                    f"{str(error).splitlines()[0][:300]}")
                continue
            points[module][i] = {"params": params, "cells": result["cells"], "seconds": result["seconds"]}
            took = "cached" if result["cached"] else f"{result['seconds']:.0f} s"
            log(f"[calibrate] {module} {took} {json.dumps(params, separators=(',', ':'))} -> "
                f"{json.dumps(result['cells'], separators=(',', ':'))}")
        bar.close()
    log(f"[calibrate] {len(units)} units in {time.perf_counter() - start:.0f} s")
    return points


def write_calibration(module: str, points: list[dict], out_dir: Path = CALIBRATION_DIR) -> dict:
    """Fit the module's model on ``points`` and write ``<module>.json``; the written data."""
    from edgefpga.hw.layers.estimate import fit_module

    fit = fit_module(module, points)
    data = {"module": module, "tool": TOOL, "yosys": yosys_version(), "cache_version": CACHE_VERSION,
            "rtl_digest": rtl_digest(module), "script": "python -m edgefpga.sim.calibrate",
            "synthesis_seconds": round(sum(p["seconds"] for p in points), 1), **fit, "points": points}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{module}.json").write_text(json.dumps(data, indent=1, default=int) + "\n")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgefpga.sim.calibrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", nargs="+", default=list(MODULES), choices=MODULES)
    parser.add_argument("--jobs", type=int, default=1, help="Yosys processes at a time")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--collect-only", action="store_true", help="synthesize the grid, write no calibration")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgefpga-calibrate-") as tmp:
        work = args.work or Path(tmp)
        points = collect(args.modules, work, args.jobs, log=lambda line: print(line, flush=True))
    if args.collect_only:
        return 0
    for module in args.modules:
        data = write_calibration(module, [p for p in points[module] if p is not None])
        quality = ", ".join(f"{k} max {q['max_rel_err']:.1%} mean {q['mean_rel_err']:.1%}"
                            for k, q in data["quality"].items())
        print(f"[calibrate] {module}: {len(points[module])} points; {quality}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
