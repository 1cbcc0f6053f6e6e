"""Open RTL from the converted design: parameters and ROM contents for the generic Verilog layer
modules in ``hw/rtl/``, computed from the canonical graph and its chosen types.

The arithmetic is the integer model's (``intmodel.py``): integer weights, biases pre-aligned to
the exact accumulator, one rounding shift and a saturation per layer. So far this covers the
convolution layer (``ef_conv2d.v``, ReLU fused); the whole-network top, pooling, dense and AXI
framing are the next steps of issue 4 (see docs/dev/rtl-plan.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from .fixed import FixedType
from .intmodel import align, attr, to_int
from .precision import Precisions, sole_consumer

RTL_DIR = Path(__file__).resolve().parent / "rtl"


def hex_word(values: list[int], bits: int) -> str:
    """Pack two's-complement ``values`` (first in the low bits) into one hex word."""
    word = 0
    for i, v in enumerate(values):
        word |= (int(v) & ((1 << bits) - 1)) << (i * bits)
    return format(word, "x")


@dataclass
class ConvLayer:
    """One ef_conv2d instance: its Verilog parameters and ROM words."""

    node: str
    params: dict
    weight_words: list[str]
    bias_words: list[str]
    output_type: FixedType

    def write_roms(self, folder: Path) -> tuple[Path, Path]:
        wfile, bfile = folder / f"{self.node}_w.mem", folder / f"{self.node}_b.mem"
        wfile.write_text("\n".join(self.weight_words) + "\n")
        bfile.write_text("\n".join(self.bias_words) + "\n")
        return wfile, bfile


def conv_layer(model: ModelWrapper, p: Precisions, node_name: str, ci: int, po: int) -> ConvLayer:
    """Parameters of ``node_name`` (a Conv) with ``ci`` input channels and ``po`` output channels
    per cycle; a following ReLU is fused (its type has the same fractional bits)."""
    node = model.get_node_from_name(node_name)
    x_t = p.tensors[node.input[0]]
    w_t, b_t, acc_t = (p.layers[node.name][k] for k in ("weight", "bias", "accum"))
    weight = to_int(model.get_initializer(node.input[1]), w_t)  # (OC, C, K, K)
    bias = align(to_int(model.get_initializer(node.input[2]), b_t), b_t.frac, acc_t.frac)
    oc, c, k, _ = weight.shape
    if oc % po or c % ci:
        raise ValueError(f"{node.name}: {po} output / {ci} input lanes must divide {oc} / {c} channels")
    relu = sole_consumer(model, node.output[0])
    fused = relu is not None and relu.op_type == "Relu"
    out_t = p.tensors[relu.output[0]] if fused else p.tensors[node.output[0]]
    shift = acc_t.frac - out_t.frac
    if shift < 0:
        raise ValueError(f"{node.name}: output type has more fractional bits than the accumulator")
    _, _, h, w = model.get_tensor_shape(node.input[0])
    pads = attr(node, "pads")
    words = [hex_word([weight[g * po + lane, ch * ci + i, ky, kx] for lane in range(po) for i in range(ci)], w_t.width)
             for g in range(oc // po) for ky in range(k) for kx in range(k) for ch in range(c // ci)]
    biases = [hex_word(list(bias[g * po:(g + 1) * po]), acc_t.width) for g in range(oc // po)]
    params = dict(H=h, W=w, C=c, K=k, S=attr(node, "strides")[0], PAD=pads[0], OC=oc, CI=ci, PO=po,
                  XW=x_t.width, XSIGNED=int(x_t.signed), WW=w_t.width, ACCW=acc_t.width, SHIFT=shift,
                  OW=out_t.width, OMIN=0 if fused else round(out_t.low / out_t.step),
                  OMAX=round(out_t.high / out_t.step))
    return ConvLayer(node.name if not fused else f"{node.name}_{relu.name}", params, words, biases, out_t)


def pack_pixels(q: np.ndarray, bits: int) -> list[int]:
    """(C, H, W) integers to raster-order pixel words, channel 0 in the low bits."""
    c, h, w = q.shape
    return [int(hex_word(list(q[:, y, x]), bits), 16) for y in range(h) for x in range(w)]


def unpack_pixel(word: int, channels: int, bits: int, signed: bool) -> list[int]:
    values = [(word >> (i * bits)) & ((1 << bits) - 1) for i in range(channels)]
    return [v - (1 << bits) if signed and v >> (bits - 1) else v for v in values]
