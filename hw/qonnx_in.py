"""Quantized models in: QONNX (``Quant`` nodes, as Brevitas' ``export_qonnx`` writes them).

A QONNX file says, for every quantized tensor, its width, scale and zero point. Those are the
user's (DESIGN.md, contract 13): no precision search runs, and the integer model computes what
``qonnx.core.onnx_exec.execute_onnx`` computes on the file. The route:

1. :func:`lower_qonnx` (run by ``check_onnx`` before the capability check): qonnx's cleanup
   (shapes, constant folding that keeps the quantizers), then every ``Quant`` node goes. A
   weight's or bias' ``Quant`` (constant input) is computed with qonnx's own ``int_quant`` and the
   result becomes the layer's initializer; an activation's ``Quant`` (a round-half-even cast with
   saturation, when its scale is a power of two, its zero point 0 and its range not narrowed) is
   a wire, and the tensor it quantized carries the fixed-point type it means. Types travel as
   quantization annotations (key ``edgefpga_fixed``), which qonnx's renames carry along.
2. The lowered file is plain float ONNX: the capability check and ``canonical_graph`` treat it as
   any other (one way to check and canonicalize), and the float comparison of the canonical
   graph against it still guards the rewrites.
3. :func:`model_precisions` reads the annotations off the canonical graph into the design's
   types (``precisions.json``, each marked ``model``); the derived types (accumulators, a layer
   feeding a fused ReLU) follow from them by the same rules as the search's
   (``precision.resolve``).

Refused by name (exit 2, one line): a scale that is not a power of two (the datapath is fixed
point; Brevitas' ``*FixedPoint`` quantizers give powers of two), a non-zero activation zero point,
narrow-range or non-round-to-nearest-even activation quantizers, ``BipolarQuant`` and ``Trunc``
on activations, a quantized tensor the flow cannot give its own type, a float layer between
quantizers (a BatchNormalization left unfolded), and a layer output without a quantizer.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper

from .fixed import FixedType
from .onnx_check import ConversionError

QUANT_OPS = ("Quant", "BipolarQuant", "Trunc")
FIXED_KEY = "edgefpga_fixed"  # quantization annotation: "width,integer,signed" of the tensor's type
QUANTIZED = "edgefpga.quantized"  # metadata: "qonnx" on a lowered QONNX model
MAX_PARAM_BITS = 24  # a constant without a quantizer kept exactly (zero biases, biases already on a grid)
ROUND_MODES = ("ROUND", "HALF_EVEN")


def is_qonnx(model: onnx.ModelProto) -> bool:
    return any(n.op_type in QUANT_OPS for n in model.graph.node)


def is_lowered_qonnx(model) -> bool:
    """A model (proto or qonnx ModelWrapper) lowered from a QONNX file."""
    proto = getattr(model, "model", model)
    return any(p.key == QUANTIZED for p in proto.graph.metadata_props)  # where qonnx's set_metadata_prop puts it


def power_of_two_exponent(scale: float) -> int | None:
    """``e`` with ``scale == 2**e`` exactly, or None."""
    if not np.isfinite(scale) or scale <= 0:
        return None
    mantissa, exponent = math.frexp(float(scale))
    return exponent - 1 if mantissa == 0.5 else None


def grid_type(low: int, high: int, frac: int, signed: bool) -> FixedType:
    """The narrowest type with ``frac`` fractional bits holding the integers ``low..high`` (in
    units of ``2**-frac``)."""
    if signed:
        bits = 1
        while low < -(1 << (bits - 1)) or high > (1 << (bits - 1)) - 1:
            bits += 1
    else:
        bits = max(1, int(high).bit_length())
    return FixedType(bits, bits - frac, signed)


def exact_type(values: np.ndarray, min_width: int = 4) -> FixedType | None:
    """The narrowest signed type holding every value exactly (a constant no quantizer typed), or
    None when that takes more than MAX_PARAM_BITS bits."""
    values = np.asarray(values, np.float64).reshape(-1)
    frac = 0
    while frac <= 64 and not np.all(values * 2.0 ** frac == np.round(values * 2.0 ** frac)):
        frac += 1
    if frac > 64:
        return None
    q = np.round(values * 2.0 ** frac).astype(np.int64) if values.size else np.zeros(1, np.int64)
    t = grid_type(int(q.min(initial=0)), int(q.max(initial=0)), frac, True)
    if t.width < min_width:
        t = FixedType(min_width, t.integer, True)
    return t if t.width <= MAX_PARAM_BITS else None


def encode(t: FixedType) -> str:
    return f"{t.width},{t.integer},{int(t.signed)}"


def decode(text: str) -> FixedType:
    width, integer, signed = (int(v) for v in text.split(","))
    return FixedType(width, integer, bool(signed))


def annotations(model) -> dict[str, FixedType]:
    """tensor -> the fixed-point type its quantizer gave it (``edgefpga_fixed`` annotations)."""
    proto = getattr(model, "model", model)
    found = {}
    for a in proto.graph.quantization_annotation:
        for p in a.quant_parameter_tensor_names:
            if p.key == FIXED_KEY:
                found[a.tensor_name] = decode(p.value)
    return found


def annotate(model, tensor: str, t: FixedType) -> None:
    proto = getattr(model, "model", model)
    for a in proto.graph.quantization_annotation:
        if a.tensor_name == tensor:
            for p in list(a.quant_parameter_tensor_names):
                if p.key == FIXED_KEY:
                    a.quant_parameter_tensor_names.remove(p)
            a.quant_parameter_tensor_names.append(onnx.StringStringEntryProto(key=FIXED_KEY, value=encode(t)))
            return
    entry = onnx.TensorAnnotation(tensor_name=tensor)
    entry.quant_parameter_tensor_names.append(onnx.StringStringEntryProto(key=FIXED_KEY, value=encode(t)))
    proto.graph.quantization_annotation.append(entry)


def move_annotation(model, old: str, new: str) -> None:
    """The type of tensor ``old`` now belongs to ``new`` (a rewrite replaced one by the other)."""
    types = annotations(model)
    if old in types and new not in types:
        annotate(model, new, types[old])


# ---- lowering ------------------------------------------------------------------------------------

class QuantNode:
    """One quantizer of the file, with its name as the user's file has it (qonnx's cleanup renames)."""

    def __init__(self, wrapper, node: onnx.NodeProto, source: str):
        self.node, self.source = node, source
        self.name = node.doc_string or node.name
        self.wrapper = wrapper

    @property
    def target(self) -> str:
        """What it quantizes, in the user's names: a layer's weight or bias, a layer's output, the input."""
        w = self.wrapper
        if w.get_initializer(self.node.input[0]) is not None:
            user = w.find_consumer(self.node.output[0])
            if user is None:
                return "a constant"
            index = list(user.input).index(self.node.output[0])
            what = {1: "weight", 2: "bias"}.get(index, f"input {index}") if user.op_type in ("Conv", "Gemm", "MatMul") \
                else f"input {index}"
            return f"the {what} of '{user.doc_string or user.name}'"
        producer = w.find_producer(self.node.input[0])
        return "the input" if producer is None else f"the output of '{producer.doc_string or producer.name}'"

    def refuse(self, attribute: str, reason: str) -> ConversionError:
        return ConversionError(f"{self.source}: node '{self.name}' ({self.node.op_type}) on {self.target}, "
                               f"{attribute}: {reason}")

    def constant(self, index: int, what: str) -> np.ndarray:
        value = self.wrapper.get_initializer(self.node.input[index]) if index < len(self.node.input) else None
        if value is None:
            raise self.refuse(what, "must be a constant")
        return np.asarray(value, np.float64)

    def attr(self, name: str, default):
        for a in self.node.attribute:
            if a.name == name:
                value = helper.get_attribute_value(a)
                return value.decode() if isinstance(value, bytes) else value
        return default


FIXED_POINT_HINT = ("the fixed-point datapath needs power-of-two scales: quantize with Brevitas' fixed-point "
                    "quantizers (Int8WeightPerTensorFixedPoint, Int8ActPerTensorFixedPoint, "
                    "Uint8ActPerTensorFixedPoint, any bit_width; docs/convert.md)")


def scale_exponents(q: QuantNode, scale: np.ndarray) -> np.ndarray:
    exps = [power_of_two_exponent(s) for s in scale.reshape(-1)]
    bad = [s for s, e in zip(scale.reshape(-1), exps) if e is None]
    if bad:
        raise q.refuse("scale", f"{bad[0]:.9g} is not a power of two; {FIXED_POINT_HINT}")
    return np.asarray(exps)


def quant_params(q: QuantNode) -> tuple[np.ndarray, np.ndarray, int, bool, bool, str]:
    scale, zeropt = q.constant(1, "scale (input 1)"), q.constant(2, "zeropt (input 2)")
    bitwidth = q.constant(3, "bitwidth (input 3)")
    if bitwidth.size != 1 or bitwidth.reshape(-1)[0] != round(bitwidth.reshape(-1)[0]) or bitwidth.reshape(-1)[0] < 1:
        raise q.refuse("bitwidth", f"{bitwidth.reshape(-1).tolist()}: one integer width is built")
    return (scale, zeropt, int(bitwidth.reshape(-1)[0]), bool(q.attr("signed", 1)), bool(q.attr("narrow", 0)),
            str(q.attr("rounding_mode", "ROUND")).upper())


def weight_type(q: QuantNode, values: np.ndarray) -> FixedType:
    """A quantized constant's type: the grid its quantizer allows (all of it, not only the values it
    holds: the width is the user's), signed as the RTL's weights are."""
    if q.node.op_type == "BipolarQuant":
        exps = scale_exponents(q, q.constant(1, "scale (input 1)"))
        frac = int(-exps.min())
        return grid_type(-(1 << int(frac + exps.max())), 1 << int(frac + exps.max()), frac, True)
    scale, zeropt, bits, signed, narrow, _ = quant_params(q)
    exps = scale_exponents(q, scale)
    if not np.all(zeropt == np.round(zeropt)):
        raise q.refuse("zeropt", f"{zeropt.reshape(-1)[0]:g} is not an integer")
    frac = int(-exps.min())
    low = -(1 << (bits - 1)) + int(narrow) if signed else 0
    high = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1 - int(narrow)
    shift, z = 2.0 ** (exps + frac), zeropt.reshape(-1)[:, None]  # every zero point with every scale
    lows, highs = (low - z) * shift, (high - z) * shift
    t = grid_type(int(lows.min()), int(highs.max()), frac, True)
    values_t = exact_type(values, 1)  # the values themselves (a folded Transpose or Reshape keeps them)
    if values_t is not None and values_t.frac > t.frac:
        raise q.refuse("values", "not on the quantizer's grid; please report this model")
    return t


def activation_type(q: QuantNode) -> FixedType:
    """An activation quantizer as a fixed-point cast (round half to even, saturate)."""
    if q.node.op_type != "Quant":
        raise q.refuse("op", f"{q.node.op_type} on an activation is not built (only Quant with power-of-two "
                       "scales: a round-to-nearest-even cast with saturation); use Brevitas' fixed-point integer "
                       "quantizers")
    scale, zeropt, bits, signed, narrow, rounding = quant_params(q)
    if scale.size != 1:
        raise q.refuse("scale", f"{scale.size} scales (per channel): an activation quantizer must be per tensor")
    if np.any(zeropt != 0):
        raise q.refuse("zeropt", f"{zeropt.reshape(-1)[0]:g}: only zero points of 0 are built (Brevitas: "
                       "Int8ActPerTensorFixedPoint / Uint8ActPerTensorFixedPoint, not the Shifted ones)")
    if rounding not in ROUND_MODES:
        raise q.refuse("rounding_mode", f"{rounding}: only ROUND (to nearest, ties to even) is built")
    if narrow:
        raise q.refuse("narrow", "a narrow-range activation quantizer is not built (Brevitas' activation "
                       "quantizers default to narrow_range=False)")
    if signed and bits < 2:
        raise q.refuse("bitwidth", "1-bit signed (bipolar) activations are not built")
    if bits > 16:
        raise q.refuse("bitwidth", f"{bits} bits: activations of up to 16 bits are built")
    exponent = scale_exponents(q, scale)[0]
    return FixedType(bits, bits + int(exponent), signed)


def lower_qonnx(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """The QONNX model as float ONNX with its quantizers as fixed-point type annotations (module
    docstring); raise ConversionError naming the quantizer the flow cannot build."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.general.intquant import int_quant
    from qonnx.util.cleanup import cleanup_model

    from .graph import bypass

    proto = onnx.ModelProto()
    proto.CopyFrom(model)
    for node in proto.graph.node:  # the user's names, for the refusals (cleanup renames every node)
        node.doc_string = node.name
    proto.ir_version = min(proto.ir_version, 10)
    wrapper = cleanup_model(ModelWrapper(proto))
    outputs = {o.name for o in wrapper.graph.output}
    for node in list(wrapper.graph.node):
        if node.op_type not in QUANT_OPS:
            continue
        q = QuantNode(wrapper, node, source)
        data = wrapper.get_initializer(node.input[0])
        if node.op_type == "Trunc":
            raise q.refuse("op", "Trunc (Brevitas' truncating average pool) is not built; use nn.AvgPool2d or "
                           "AdaptiveAvgPool2d followed by a QuantIdentity with a fixed-point quantizer")
        if data is not None:  # a weight or bias: computed as qonnx computes it
            if node.op_type == "BipolarQuant":
                scale = q.constant(1, "scale (input 1)")
                values = np.where(data >= 0, 1.0, -1.0) * scale
            else:
                scale, zeropt, bits, signed, narrow, rounding = quant_params(q)
                values = int_quant(np.asarray(data, np.float32), scale.astype(np.float32), zeropt.astype(np.float32),
                                   np.float32(bits), signed, narrow, rounding)
            t = weight_type(q, values)
            name = node.output[0]
            wrapper.graph.node.remove(node)
            wrapper.set_initializer(name, np.asarray(values, np.float32))
            annotate(wrapper, name, t)
            continue
        t = activation_type(q)
        inp, out = node.input[0], node.output[0]
        others = [c for c in wrapper.find_consumers(inp) if c is not node]
        if others or inp in outputs:
            raise q.refuse("input", f"'{inp}' also feeds {', '.join(repr(c.doc_string or c.name) for c in others)} "
                           "unquantized; quantize every use of a tensor alike")
        if inp in {i.name for i in wrapper.graph.input} and out in outputs:
            raise q.refuse("position", "a quantizer alone between input and output is not a network")
        del node.input[1:]
        if out in outputs:  # the producer now writes the graph output
            bypass(wrapper, node)
            annotate(wrapper, out, t)
        else:
            bypass(wrapper, node)
            annotate(wrapper, inp, t)
    for entry in list(wrapper.model.opset_import):
        if entry.domain not in ("", "ai.onnx"):
            wrapper.model.opset_import.remove(entry)
    wrapper.set_metadata_prop(QUANTIZED, "qonnx")
    for node in wrapper.graph.node:
        node.doc_string = ""
    return wrapper.model


# ---- the design's types from the model's ---------------------------------------------------------

QUANTIZE_HINT = ("quantize it in the model (Brevitas: a QuantReLU or QuantIdentity after it, or the layer's "
                 "output_quant, with a fixed-point quantizer)")
MAX_OUTPUT_BITS = 16  # the accelerator's output words (rtlgen.TDATA_BITS)


def refuse(source: str, node: onnx.NodeProto, attribute: str, reason: str) -> ConversionError:
    return ConversionError(f"{source}: node '{node.name}' ({node.op_type}), {attribute}: {reason}")


def check_exact_ops(model, source: str) -> None:
    """Between a QONNX model's quantizers the flow computes exactly what qonnx computes in float:
    a layer the accelerator would round on its own (a per-channel affine map, a LeakyReLU slope)
    would not."""
    inp = model.graph.input[0].name
    for node in model.graph.node:
        if node.op_type == "BatchNormalization" and node.input[0] != inp:
            raise refuse(source, node, "op", "a float per-channel scale and shift between quantized layers (a "
                         "BatchNormalization not folded into the quantized layer before it) is not computed exactly; "
                         "fold it before export (or merge it into the layer's weights in training)")
        if node.op_type == "LeakyRelu":
            raise refuse(source, node, "op", "a float slope between quantized layers is not computed exactly; use "
                         "ReLU (QuantReLU) in a quantized model")


def input_annotation(model, types: dict[str, FixedType], source: str) -> None:
    """The input quantizer reads the normalized pixels: the type belongs to the normalization's
    output (the BatchNormalization in front). With no normalization (raw pixels in), it must hold
    every 8-bit pixel as it is."""
    from .precision import PIXEL_TYPE

    inp = model.graph.input[0].name
    if inp not in types:
        return
    t = types.pop(inp)
    first = model.find_consumers(inp)
    if len(first) == 1 and first[0].op_type == "BatchNormalization":
        types.setdefault(first[0].output[0], t)
    elif t.frac < 0 or t.low > PIXEL_TYPE.low or t.high < PIXEL_TYPE.high:
        raise ConversionError(f"{source}: the input quantizer's type {t} does not hold the 8-bit pixels 0..255 and "
                              "there is no normalization in front to apply it to; give the card's (or --scale/--mean/"
                              "--std) normalization, or quantize the input so that it holds them")


def through_pass_through(model, types: dict[str, FixedType], source: str) -> None:
    """A quantizer after a max pool or a flatten is the same quantizer before it (a monotone cast
    commutes with a maximum and with a reshape): the type moves up to the layer that casts."""
    from .precision import passes_through

    for node in reversed(list(model.graph.node)):
        if not passes_through(node) or node.output[0] not in types:
            continue
        t, src = types.pop(node.output[0]), node.input[0]
        if types.get(src, t) != t:
            raise refuse(source, node, "output", f"quantized to {t} after its input was quantized to {types[src]}: a "
                         "second rounding after a pass-through layer is not built; quantize once")
        types[src] = t


def on_grid(values: np.ndarray, t: FixedType) -> bool:
    values = np.asarray(values, np.float64)
    return bool(np.array_equal(t.quantize(values), values))


def exact_output_type(model, node: onnx.NodeProto, p, source: str) -> FixedType:
    """The graph output without a quantizer: the exact result of its layer (products, sums and bias
    kept whole), as narrow as the layer's own weights bound it; refused beyond the output words."""
    from .precision import largest_magnitude

    if node.op_type == "Add" and model.find_producer(node.input[0]) is not None \
            and model.find_producer(node.input[0]).op_type == "MatMul":
        matmul = model.find_producer(node.input[0])
        weight = np.abs(model.get_initializer(matmul.input[1]).astype(np.float64)).sum(axis=0)
        x_t, w_t = p.tensors[matmul.input[0]], p.params[matmul.input[1]]
    elif node.op_type == "Conv":
        weight = np.abs(model.get_initializer(node.input[1]).astype(np.float64)).reshape(
            model.get_initializer(node.input[1]).shape[0], -1).sum(axis=1)
        x_t, w_t = p.tensors[node.input[0]], p.params[node.input[1]]
    else:
        raise refuse(source, node, "output", f"the network's output has no quantizer; {QUANTIZE_HINT}")
    bias_name = node.input[1] if node.op_type == "Add" else node.input[2]
    bias, b_t = model.get_initializer(bias_name).astype(np.float64).reshape(-1), p.params[bias_name]
    frac = max(x_t.frac + w_t.frac, b_t.frac)
    bound = float(np.max(weight * largest_magnitude(x_t) + np.abs(bias)))
    steps = math.ceil(bound * 2.0 ** frac)
    t = grid_type(-steps, steps, frac, True)
    if t.width > MAX_OUTPUT_BITS:
        raise refuse(source, node, "output", f"the network's output has no quantizer and its exact type {t} is wider "
                     f"than the {MAX_OUTPUT_BITS}-bit output words; quantize the output (Brevitas: output_quant="
                     f"Int8ActPerTensorFixedPoint with bit_width up to {MAX_OUTPUT_BITS})")
    return t


def model_precisions(model, ranges: dict, source: str):
    """Every type of the design from the model's quantizers (module docstring), marked ``model``."""
    from .precision import build_knobs, drop_unused_fraction, resolve

    check_exact_ops(model, source)
    types = annotations(model)
    input_annotation(model, types, source)
    through_pass_through(model, types, source)
    final = model.graph.output[0].name
    nodes = {n.name: n for n in model.graph.node}
    fixed, output_knob = {}, None
    for knob in build_knobs(model, ranges):
        node = nodes[knob.node]
        if knob.field != "result":
            values = model.get_initializer(knob.tensor)
            t = types.pop(knob.tensor, None) or exact_type(values)
            if t is None:
                raise refuse(source, node, knob.field, f"float values with no quantizer; quantize the {knob.field} "
                             "(Brevitas: bias_quant=Int16Bias, or Int8BiasPerTensorFixedPointInternalScaling) or drop it")
            if not on_grid(values, t):
                raise refuse(source, node, knob.field, f"its values are off the quantizer's grid ({t}) once the graph is "
                             "canonical (a BatchNormalization folded into a quantized layer?); fold it before quantizing")
            fixed[knob.name] = t
        elif knob.tensor in types:
            fixed[knob.name] = types.pop(knob.tensor)
        elif knob.tensor == final:
            output_knob = knob
            fixed[knob.name] = FixedType(16, 8)  # for now: the exact type needs the types before it
        elif node.op_type == "BatchNormalization" and node.input[0] == model.graph.input[0].name:
            raise ConversionError(f"{source}: the network's input has no quantizer, so the normalized pixels it "
                                  "reads are float; quantize the input (Brevitas: a QuantIdentity with "
                                  "Int8ActPerTensorFixedPoint first, or the first layer's input_quant)")
        else:
            raise refuse(source, node, "output", f"no quantizer; {QUANTIZE_HINT}")
    if output_knob is not None:
        first = resolve(model, build_knobs(model, ranges), {}, ranges, fixed)
        fixed[output_knob.name] = exact_output_type(model, model.find_producer(final), first, source)
    p = resolve(model, build_knobs(model, ranges), {}, ranges, fixed)
    for tensor, t in list(types.items()):  # a quantizer between a layer and the ReLU it feeds: its cast
        node = model.find_producer(tensor)
        if node is None or node.op_type not in ("Conv", "Add", "BatchNormalization") or tensor not in p.tensors:
            what = f"node '{node.name}' ({node.op_type})" if node is not None else f"tensor '{tensor}'"
            raise ConversionError(f"{source}: {what}, output: a quantizer there ({t}) is not built")
        p.tensors[tensor] = t
        p.set_layer(node.name, "result", t)
        types.pop(tensor)
    for node in model.graph.node:
        if node.op_type == "Conv" and node.output[0] == final:
            drop_unused_fraction(p, node.name, final, p.layers[node.name]["accum"])
    p.sources = {name: "model" for name in (*p.params, *p.tensors)}
    return p


def reference_graph(model, p) -> onnx.ModelProto:
    """What qonnx computes on the QONNX file, as plain ONNX on the canonical graph (raw pixels in):
    the float normalization, the quantized weights, and each quantizer as a round-half-even cast
    with saturation (the precision proxy, its normalization left in float). The build keeps it
    (model/reference.onnx) for ``verify``."""
    from .precision import Precisions, proxy_graph

    norm = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    skip = {t for n in norm for t in n.input[1:]}
    plain = Precisions({k: v for k, v in p.params.items() if k not in skip}, p.tensors, p.layers)
    return proxy_graph(model, plain)


def qonnx_outputs(path: str, inputs: np.ndarray) -> np.ndarray:
    """``qonnx.core.onnx_exec.execute_onnx`` on the QONNX file after qonnx's cleanup, one image at a
    time (normalized float inputs, NCHW)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.util.cleanup import cleanup_model

    proto = onnx.load(path)
    proto.ir_version = min(proto.ir_version, 10)
    model = cleanup_model(ModelWrapper(proto))
    name, out = model.graph.input[0].name, model.graph.output[0].name
    return np.concatenate([execute_onnx(model, {name: inputs[i:i + 1].astype(np.float32)})[out]
                           for i in range(len(inputs))])
