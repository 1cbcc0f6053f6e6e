"""Quantized models in: ONNX QDQ (``QuantizeLinear`` / ``DequantizeLinear``), as ONNX Runtime's
``quantize_static`` writes them (issue 30, item 2; DESIGN.md contract 13).

A QDQ file holds int8 / uint8 weights and, on every activation, a quantize-dequantize pair with a
float scale ``s`` and a zero point ``z``: the real value of a tensor is ``s * (q - z)``. ONNX
Runtime runs such a file as integer layers (QLinearConv, QGemm, ...): an int32 sum of products,
then ``q_y = clamp(round_half_even(sum * s_x * s_w / s_y) + z_y)``. The scales are any floats, not
powers of two, and the datapath is fixed point. The route:

- Every activation travels **in units of its own scale**: the stream carries ``v = q - z``, an
  integer (a padded border is a real zero, so the stream cannot carry ``q``). Its range
  ``[qmin - z, qmax - z]`` is a fixed-point type's for the zero points ``quantize_static`` writes
  after a ReLU (int8: -128, uint8: 0: 0..255, ``ufixed<8,8>``, whose saturation is the ReLU)
  and for symmetric ones (``z = 0`` on int8, ``128`` on uint8: ``fixed<8,8>``); any other range
  gets a Clip after its layer, fused into the layer's saturation (``clamp_output``).
- A **residual Add** of two quantized tensors scales each branch to the join's units with a 1x1
  depthwise Conv (``scale_branches``), keeping JOIN_FRAC fractional bits for the join's one
  rounding; a **channel Concat** rounds each branch to the output's integers in such a Conv
  (``requantize_branches``), as ONNX Runtime's QLinearConcat does.
- The **requantization multiplier** ``M_c = s_x * s_w[c] / s_y`` (float32, as ONNX Runtime
  computes it) goes into the layer's weights: ``w' = round(q_w * M_c * 2**k) * 2**-k``, ``k`` the
  largest that keeps every ``w'`` within CONSTANT_BITS (25) signed bits: one DSP48E1 product
  (25 x 18), as before. The layer's own rounding cast to ``v_y``'s type is then ONNX Runtime's
  requantization, up to the folded weights' last bit (each within half a step of ``2**-k``).
- The biases (int32, scale ``s_x * s_w``) become ``q_b * M_c`` on their own grid, the output's
  zero point added.
- The **output** keeps ONNX Runtime's integers ``q``: its zero point joins the bias, so the
  layer's saturation to ``int8`` / ``uint8`` is ONNX Runtime's clamp, and the build records
  ``s`` and ``z`` (``report.json`` ``output_dequantize``) so that every backend returns
  ``s * (q - z)``, the scores ONNX Runtime returns.
- The **input** quantizer ``q = clamp(round(x / s) + z)`` of the normalized pixels is fitted
  once the card's normalization is in front (``fit_input_quantizer``): the per-channel affine
  map on raw pixels gets the narrowest coefficients whose rounding gives ONNX Runtime's own
  ``QuantizeLinear`` result for all 256 pixel values, checked value by value.

The lowered file is float ONNX with the types as quantization annotations, the same form the
QONNX route (hw/qonnx_in.py) gives: one way on from there (capability check, canonical graph, the
model's own types, no precision search). Each tensor's type says it is an integer in units of its
scale, so the canonical graph computes the quantized network in those units.

Refused by name (exit 2, one line): any op between quantizers whose result does not scale with
its input (a Clip with real bounds, HardSwish, ...: ``check_ops``), a network whose scores (before
a final Softmax / Sigmoid, which the runtime applies) do not come from a Conv, Gemm or MatMul, weights with a zero point other than 0, a join of
more than two tensors, an asymmetric zero point on a layer without its own rounding
cast, a reshape whose output has other quantization than its input, a layer without a quantizer
on its output, 16-bit (``com.microsoft``) quantizers, ONNX Runtime's QOperator format.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .fixed import FixedType
from .onnx_check import ConversionError
from .qonnx_in import QUANTIZED, annotate, grid_type

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
CONSTANT_BITS = 25  # a folded weight (8-bit weight x multiplier): the DSP48E1's A port, one product as before
OUTPUT_SCALE = "edgefpga.output_scale"  # metadata: the output quantizer's scale (scores are s * (q - z))
OUTPUT_ZERO = "edgefpga.output_zero_point"
INPUT_QUANTIZER = "edgefpga.input_quantizer"  # metadata: "scale,zero_point,qmin,qmax" of the input's quantizer
OUTPUT_TENSOR = "edgefpga.output_quantized_tensor"  # metadata: the source file's integer tensor the output is
INPUT_MISSES = "edgefpga.input_quantizer_misses"  # metadata: pixel values the fitted input map rounds otherwise
COMPUTE_OPS = ("Conv", "Gemm", "MatMul")
SAME_SCALE_OPS = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Relu", "ReduceMean", "ReduceMax")
QDQ_HINT = ("quantize with onnxruntime.quantization.quantize_static(..., quant_format=QuantFormat.QDQ), "
            "int8 weights (symmetric, the default), int8 or uint8 activations (docs/convert.md, \"Quantized models\")")


def is_qdq(model: onnx.ModelProto) -> bool:
    return any(n.op_type in QDQ_OPS for n in model.graph.node)


def is_lowered_qdq(model) -> bool:
    proto = getattr(model, "model", model)
    return any(p.key == QUANTIZED and p.value == "qdq" for p in proto.graph.metadata_props)


def metadata(model, key: str) -> str | None:
    proto = getattr(model, "model", model)
    return next((p.value for p in proto.graph.metadata_props if p.key == key), None)


@dataclass(frozen=True)
class Quantizer:
    """An activation's QuantizeLinear: real = scale * (q - zero), q in qmin..qmax."""

    scale: float
    zero: int
    qmin: int
    qmax: int

    @property
    def v_range(self) -> tuple[int, int]:
        """The range of ``v = q - zero``, the integer the stream carries."""
        return self.qmin - self.zero, self.qmax - self.zero

    def same(self, other: "Quantizer") -> bool:
        return (np.float32(self.scale), self.zero, self.qmin, self.qmax) == \
            (np.float32(other.scale), other.zero, other.qmin, other.qmax)


def integer_range(dtype: np.dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def v_type(range_: tuple[int, int]) -> FixedType | None:
    """The integer type whose saturation is exactly ``range_``, or None: 0..2**n-1 is ``ufixed<n,n>``,
    -2**(n-1)..2**(n-1)-1 is ``fixed<n,n>``."""
    low, high = range_
    if low == 0 and high > 0 and (high + 1) & high == 0:
        bits = high.bit_length()
        return FixedType(bits, bits, False)
    if low < 0 and high == -low - 1 and (-low) & (-low - 1) == 0:
        bits = (-low).bit_length()  # -128..127: 128 has 8 bits, fixed<8,8>
        return FixedType(bits, bits, True)
    return None


class Lowering:
    """One QDQ file being lowered (module docstring)."""

    def __init__(self, model: onnx.ModelProto, source: str):
        self.model, self.source = model, source
        self.graph = model.graph
        self.init = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in self.graph.node:
            for t in n.input:
                self.consumers.setdefault(t, []).append(n)
        self.output = self.graph.output[0].name
        self.input = self.graph.input[0].name

    def refuse(self, node: onnx.NodeProto, attribute: str, reason: str) -> ConversionError:
        return ConversionError(f"{self.source}: node '{node.name}' ({node.op_type}), {attribute}: {reason}")

    def constant(self, node: onnx.NodeProto, index: int, what: str, default=None) -> np.ndarray:
        if index >= len(node.input) or not node.input[index]:
            if default is not None:
                return np.asarray(default)
            raise self.refuse(node, what, "missing")
        value = self.init.get(node.input[index])
        if value is None:
            raise self.refuse(node, what, "must be a constant")
        return value

    def quantizer(self, q: onnx.NodeProto) -> Quantizer:
        scale = self.constant(q, 1, "y_scale (input 1)")
        zero = self.constant(q, 2, "y_zero_point (input 2)", np.uint8(0))
        if q.domain not in ("", "ai.onnx"):
            raise self.refuse(q, "domain", f"'{q.domain}' quantizers (16-bit) are not built; {QDQ_HINT}")
        if zero.dtype not in (np.int8, np.uint8):
            raise self.refuse(q, "y_zero_point", f"{zero.dtype} activations are not built (int8 and uint8 are)")
        if scale.size != 1 or zero.size != 1:
            raise self.refuse(q, "y_scale", "an activation quantizer must be per tensor")
        scale_value = float(scale.reshape(-1)[0])
        if not np.isfinite(scale_value) or scale_value <= 0:
            raise self.refuse(q, "y_scale", f"{scale_value:g} is not a positive scale")
        return Quantizer(scale_value, int(zero.reshape(-1)[0]), *integer_range(zero.dtype))

    def weights(self, dq: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray, int]:
        """A constant's DequantizeLinear: its integers, its scale(s) and the axis they run along."""
        q = self.constant(dq, 0, "x (input 0)").astype(np.int64)
        scale = self.constant(dq, 1, "x_scale (input 1)").astype(np.float32)
        zero = self.constant(dq, 2, "x_zero_point (input 2)", np.int8(0))
        if np.any(zero != 0):
            raise self.refuse(dq, "x_zero_point", f"{zero.reshape(-1)[0]}: weights with a zero point other than 0 "
                              f"(uint8 weights) are not built; {QDQ_HINT}")
        axis = 1
        for a in dq.attribute:
            if a.name == "axis":
                axis = helper.get_attribute_value(a)
        return q, scale, axis % max(1, q.ndim)

    # ---- the walk ---------------------------------------------------------------------------

    def activation_quantizers(self) -> dict[str, Quantizer]:
        """float tensor -> its quantizer; the QDQ pairs are taken out of the graph (each consumer of
        the DequantizeLinear reads the quantized tensor itself)."""
        found: dict[str, Quantizer] = {}
        self.q_outputs: dict[str, str] = {}  # float tensor -> its integer tensor in the source file
        for q in [n for n in self.graph.node if n.op_type == "QuantizeLinear"]:
            if q.input[0] in self.init:
                raise self.refuse(q, "x", "a quantizer of a constant (a weight kept in float and quantized at run "
                                  "time) is not built; quantize_static writes int8 weights")
            quant = self.quantizer(q)
            tensor = q.input[0]
            self.q_outputs.setdefault(tensor, q.output[0])
            if tensor in found and not found[tensor].same(quant):
                raise self.refuse(q, "y_scale", f"'{tensor}' is quantized twice, differently")
            found[tensor] = quant
            for dq in self.consumers.get(q.output[0], []):
                if dq.op_type != "DequantizeLinear" or not self.quantizer(dq).same(quant):
                    raise self.refuse(dq, "input", f"the quantized '{q.output[0]}' must go to a DequantizeLinear "
                                      "with the same scale and zero point")
                self.rewire(dq.output[0], tensor)
                self.graph.node.remove(dq)
                if dq.output[0] == self.output:  # the producer now writes the graph output under its name
                    found[self.output] = found.pop(tensor)
                    self.q_outputs[self.output] = self.q_outputs[tensor]
            if q.output[0] == self.output:
                raise self.refuse(q, "output", "an integer graph output is not built; end with a DequantizeLinear")
            self.graph.node.remove(q)
        return found

    def rewire(self, old: str, new: str) -> None:
        """Every reader of ``old`` reads ``new``; a graph output ``old`` is written by ``new``'s producer."""
        for node in self.consumers.get(old, []):
            node.input[:] = [new if t == old else t for t in node.input]
        self.consumers.setdefault(new, []).extend(self.consumers.pop(old, []))
        if old == self.output:
            producer = self.producer[new]
            producer.output[:] = [old if t == new else t for t in producer.output]
            for node in self.consumers.get(new, []):
                node.input[:] = [old if t == new else t for t in node.input]
            self.producer[old] = producer

    def constant_dequantizers(self) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
        found = {}
        for dq in [n for n in self.graph.node if n.op_type == "DequantizeLinear"]:
            if dq.input[0] not in self.init:
                raise self.refuse(dq, "x", "a DequantizeLinear without its QuantizeLinear is not built")
            for user in self.consumers.get(dq.output[0], []):
                if user.op_type not in COMPUTE_OPS or list(user.input).index(dq.output[0]) == 0:
                    raise self.refuse(dq, "output", f"a quantized constant read by '{user.name}' ({user.op_type}), "
                                      "not as a layer's weight or bias (a MatMul and its bias Add not fused into a "
                                      "Gemm?): run onnxruntime.quantization.shape_inference.quant_pre_process on the "
                                      "float model before quantize_static")
            found[dq.output[0]] = self.weights(dq)
            self.graph.node.remove(dq)
        return found


def output_channel_axis(node: onnx.NodeProto, weight: np.ndarray) -> int:
    """The axis of a layer's weight that runs over its outputs: Conv's 0, a Gemm's with transB 0, MatMul's 1."""
    if node.op_type == "Conv":
        return 0
    trans = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "transB"), 0)
    return 0 if node.op_type == "Gemm" and trans else 1


def multipliers(s_x: float, s_w: np.ndarray, s_y: float) -> np.ndarray:
    """``M_c = s_x * s_w[c] / s_y`` in float32, as ONNX Runtime's QLinearConv / QGemm compute it."""
    return (np.float32(s_x) * s_w.astype(np.float32)).astype(np.float32) / np.float32(s_y)


def folded_constants(values: np.ndarray, multiplier: np.ndarray) -> tuple[np.ndarray, int]:
    """(integers, k): each ``values * multiplier`` rounded on the grid ``2**-k``, ``k`` the largest
    that keeps every integer within CONSTANT_BITS signed bits. Rounding each product, not the
    multiplier, leaves every folded weight within half a grid step of its exact value, whatever
    its channel's multiplier (a per-channel multiplier rounded to a fixed number of bits would
    lose precision on the channels with the smaller ones)."""
    exact = values.astype(np.float64) * multiplier.astype(np.float64)  # exact: 8 bits x float32's 24
    largest = float(np.abs(exact).max(initial=0.0))
    if largest == 0:
        return np.zeros(values.shape, np.int64), 0
    k = CONSTANT_BITS - 2 - math.floor(math.log2(largest))
    ints = np.round(exact * 2.0 ** k).astype(np.int64)
    while np.abs(ints).max() >= 1 << (CONSTANT_BITS - 1):  # rounding up to the next power of two
        k -= 1
        ints = np.round(exact * 2.0 ** k).astype(np.int64)
    return ints, k


def fold_layer(low: Lowering, node: onnx.NodeProto, consts: dict, quantizers: dict[str, Quantizer],
               out_zero: int) -> None:
    """The layer's weights and bias in units of its input's and output's scales (module docstring)."""
    x, y = node.input[0], node.output[0]
    if x not in quantizers:
        raise low.refuse(node, "input", f"'{x}' has no quantizer; {QDQ_HINT}")
    if y not in quantizers:
        raise low.refuse(node, "output", f"'{y}' has no quantizer; {QDQ_HINT}")
    if node.input[1] not in consts:
        raise low.refuse(node, "weight", f"a float weight in a quantized model is not built; {QDQ_HINT}")
    q_w, s_w, axis = consts.pop(node.input[1])
    out_axis = output_channel_axis(node, q_w)
    channels = q_w.shape[out_axis]
    s_w = np.broadcast_to(s_w.reshape(-1), (channels,)) if s_w.size in (1, channels) else None
    if s_w is None or (s_w.size > 1 and axis != out_axis and len(set(s_w.tolist())) > 1):
        raise low.refuse(node, "weight", "per-channel weight scales must run along the output channels")
    m = multipliers(quantizers[x].scale, s_w, quantizers[y].scale)
    shape = [1] * q_w.ndim
    shape[out_axis] = channels
    folded, k = folded_constants(q_w, m.reshape(shape))
    weight_name, bias_name = f"{node.name}_weight_qdq", f"{node.name}_bias_qdq"
    low.init[weight_name] = (folded * 2.0 ** -k).astype(np.float32)
    annotate(low.model, weight_name, grid_type(int(folded.min(initial=0)), int(folded.max(initial=0)), k, True))
    q_b = np.zeros(channels, np.int64)
    if len(node.input) > 2 and node.input[2]:
        if node.input[2] not in consts:
            raise low.refuse(node, "bias", f"a float bias in a quantized model is not built; {QDQ_HINT}")
        q_b = consts.pop(node.input[2])[0].reshape(-1).astype(np.int64)
    # the bias in output steps, and the output's zero point with it (module docstring)
    bias, frac = folded_constants(q_b.astype(np.float64) * m.astype(np.float64) + out_zero, np.ones(1))
    low.init[bias_name] = (bias * 2.0 ** -frac).astype(np.float32)
    annotate(low.model, bias_name, grid_type(int(bias.min(initial=0)), int(bias.max(initial=0)), frac, True))
    node.input[1] = weight_name
    if node.op_type == "MatMul":  # MatMul has no bias input: an Add after it (the canonical dense layer)
        product = f"{y}_product"
        node.output[0] = product
        index = list(low.graph.node).index(node)
        low.graph.node.insert(index + 1, helper.make_node("Add", [product, bias_name], [y], name=f"{node.name}_bias"))
    elif len(node.input) > 2:
        node.input[2] = bias_name
    else:
        node.input.append(bias_name)


WIRING_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")
POOL_FRAC = 8  # an average's extra fractional bits (the pool kind's accumulator keeps 8: hw/layers/pool.py)


def quantized_after(low: Lowering, tensor: str, quantizers: dict[str, Quantizer]) -> str | None:
    """The first quantized tensor from ``tensor`` on through wiring (ReduceMean's output goes
    through a Reshape before PyTorch's default exporter's quantizer), or None."""
    for _ in range(8):
        if tensor in quantizers:
            return tensor
        users = low.consumers.get(tensor, [])
        if len(users) != 1 or users[0].op_type not in WIRING_OPS:
            return None
        tensor = users[0].output[0]
    return None


def scaling_conv(low: Lowering, source: str, output: str, channels: int, s_from: float, s_to: float,
                 name: str) -> tuple[onnx.NodeProto, float]:
    """A 1x1 depthwise Conv ``source`` -> ``output`` multiplying every channel by ``s_from / s_to``
    (the multiplier on its 25-bit grid, a zero bias), and the multiplier it holds: the one form of
    a requantization where no layer with weights takes it (a pool's, a join's branches)."""
    m, k = folded_constants(np.ones(1), multipliers(s_from, np.ones(1, np.float32), s_to))
    weight, bias = f"{name}_weight", f"{name}_bias"
    low.init[weight] = np.full((channels, 1, 1, 1), float(m[0]) * 2.0 ** -k, np.float32)
    low.init[bias] = np.zeros(channels, np.float32)
    annotate(low.model, weight, grid_type(0, int(m[0]), k, True))
    annotate(low.model, bias, FixedType(4, 4, True))
    node = helper.make_node("Conv", [source, weight, bias], [output], name=name, group=channels, kernel_shape=[1, 1])
    return node, float(m[0]) * 2.0 ** -k


def requantize_after(low: Lowering, node: onnx.NodeProto, quantizers: dict[str, Quantizer], shapes: dict) -> None:
    """A layer that only moves or selects values (a pool, a reshape) whose result has a scale of its
    own (ONNX Runtime runs QLinearGlobalAveragePool, or the pool in float between quantizers): the
    requantization ``v_y = round(v * s_x / s_y)`` as a 1x1 depthwise convolution right after it,
    its weights the fixed multiplier. An average keeps POOL_FRAC fractional bits for it."""
    x, y = node.input[0], node.output[0]
    target = quantized_after(low, y, quantizers)
    if x not in quantizers or target is None or quantizers[x].same(quantizers[target]):
        return
    shape, flatten = shapes.get(y), False
    if node.op_type in ("ReduceMean", "ReduceMax") and shape is not None and len(shape) == 2 and \
            len(shapes.get(x) or []) == 4:  # keepdims=0 (x.mean((2, 3))): kept 4-D, flattened after the conv
        for a in node.attribute:
            if a.name == "keepdims":
                a.i = 1
        shape, flatten = shape + [1, 1], True
    if shape is None or len(shape) != 4:
        raise low.refuse(node, "output", f"requantized from scale {quantizers[x].scale:.6g} to "
                         f"{quantizers[target].scale:.6g} on a tensor that is not an image map; pool with "
                         "AdaptiveAvgPool2d(1) (or keep the map 4-D) before a Flatten")
    channels = int(shape[1])
    x_t = v_type(quantizers[x].v_range)
    if x_t is None:
        return  # refused with the other tensors' types
    before = f"{y}_before_requantization"
    node.output[0] = before
    index = list(low.graph.node).index(node)
    requantized = f"{y}_requantized" if flatten else y
    conv, _ = scaling_conv(low, before, requantized, channels, quantizers[x].scale, quantizers[target].scale,
                           f"{node.name}_requantize")
    low.graph.node.insert(index + 1, conv)
    if flatten:
        low.graph.node.insert(index + 2, helper.make_node("Flatten", [requantized], [y], name=f"{node.name}_flatten",
                                                          axis=1))
        quantizers.setdefault(requantized, quantizers[target])
    if node.op_type in ("AveragePool", "GlobalAveragePool", "ReduceMean"):  # the mean before its rounding
        annotate(low.model, before, FixedType(x_t.width + POOL_FRAC, x_t.integer, x_t.signed))
    elif node.op_type == "Relu":
        annotate(low.model, before, x_t)
    if target != y:
        quantizers.setdefault(y, quantizers[target])


JOIN_FRAC = 12  # a residual branch scaled to the join's units keeps this many fractional bits


def scale_branches(low: Lowering, add: onnx.NodeProto, quantizers: dict[str, Quantizer], shapes: dict) -> None:
    """A residual Add of two quantized tensors (ONNX Runtime's QLinearAdd: ``round(v_a * s_a / s_y
    + v_b * s_b / s_y)``): each branch goes through a 1x1 depthwise Conv holding its multiplier
    ``s_t / s_y`` and keeps JOIN_FRAC fractional bits, so the join adds them exactly and its one
    rounding cast is the requantization, to the branches' last bit."""
    y = add.output[0]
    if y not in quantizers:
        raise low.refuse(add, "output", f"'{y}' has no quantizer; {QDQ_HINT}")
    for index, branch in enumerate(list(add.input)):
        shape = shapes.get(branch)
        if shape is None or len(shape) != 4:
            raise low.refuse(add, f"input {index}", f"'{branch}': a join of image maps with their own scales is "
                             "built for 4-D maps")
        scaled = f"{add.name}_input{index}_in_join_units"
        conv, multiplier = scaling_conv(low, branch, scaled, int(shape[1]), quantizers[branch].scale,
                                        quantizers[y].scale, f"{add.name}_input{index}_requantize")
        largest = max(abs(v) for v in quantizers[branch].v_range) * multiplier
        integer = max(1, math.ceil(math.log2(largest + 1))) + 1
        annotate(low.model, scaled, FixedType(integer + JOIN_FRAC, integer, True))
        low.graph.node.insert(list(low.graph.node).index(add), conv)
        add.input[index] = scaled


def requantize_branches(low: Lowering, concat: onnx.NodeProto, quantizers: dict[str, Quantizer],
                        shapes: dict) -> None:
    """A channel Concat of two quantized tensors (ONNX Runtime's QLinearConcat: each input
    requantized to the output's scale and zero point, then joined): a branch quantized otherwise
    than the output goes through a 1x1 depthwise Conv holding ``s_t / s_y`` that rounds to the
    output's integers; the join itself only places channels (ef_concat, no rounding)."""
    y = concat.output[0]
    if y not in quantizers:
        raise low.refuse(concat, "output", f"'{y}' has no quantizer; {QDQ_HINT}")
    for index, branch in enumerate(list(concat.input)):
        if quantizers[branch].same(quantizers[y]):
            continue
        shape = shapes.get(branch)
        if shape is None or len(shape) != 4:
            raise low.refuse(concat, f"input {index}", f"'{branch}': a channel join of 4-D maps is built")
        requantized = f"{concat.name}_input{index}_in_output_units"
        conv, _ = scaling_conv(low, branch, requantized, int(shape[1]), quantizers[branch].scale,
                               quantizers[y].scale, f"{concat.name}_input{index}_requantize")
        low.graph.node.insert(list(low.graph.node).index(concat), conv)
        concat.input[index] = requantized
        quantizers[requantized] = quantizers[y]  # typed (or clamped) with the output's integers below


CLAMPING_OPS = ("Conv", "Gemm", "Add")  # their rounding cast saturates to a fused Clip's bounds


def clamp_output(low: Lowering, tensor: str, quant: Quantizer) -> FixedType:
    """A tensor whose zero point leaves integers ``qmin - z .. qmax - z`` that are no type's range
    (a layer without a ReLU, asymmetric): a Clip to that range after its layer, which fuses into
    the layer's saturation (its OMIN / OMAX), and the narrowest type holding it."""
    producers = {o: n for n in low.graph.node for o in n.output}
    producer = producers.get(tensor)
    low_v, high_v = quant.v_range
    if producer is None or producer.op_type not in CLAMPING_OPS:
        what = f"node '{producer.name}' ({producer.op_type})" if producer else f"tensor '{tensor}'"
        raise ConversionError(
            f"{low.source}: {what}, output: zero point {quant.zero} leaves the integers {low_v}..{high_v} around the "
            "real zero, which only a layer with its own rounding cast (Conv, Gemm, Add) saturates to; quantize it "
            "symmetrically (extra_options={'ActivationSymmetric': True})")
    unclamped = f"{tensor}_before_clamp"
    producer.output[0] = unclamped
    bounds = (f"{tensor}_clamp_low", f"{tensor}_clamp_high")
    low.init[bounds[0]], low.init[bounds[1]] = np.asarray(low_v, np.float32), np.asarray(high_v, np.float32)
    index = list(low.graph.node).index(producer)
    low.graph.node.insert(index + 1, helper.make_node("Clip", [unclamped, *bounds], [tensor],
                                                      name=f"{producer.name}_clamp"))
    return grid_type(low_v, high_v, 0, True)


def check_same_scale(low: Lowering, node: onnx.NodeProto, quantizers: dict[str, Quantizer]) -> None:
    x, y = node.input[0], node.output[0]
    if x in quantizers and y in quantizers and not quantizers[x].same(quantizers[y]):
        raise low.refuse(node, "output", f"quantized with scale {quantizers[y].scale:.6g} and zero point "
                         f"{quantizers[y].zero} after an input of {quantizers[x].scale:.6g} and {quantizers[x].zero}: "
                         "a requantizing reshape is not built (ONNX Runtime's quantize_static keeps them equal)")


QOPERATOR_OPS = ("QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger", "QLinearAdd",
                 "QLinearGlobalAveragePool", "QLinearAveragePool", "DynamicQuantizeLinear")
REMOVED_OPS = ("Identity", "Dropout")  # canonicalize drops them: scale-invariant


def scores_tensor(low: Lowering) -> str:
    """The tensor the accelerator returns: the graph output, or the scores before a final Softmax
    / Sigmoid (canonicalize drops it and the runtime applies it: graph.DropFinalActivation)."""
    producer = low.producer.get(low.output)
    if producer is not None and producer.op_type in ("Softmax", "Sigmoid"):
        return producer.input[0]
    return low.output


def check_ops(low: Lowering, quantizers: dict[str, Quantizer]) -> None:
    """Between quantizers the lowered graph computes in units of each tensor's scale: only layers
    whose result scales with their input (convolutions and dense layers, whose weights take the
    multiplier; joins of two; pools, ReLU and wiring) are built; the rest is refused by name, as is
    a network whose scores do not come from a Conv, Gemm or MatMul (the output's zero point joins
    its bias). A final Softmax / Sigmoid stays: canonicalize drops it and the runtime applies it."""
    known = set(COMPUTE_OPS) | set(SAME_SCALE_OPS) | set(WIRING_OPS) | set(REMOVED_OPS)
    constants = set(low.init)
    for node in low.graph.node:
        if all(t in constants for t in node.input if t):  # shape arithmetic on constants: folded
            constants.update(node.output)
            continue
        if node.op_type in ("Add", "Concat") and len(node.input) == 2 and all(t in quantizers for t in node.input):
            continue  # a residual join or a channel concat: each branch scaled to the join's units
        if node.op_type in ("Add", "Concat", "Mul", "Sum") and sum(t in quantizers for t in node.input) >= 2:
            raise low.refuse(node, "op", "a join of two quantized tensors with their own scales is not built yet "
                             "for this op (a residual Add and a channel Concat of two are); quantize the blocks "
                             "before and after it only, or use a QONNX model with power-of-two scales")
        if node.op_type in ("Softmax", "Sigmoid") and node.output[0] == low.output:
            if node.input[0] not in quantizers:
                raise low.refuse(node, "input", "a final activation of unquantized scores is not built for a QDQ "
                                 f"model; {QDQ_HINT}")
            continue  # the accelerator returns the scores before it, the runtime applies it
        if node.op_type not in known:
            raise low.refuse(node, "op", f"{node.op_type} between quantizers would compute on integers in units of "
                             "the scale, not on real values: not built for QDQ models (convolutions, dense layers, "
                             "pools, ReLU and reshapes are)")
        if node.op_type == "Gemm":
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
                raise low.refuse(node, "alpha", "a quantized Gemm with alpha, beta or transA is not built")
    producer = low.producer.get(scores_tensor(low))
    if producer is None or producer.op_type not in COMPUTE_OPS:
        raise ConversionError(f"{low.source}: node '{producer.name if producer else low.output}' "
                              f"({producer.op_type if producer else 'input'}), output: a quantized network must end "
                              "in a Conv, Gemm or MatMul (its output's zero point joins that layer's bias); not built")


def lower_qdq(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """The QDQ model as annotated float ONNX in units of each tensor's scale (module docstring);
    raise ConversionError naming what the flow cannot build."""
    proto = onnx.ModelProto()
    proto.CopyFrom(model)
    qoperators = [n for n in proto.graph.node if n.op_type in QOPERATOR_OPS]
    if qoperators:
        raise ConversionError(f"{source}: node '{qoperators[0].name}' ({qoperators[0].op_type}), op: ONNX Runtime's "
                              "QOperator format is not read; quantize with quant_format=QuantFormat.QDQ (its "
                              "default), which writes the same integers as QuantizeLinear / DequantizeLinear pairs")
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in onnx.shape_inference.infer_shapes(proto).graph.value_info}
    low = Lowering(proto, source)
    quantizers = low.activation_quantizers()
    consts = low.constant_dequantizers()
    check_ops(low, quantizers)
    if low.input not in quantizers:
        raise ConversionError(f"{source}: the network's input '{low.input}' has no QuantizeLinear; {QDQ_HINT}")
    scores = scores_tensor(low)
    if scores not in quantizers:
        raise ConversionError(f"{source}: the network's output '{scores}' has no QuantizeLinear (the last "
                              f"layer's result stays float); {QDQ_HINT}")
    if scores != low.output:  # the activation's own quantizer is the runtime's business: it applies the activation
        quantizers.pop(low.output, None)
    out_q = quantizers[scores]
    # the output words are two's complement: a uint8 output travels as q - 128 (int8's range), its
    # zero point moved alike
    out_zero = out_q.zero if out_q.qmin < 0 else out_q.zero - 128
    for node in list(low.graph.node):
        if node.op_type in COMPUTE_OPS:
            fold_layer(low, node, consts, quantizers, out_zero if node.output[0] == scores else 0)
        elif node.op_type == "Add":
            scale_branches(low, node, quantizers, shapes)
        elif node.op_type == "Concat":
            requantize_branches(low, node, quantizers, shapes)
        elif node.op_type in WIRING_OPS:
            check_same_scale(low, node, quantizers)
        elif node.op_type in SAME_SCALE_OPS:
            requantize_after(low, node, quantizers, shapes)
    if consts:
        name = next(iter(consts))
        raise ConversionError(f"{source}: the dequantized constant '{name}' is not a Conv, Gemm or MatMul weight or "
                              "bias; only layer weights are built quantized")
    concat_outputs = {n.output[0] for n in low.graph.node if n.op_type == "Concat"}
    for tensor, quant in list(quantizers.items()):
        if tensor in concat_outputs:
            continue  # its type is its branches', joined (hw/layers/concat.py)
        if tensor == scores:
            annotate(proto, tensor, FixedType(8, 8, True))
        elif tensor != low.input:
            t = v_type(quant.v_range)
            if t is None:
                t = clamp_output(low, tensor, quant)
            annotate(proto, tensor, t)
    inp = quantizers[low.input]
    scale_node = helper.make_node("Div", [low.input, "edgefpga_input_scale"], [low.input + "_in_units"],
                                  name="input_quantizer_scale")
    for node in low.consumers.get(low.input, []):
        node.input[:] = [scale_node.output[0] if t == low.input else t for t in node.input]
    low.init["edgefpga_input_scale"] = np.asarray(inp.scale, np.float32)
    low.graph.node.insert(0, scale_node)
    del low.graph.initializer[:]
    low.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in low.init.items()
                                 if any(k in n.input for n in low.graph.node))
    for key, value in ((QUANTIZED, "qdq"), (OUTPUT_SCALE, repr(out_q.scale)), (OUTPUT_ZERO, str(out_zero)),
                       (OUTPUT_TENSOR, low.q_outputs[scores] + ("" if out_q.qmin < 0 else ",uint8")),
                       (INPUT_QUANTIZER, f"{inp.scale!r},{inp.zero},{inp.qmin},{inp.qmax}")):
        proto.graph.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))  # where qonnx keeps them
    for entry in list(proto.opset_import):
        if entry.domain not in ("", "ai.onnx"):
            proto.opset_import.remove(entry)
    return proto


# ---- after canonicalization: the input quantizer on raw pixels -------------------------------------

PIXELS = np.arange(256)
MAX_INPUT_FRAC = 24


def onnxruntime_quantize(x: np.ndarray, scale: float, zero: int, signed: bool) -> np.ndarray:
    """ONNX Runtime's own QuantizeLinear of ``x`` (float32): the integers the QDQ model starts from."""
    from .graph import onnx_session

    dtype = onnx.TensorProto.INT8 if signed else onnx.TensorProto.UINT8
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])], "input_quantizer",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [len(x)])],
        [helper.make_tensor_value_info("q", dtype, [len(x)])],
        [numpy_helper.from_array(np.asarray(scale, np.float32), "s"),
         numpy_helper.from_array(np.asarray(zero, np.int8 if signed else np.uint8), "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return onnx_session(model).run(None, {"x": x.astype(np.float32)})[0].astype(np.int64)


def input_targets(spec, scale: float, zero: int, qmin: int) -> np.ndarray:
    """(C, 256): ``v = q - z`` of every 8-bit pixel value, channel by channel, as ONNX Runtime
    quantizes the normalized pixel (models.preprocess.normalize, what the runtime feeds the model)."""
    from edgefpga.models.preprocess import normalize

    pixels = np.repeat(PIXELS[None, :, None], spec.channels, axis=0).astype(np.uint8)  # (C, 256, 1) as (C, H, W)
    x = normalize(pixels, spec)[:, :, 0]
    return np.stack([onnxruntime_quantize(row, scale, zero, qmin < 0) for row in x]) - zero


def fit_input_quantizer(model, spec, source: str) -> int:
    """The per-channel affine map in front (the card's normalization and the division by the input
    scale, one BatchNormalization) gets the narrowest fixed-point coefficients whose rounding gives
    ONNX Runtime's QuantizeLinear result for all 256 pixel values (module docstring). Where the
    quantizer's clamp is not a type's saturation, a Clip after the map (fused into it: ef_affine's
    saturation bounds) clamps where ONNX Runtime does. Returns how many pixel values (of 256 per
    channel) still land one step away: where ONNX Runtime's float rounding decides a tie
    (``x / s`` exactly half-way in exact arithmetic, as with mean 0.5, std 0.25 and a symmetric
    quantizer), no affine map can follow it; the build's check against ONNX Runtime measures
    what that costs."""
    scale, zero, qmin, qmax = (float(v) for v in metadata(model, INPUT_QUANTIZER).split(","))
    quant = Quantizer(scale, int(zero), int(qmin), int(qmax))
    targets = input_targets(spec, quant.scale, quant.zero, quant.qmin)
    inp = model.graph.input[0].name
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization" and n.input[0] == inp)
    gain, offset = (model.get_initializer(t).astype(np.float64).reshape(-1) for t in bn.input[1:3])
    low, high = quant.v_range
    best = None
    for frac in range(1, MAX_INPUT_FRAC + 1):
        a, b = (np.round(v * 2.0 ** frac) for v in (gain, offset))
        got = np.clip(np.round((PIXELS[None, :] * a[:, None] + b[:, None]) * 2.0 ** -frac), low, high)
        misses = int(np.sum(got != targets))
        if best is None or misses < best[0]:
            best = (misses, frac, a, b)
        if misses == 0:
            break
    misses, frac, a, b = best
    set_metadata(model, INPUT_MISSES, str(misses))
    for name, values in ((bn.input[1], a), (bn.input[2], b)):
        model.set_initializer(name, (values * 2.0 ** -frac).astype(np.float32))
    out_t = v_type(quant.v_range)
    if out_t is None:
        out_t = grid_type(low, high, 0, True)
        clip_after(model, bn, low, high)
        annotate(model, model.find_consumer(bn.output[0]).output[0], out_t)
    else:
        annotate(model, bn.output[0], out_t)
    return misses


def set_metadata(model, key: str, value: str) -> None:
    proto = getattr(model, "model", model)
    for p in proto.graph.metadata_props:
        if p.key == key:
            p.value = value
            return
    proto.graph.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))


def clip_after(model, node: onnx.NodeProto, low: int, high: int) -> None:
    """A Clip(low, high) on ``node``'s output (canonical form: bounds as constant inputs)."""
    out = node.output[0]
    clipped = out + "_clamped"
    names = (f"{node.name}_clamp_low", f"{node.name}_clamp_high")
    for consumer in model.find_consumers(out) or []:
        consumer.input[:] = [clipped if t == out else t for t in consumer.input]
    model.set_initializer(names[0], np.asarray(low, np.float32))
    model.set_initializer(names[1], np.asarray(high, np.float32))
    index = list(model.graph.node).index(node)
    model.graph.node.insert(index + 1, helper.make_node("Clip", [out, *names], [clipped], name=f"{node.name}_clamp"))
    model.set_tensor_shape(clipped, model.get_tensor_shape(out))


def impose_input_types(model, p) -> None:
    """The fitted coefficients' own types (derive_types would round them to CONSTANT_BITS)."""
    inp = model.graph.input[0].name
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization" and n.input[0] == inp)
    for field, name in zip(("scale", "bias"), bn.input[1:3]):
        values = model.get_initializer(name).astype(np.float64)
        frac = next(f for f in range(MAX_INPUT_FRAC + 1) if np.all(values * 2.0 ** f == np.round(values * 2.0 ** f)))
        ints = np.round(values * 2.0 ** frac).astype(np.int64)
        t = grid_type(int(ints.min(initial=0)), int(ints.max(initial=0)), frac, True)
        p.params[name] = t
        p.set_layer(bn.name, field, t)
