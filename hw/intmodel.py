"""The chosen fixed-point design as integer arithmetic: the specification the RTL implements.

Every tensor is held as integers ``q`` with a known number of fractional bits (value = q * 2^-frac).
Products and sums are exact (the accumulators are exact, see ``precision.exact_accumulator``); the
only rounding is the cast of a layer's result: an arithmetic right shift that rounds half to even,
then saturation to the type's range. Average pooling divides like hls4ml's ``ap_fixed`` does: the
window sum (padding counted as zeros), widened to the accumulator's fractional bits, divided by
the window size with truncation, then cast. A max pool's padding never wins. A residual Add
aligns both branches exactly before its cast; a channel Concat aligns both exactly and casts
nothing (its type holds both: hw/layers/concat.py); a Clip keeps the grid values inside its bounds; a
LeakyRelu multiplies negative values by its slope rounded to a 16-bit type; a HardSwish multiplies
x (on a grid of at least 0 fractional bits) by relu6(x + 3), exactly, then by 1/6 rounded to a
16-bit type, then casts once (:func:`hardswish`). This model reproduces the hls4ml emulator bit for bit (tests/hw), and the
RTL generator reads its integer weights and shifts from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view
from qonnx.core.modelwrapper import ModelWrapper

from .fixed import FixedType
from .graph import attr
from .precision import Precisions, stream_order


@dataclass
class Fixed:
    """Integers ``q`` (int64) standing for ``q * 2**-frac``."""

    q: np.ndarray
    frac: int

    @property
    def real(self) -> np.ndarray:
        return self.q.astype(np.float64) * 2.0 ** -self.frac


def to_int(values: np.ndarray, t: FixedType) -> np.ndarray:
    """Integers of values that already lie on ``t``'s grid (weights are rounded by the search)."""
    return np.round(t.quantize(values) / t.step).astype(np.int64)


def shift_round_even(q: np.ndarray, shift: int) -> np.ndarray:
    """``q * 2**-shift`` rounded half to even (a left shift when ``shift`` is negative)."""
    if shift <= 0:
        return q << -shift
    floor = q >> shift
    rest = q - (floor << shift)
    half = 1 << (shift - 1)
    return floor + ((rest > half) | ((rest == half) & (floor & 1 == 1)))


def cast(x: Fixed, t: FixedType) -> Fixed:
    """``ap_fixed<W,I,AP_RND_CONV,AP_SAT>`` assignment: round half to even, then saturate."""
    q = shift_round_even(x.q, x.frac - t.frac)
    return Fixed(np.clip(q, round(t.low / t.step), round(t.high / t.step)), t.frac)


def align(q: np.ndarray, frac: int, target: int) -> np.ndarray:
    """Exact change of fractional bits upward (``target >= frac``); a bias with more fractional
    bits than the accumulator is truncated, as hls4ml's cast into ``accum_t`` does."""
    return q << (target - frac) if target >= frac else q >> (frac - target)


@dataclass(frozen=True)
class Window:
    """A 2-D sliding window of a canonical Conv or pool: kernel, strides, pads (top, left, bottom, right)."""

    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]

    @classmethod
    def of(cls, node: onnx.NodeProto, kernel: list[int] | None = None) -> "Window":
        kernel = kernel or attr(node, "kernel_shape")
        return cls(tuple(kernel), tuple(attr(node, "strides", [1, 1])), tuple(attr(node, "pads", [0, 0, 0, 0])))

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        top, left, bottom, right = self.pads
        return ((h + top + bottom - self.kernel[0]) // self.strides[0] + 1,
                (w + left + right - self.kernel[1]) // self.strides[1] + 1)


def windows(x: np.ndarray, window: Window, fill: int = 0) -> np.ndarray:
    """(N, C, OH, OW, KH, KW) windows of an (N, C, H, W) integer map padded with ``fill``."""
    top, left, bottom, right = window.pads
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill)
    view = sliding_window_view(padded, window.kernel, axis=(2, 3))
    return view[:, :, ::window.strides[0], ::window.strides[1]]


EXACT_IN_FLOAT64 = 2 ** 53  # every integer below this is a float64, and so is every sum of them below it
CHUNK = 32  # images per float64 product (bounds the windows' copy)


def conv_sum(win: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """sum over (c, y, x) of win[n, c, h, w, y, x] * weight[o, c, y, x] -> (N, O, OH, OW), exactly.
    In float64 with BLAS when no partial sum can reach 2**53 (the products and sums of integers
    are then exact: tens of times faster than an integer einsum), else in int64."""
    bound = int(np.abs(win).max(initial=0)) * int(np.abs(weight).reshape(len(weight), -1).sum(1).max(initial=0))
    if bound >= EXACT_IN_FLOAT64:
        return np.einsum("nchwyx,ocyx->nohw", win, weight)
    w = weight.astype(np.float64)
    parts = [np.tensordot(win[i:i + CHUNK].astype(np.float64), w, axes=([1, 4, 5], [1, 2, 3]))
             for i in range(0, len(win), CHUNK)]
    return np.rint(np.concatenate(parts)).astype(np.int64).transpose(0, 3, 1, 2)


PAD_MAX = np.iinfo(np.int64).min  # a max pool's padding never wins (every window holds a pixel)


def clip_limits(model: ModelWrapper, node: onnx.NodeProto, frac: int) -> tuple[int, int]:
    """A Clip's bounds on a grid of ``frac`` fractional bits: the grid values inside them."""
    low, high = (float(model.get_initializer(t)) for t in node.input[1:3])
    scale = 2.0 ** frac
    return max(math.ceil(low * scale), -(1 << 62)), min(math.floor(high * scale), 1 << 62)


def hardswish(x: Fixed, sixth: int, sixth_frac: int) -> Fixed:
    """HardSwish's exact product before its cast: x * clip(x + 3, 0, 6) * sixth * 2^-sixth_frac,
    ``sixth`` being 1/6 on a grid of ``sixth_frac`` fractional bits. x is first put on a grid of
    F = max(frac, 0) fractional bits (exact), so 3 and 6 are integers there; the result has
    2F + sixth_frac fractional bits. The RTL (ef_act MODE 2) computes the same integers."""
    grid = max(x.frac, 0)
    q = x.q << (grid - x.frac)
    gate = np.clip(q + (3 << grid), 0, 6 << grid)
    return Fixed(q * gate * sixth, 2 * grid + sixth_frac)


class IntegerModel:
    """Runs the canonical graph with the design's integer arithmetic on (N, C, H, W) uint8 pixels."""

    def __init__(self, model: ModelWrapper, precisions: Precisions):
        self.model = model
        self.p = precisions

    def param(self, name: str) -> tuple[np.ndarray, FixedType]:
        t = self.p.params[name]
        return to_int(self.model.get_initializer(name), t), t

    def run(self, pixels: np.ndarray) -> Fixed:
        """The network's output scores for (N, C, H, W) pixels, in the order the RTL streams them
        (a map cell by cell, each cell's classes together: ``precision.stream_order``)."""
        out = self.run_all(pixels)[self.model.graph.output[0].name]
        return Fixed(stream_order(out.q), out.frac)

    def run_all(self, pixels: np.ndarray) -> dict[str, Fixed]:
        """Every tensor of the graph, by name: the per-layer golden values for RTL layer tests."""
        values = {self.model.graph.input[0].name: Fixed(pixels.astype(np.int64), 0)}
        for node in self.model.graph.node:
            inputs = [values[t] for t in node.input if t in values]
            values[node.output[0]] = getattr(self, "op_" + node.op_type)(node, *inputs)
        return values

    def result_type(self, node: onnx.NodeProto) -> FixedType | None:
        return self.p.tensors.get(node.output[0])

    def op_BatchNormalization(self, node, x: Fixed) -> Fixed:
        scale, ts = self.param(node.input[1])
        bias, tb = self.param(node.input[2])
        shape = (1, -1) + (1,) * (x.q.ndim - 2)
        frac = max(x.frac + ts.frac, tb.frac)
        acc = align(x.q * scale.reshape(shape), x.frac + ts.frac, frac) + align(bias, tb.frac, frac).reshape(shape)
        return cast(Fixed(acc, frac), self.result_type(node))

    def op_Conv(self, node, x: Fixed) -> Fixed:
        weight, tw = self.param(node.input[1])
        bias, tb = self.param(node.input[2])
        acc_t = self.p.layers[node.name]["accum"]
        win = windows(x.q, Window.of(node, list(weight.shape[2:])))
        if attr(node, "group", 1) == 1:
            acc = conv_sum(win, weight)
        else:  # depthwise: output channel c sees input channel c only
            acc = np.einsum("nchwyx,cyx->nchw", win, weight[:, 0])
        acc = align(acc, x.frac + tw.frac, acc_t.frac) + align(bias, tb.frac, acc_t.frac)[None, :, None, None]
        return cast(Fixed(acc, acc_t.frac), self.result_type(node))

    def op_Relu(self, node, x: Fixed) -> Fixed:
        return cast(Fixed(np.maximum(x.q, 0), x.frac), self.result_type(node))

    def op_Clip(self, node, x: Fixed, *_bounds) -> Fixed:
        low, high = clip_limits(self.model, node, x.frac)
        return cast(Fixed(np.clip(x.q, low, high), x.frac), self.result_type(node))

    def op_LeakyRelu(self, node, x: Fixed) -> Fixed:
        t = self.p.layers[node.name]["alpha"]
        alpha = int(to_int(np.float64(attr(node, "alpha", 0.01)), t))
        q = np.where(x.q >= 0, x.q << t.frac, x.q * alpha)
        return cast(Fixed(q, x.frac + t.frac), self.result_type(node))

    def op_HardSwish(self, node, x: Fixed) -> Fixed:
        t = self.p.layers[node.name]["sixth"]
        return cast(hardswish(x, int(to_int(np.float64(1.0 / 6.0), t)), t.frac), self.result_type(node))

    def op_MaxPool(self, node, x: Fixed) -> Fixed:
        return Fixed(windows(x.q, Window.of(node), PAD_MAX).max(axis=(4, 5)), x.frac)

    def op_AveragePool(self, node, x: Fixed) -> Fixed:
        window = Window.of(node)
        acc_t = self.p.layers[node.name]["accum"]
        total = align(windows(x.q, window).sum(axis=(4, 5)), x.frac, acc_t.frac)  # padding counts as zeros
        count = window.kernel[0] * window.kernel[1]
        quotient = np.sign(total) * (np.abs(total) // count)  # ap_fixed division truncates toward zero
        return cast(Fixed(quotient, acc_t.frac), self.result_type(node))

    def op_Resize(self, node, x: Fixed) -> Fixed:
        """Nearest upsampling by integer factors: each value repeated (hw/layers/resize.py)."""
        from .layers.resize import factors_of, repeat

        return Fixed(repeat(x.q, *factors_of(self.model, node)), x.frac)

    def op_Flatten(self, node, x: Fixed) -> Fixed:
        return Fixed(x.q.reshape(len(x.q), -1), x.frac)

    def op_MatMul(self, node, x: Fixed) -> Fixed:
        weight, tw = self.param(node.input[1])
        return Fixed(x.q @ weight, x.frac + tw.frac)

    def op_Concat(self, node, x: Fixed, y: Fixed) -> Fixed:
        """a's channels then b's, both on the finer grid, exactly: no rounding, no saturation
        (the RTL widens each value and checks nothing, so neither does the specification)."""
        frac = max(x.frac, y.frac)
        return Fixed(np.concatenate([align(x.q, x.frac, frac), align(y.q, y.frac, frac)], axis=1), frac)

    def op_Add(self, node, x: Fixed, y: Fixed | None = None) -> Fixed:
        if y is not None:  # residual: both branches aligned exactly, one rounding cast
            frac = max(x.frac, y.frac)
            return cast(Fixed(align(x.q, x.frac, frac) + align(y.q, y.frac, frac), frac), self.result_type(node))
        matmul = self.model.find_producer(node.input[0])
        bias, tb = self.param(node.input[1])
        acc_t = self.p.layers[matmul.name]["accum"]
        acc = align(x.q, x.frac, acc_t.frac) + align(bias, tb.frac, acc_t.frac).reshape(1, -1)
        return cast(Fixed(acc, acc_t.frac), self.result_type(node))
