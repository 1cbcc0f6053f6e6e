"""What the stage builders of every layer kind share: the Stage an RTL instance is, the pixel
streams between stages, and the integer helpers that turn a layer's types into RTL parameters
(ROM words, saturation bounds, window geometry, exact dividers). Each kind's ``stage()`` in
hw/layers/<kind>.py builds its instance from these; hw/rtlgen.py wires the stages together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from qonnx.core.modelwrapper import ModelWrapper

from ..fixed import FixedType
from ..intmodel import Window, align, clip_limits, to_int  # noqa: F401  (re-exported for the kinds)
from ..precision import Precisions, fused_activation
from .base import clog2


def hex_word(values: list[int], bits: int) -> str:
    """Pack two's-complement ``values`` (first in the low bits) into one hex word."""
    word = 0
    for i, v in enumerate(values):
        word |= (int(v) & ((1 << bits) - 1)) << (i * bits)
    return format(word, "x")


def grid_range(t: FixedType) -> tuple[int, int]:
    """The integers a type holds."""
    return round(t.low / t.step), round(t.high / t.step)


def saturation(model: ModelWrapper, p: Precisions, node: onnx.NodeProto) -> tuple[str, FixedType, int, int]:
    """(tensor, type, min, max) of ``node``'s final cast, with a Relu / Clip after it fused in:
    the activation's type, its range narrowed by the activation's bounds."""
    act = fused_activation(model, node)
    if act is None:
        t = p.tensors[node.output[0]]
        return node.output[0], t, *grid_range(t)
    t = p.tensors[act.output[0]]
    low, high = grid_range(t)
    if act.op_type == "Relu":
        low = max(low, 0)
    else:
        clo, chi = clip_limits(model, act, t.frac)
        low, high = max(low, clo), min(high, chi)
    return act.output[0], t, low, high


@dataclass
class Stage:
    """One module instance of the generated top: its parameters, the ROM files it reads (name ->
    lines), its ports (name, stream, direction) and the tensor it computes."""

    name: str
    module: str
    params: dict
    roms: dict[str, list[str]]
    inputs: list[tuple[str, str]]  # (port, stream)
    outputs: list[tuple[str, str]]
    out_channels: int
    out_bits: int
    steps_per_frame: int = 0  # engine cycles per frame (the layer's share of the interval)
    multipliers: int = 0
    node: str = ""
    need: np.ndarray | None = field(default=None, repr=False)  # last input pixel each output pixel needs

    @property
    def output(self) -> str:
        return self.outputs[0][1]


@dataclass
class StreamInfo:
    """A pixel stream between stages: ``channels`` values of ``bits`` each per pixel, ``h`` x ``w``
    pixels per frame (1 x 1 for a vector)."""

    name: str
    channels: int
    bits: int
    h: int
    w: int

    @property
    def width(self) -> int:
        return self.channels * self.bits


def window_need(window: Window, h: int, w: int) -> np.ndarray:
    """For each output pixel (raster order) of a window stage, the raster index of the last input
    pixel it needs (the window's bottom-right corner, clamped to the map)."""
    oh, ow = window.output_size(h, w)
    rows = np.minimum(np.arange(oh) * window.strides[0] - window.pads[0] + window.kernel[0] - 1, h - 1)
    cols = np.minimum(np.arange(ow) * window.strides[1] - window.pads[1] + window.kernel[1] - 1, w - 1)
    return (rows[:, None] * w + cols[None, :]).reshape(-1)


def window_params(window: Window, h: int, w: int) -> dict:
    oh, ow = window.output_size(h, w)
    return dict(H=h, W=w, KH=window.kernel[0], KW=window.kernel[1], SH=window.strides[0], SW=window.strides[1],
                PT=window.pads[0], PL=window.pads[1], OH=oh, OWD=ow,
                FRAME_OVERLAP=frame_overlap(h, oh, window.strides[0]))


def frame_overlap(h: int, oh: int, sh: int) -> int:
    """FRAME_OVERLAP of a window stage (ef_conv2d, ef_pool2d): 1 where the next frame's rows may
    enter the line buffer while the stage computes a frame's last outputs, which is wherever the
    rows the engine frees can only grow as it starts the next frame: (OH-1)*SH <= H (every stage
    of the reference nets). Without it a frame's boundary costs the largest tail of any stage:
    ResNet-8's Conv_8 holds its input about 10 pixels x 1,152 cycles once the frame's last pixel is
    in, so the network's interval was 84,083 cycles against a plan of 73,728 (73,729 with it)."""
    return int((oh - 1) * sh <= h)


def line_buffer_rows(kh: int, sh: int) -> int:
    """R: the rows a window stage's line buffer keeps (KH + SH rounded up to a power of two, at least 2)."""
    return max(2, 1 << clog2(kh + sh))


def position_bits(params: dict) -> int:
    """NB: the bits of a window stage's signed row and column positions (the RTL's MAXD)."""
    p = params
    r = line_buffer_rows(p["KH"], p.get("SH", 1))
    maxd = max(p["H"], p["W"]) + max(p["KH"], p["KW"]) + max(p.get("SH", 1), p.get("SW", 1)) + \
        max(p.get("PT", 0), p.get("PL", 0)) + r
    return clog2(2 * maxd + 1) + 1


def overlap_registers(params: dict) -> int:
    """The flip-flops FRAME_OVERLAP adds to a window stage: the ``ahead`` flag, two bounds of the
    next frame's rows (NB bits each) and, where R does not divide H, three row slots of clog2(R)
    bits (the rows counted across frames)."""
    if not params.get("FRAME_OVERLAP", 0):
        return 0
    r = line_buffer_rows(params["KH"], params.get("SH", 1))
    return 1 + 2 * position_bits(params) + 3 * clog2(r) * (params["H"] % r != 0)


def aligned_weights(model: ModelWrapper, tensor: str, x_t: FixedType, w_t: FixedType,
                    acc_t: FixedType) -> tuple[np.ndarray, int]:
    """Integer weights whose products land on the accumulator's grid, and their width: when the
    bias has more fractional bits than input x weight, the weights are shifted up (exactly)."""
    extra = acc_t.frac - x_t.frac - w_t.frac
    return to_int(model.get_initializer(tensor), w_t) << extra, w_t.width + extra


def exact_divider(n: int, max_value: int) -> tuple[int, int]:
    """(m, sh) with floor(x / n) == (x * m) >> sh for every 0 <= x <= max_value (Granlund-Montgomery)."""
    if n & (n - 1) == 0:
        return 1, n.bit_length() - 1
    bits = max(1, max_value.bit_length())
    extra = (n - 1).bit_length()
    sh = bits + extra
    m = -(-(1 << sh) // n)
    return m, sh


def average_params(p: Precisions, node, x_t: FixedType, count: int) -> tuple[dict, FixedType]:
    """The divider and cast of an average over ``count`` values (pool or global pool)."""
    acc_t, out_t = p.layers[node.name]["accum"], p.tensors[node.output[0]]
    align_bits = acc_t.frac - x_t.frac
    window_sum = count * max(abs(v) for v in grid_range(x_t))
    m, sh = exact_divider(count, window_sum << align_bits)
    omin, omax = grid_range(out_t)
    # the sum's width (with sign): wider accumulators cost registers and adders per channel
    return dict(MODE=1, OW=out_t.width, ALIGN=align_bits, SHIFT=acc_t.frac - out_t.frac,
                SUMW=window_sum.bit_length() + 1, DIV_M=m, DIV_SH=sh, OMIN=omin, OMAX=omax), out_t


def window_geometry(node: onnx.NodeProto, kernel) -> dict:
    """The planner's window fields of a Conv or pool node (kernel, strides, leading pads)."""
    from ..graph import attr

    strides = attr(node, "strides", [1, 1])
    pads = attr(node, "pads", [0, 0, 0, 0])
    return {"kernel": tuple(kernel), "stride": (strides[0], strides[1]), "pads": (pads[0], pads[1])}
