"""ONNX graph rewrites that bring a user's CNN into the one form the rest of the flow handles.

After :func:`canonical_graph` every model, whichever tool exported it, is: opset 13 (14 where it
holds a HardSwish), batch 1,
raw 8-bit pixels in, NCHW (an NHWC input's transpose dropped: the stream is channels-last anyway;
the card's normalization and any constant Sub / Mul / Div / Add the model does at its input are one
BatchNormalization node in front), Conv with explicit attributes (pads resolved from auto_pad, a
zero Pad before it added), a bias and any following BatchNorm folded in,
ReLU / LeakyRelu / Clip (both bounds as constants), HardSwish (TorchScript's opset-13 x * HardSigmoid(x)
fused into one), a HardSigmoid as an affine map and a Clip to [0, 1], pooling with explicit attributes (global
pools, and ReduceMean / ReduceMax over the map, as a window over the whole map; a Pad before a
pool added to its padding), nearest upsampling as Resize(x, "", scales [1, 1, kh, kw]) with
asymmetric coordinates and floor (hw/layers/resize.py), Flatten, MatMul +
Add for every dense layer, residual Adds and channel Concats of two tensors, a BatchNormalization for any other
per-channel affine map, scores out (a final Softmax or Sigmoid is dropped and recorded: the
runtime applies it). PyTorch's two exporters (TorchScript, ``dynamo=False``, and the
torch.export-based default since 2.9, opset 18-20) give the same canonical graph for the same
model. Node names are qonnx's readable ones (``Conv_0``, ``Relu_0``, ...): the same names key the
profile, the precision plan and hls4ml's per-layer configuration.

:func:`channels_last` then gives the graph hls4ml reads (io_stream wants NHWC).
"""

from __future__ import annotations

import warnings

import onnx

onnx.IR_VERSION = 13  # onnx 1.23 writes IR 14, which ONNX Runtime 1.31 (run inside qonnx) refuses

import numpy as np  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402
from qonnx.core.modelwrapper import ModelWrapper  # noqa: E402
from qonnx.transformation.base import Transformation  # noqa: E402
from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean  # noqa: E402
from qonnx.util.cleanup import cleanup_model  # noqa: E402

from .onnx_check import NHWC_TO_NCHW, ConversionError, default_opset, input_transpose  # noqa: E402
from .qonnx_in import move_annotation  # noqa: E402

TARGET_OPSET = 13
CHANNELS_LAST_DOMAIN = "qonnx.custom_op.channels_last"
OUTPUT_ACTIVATION = "edgefpga.output_activation"  # metadata: "softmax" / "sigmoid" when the source applied one


def without_initializer_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Before IR 4 exporters listed every initializer as a graph input too (the ONNX zoo's MNIST
    does); qonnx would then treat weights as inputs."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    constants = {i.name for i in copy.graph.initializer}
    keep = [i for i in copy.graph.input if i.name not in constants]
    del copy.graph.input[:]
    copy.graph.input.extend(keep)
    copy.ir_version = max(copy.ir_version, 4)  # IR 4: initializers need not be inputs
    return copy


def with_batch_one(model: onnx.ModelProto) -> onnx.ModelProto:
    """Batch size 1 on the input and output; inner shapes are inferred again. (qonnx's own batch
    rewrite also rewrites the first entry of every Reshape target, weights included.)"""
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_value = 1
    del model.graph.value_info[:]
    return model


def to_target_opset(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """Older exports (opset 8-12) upgraded with ONNX's own version converter."""
    if default_opset(model) >= TARGET_OPSET:
        return model
    try:
        upgraded = onnx.version_converter.convert_version(model, TARGET_OPSET)
    except Exception as exc:  # the converter raises bare RuntimeErrors from C++
        raise ConversionError(f"{source}: cannot upgrade opset {default_opset(model)} to {TARGET_OPSET} ({exc})") from exc
    # the converter drops the graph's metadata and quantization annotations: a lowered quantized
    # model's types and marks (hw/qonnx_in.py, hw/qdq_in.py) travel in them
    if not upgraded.graph.metadata_props:
        upgraded.graph.metadata_props.extend(model.graph.metadata_props)
    if not upgraded.graph.quantization_annotation:
        upgraded.graph.quantization_annotation.extend(model.graph.quantization_annotation)
    return upgraded


def single_consumer(model: ModelWrapper, tensor: str) -> bool:
    return len(model.find_consumers(tensor)) == 1 and tensor not in [o.name for o in model.graph.output]


def conv_bias(model: ModelWrapper, conv: onnx.NodeProto) -> np.ndarray:
    """The Conv's bias, adding a zero bias input when it has none."""
    out_channels = model.get_initializer(conv.input[1]).shape[0]
    if len(conv.input) > 2:
        return model.get_initializer(conv.input[2])
    name = conv.name + "_bias"
    model.set_initializer(name, np.zeros(out_channels, np.float32))
    conv.input.append(name)
    return model.get_initializer(name)


class ConvBias(Transformation):
    """Every Conv gets a bias input (zeros when the file has none): one Conv form downstream."""

    def apply(self, model: ModelWrapper):
        for conv in model.get_nodes_by_op_type("Conv"):
            if len(conv.input) < 3 or not conv.input[2]:
                del conv.input[2:]
                conv_bias(model, conv)
        return model, False


class FoldBatchNormIntoConv(Transformation):
    """Conv -> BatchNormalization becomes one Conv (inference-time BN is a per-channel affine map)."""

    def apply(self, model: ModelWrapper):
        for bn in model.get_nodes_by_op_type("BatchNormalization"):
            conv = model.find_producer(bn.input[0])
            if conv is None or conv.op_type != "Conv" or not single_consumer(model, conv.output[0]):
                continue
            params = [model.get_initializer(t) for t in bn.input[1:5]]
            if any(p is None for p in params):
                continue
            gamma, beta, mean, var = (p.astype(np.float64) for p in params)
            eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
            scale = gamma / np.sqrt(var + eps)
            weight = model.get_initializer(conv.input[1]).astype(np.float64)
            bias = conv_bias(model, conv).astype(np.float64)
            model.set_initializer(conv.input[1], (weight * scale[:, None, None, None]).astype(np.float32))
            model.set_initializer(conv.input[2], ((bias - mean) * scale + beta).astype(np.float32))
            conv.output[0] = bn.output[0]
            model.graph.node.remove(bn)
            return model, True
        return model, False


class FoldBiasAddIntoConv(Transformation):
    """Conv -> Add(per-channel constant) becomes a Conv with that bias (some exporters split it)."""

    def apply(self, model: ModelWrapper):
        for add in model.get_nodes_by_op_type("Add"):
            data, const = constant_operand(model, add)
            conv = model.find_producer(data) if data else None
            if conv is None or conv.op_type != "Conv" or const is None or not single_consumer(model, conv.output[0]):
                continue
            values = channel_values(model, data, const, model.get_initializer(conv.input[1]).shape[0])
            if values is None:
                continue  # no bias: ConstantAddToAffine names it
            bias = conv_bias(model, conv)
            model.set_initializer(conv.input[2], (bias + values).astype(np.float32))
            conv.output[0] = add.output[0]
            model.graph.node.remove(add)
            return model, True
        return model, False


def channel_values(model: ModelWrapper, data: str, const: np.ndarray, channels: int | None = None) -> np.ndarray | None:
    """``const`` as the one value per channel it adds to (or multiplies, ...) ``data`` under ONNX's
    broadcasting (the last axes align: a [C] constant on a map varies along its width); None when
    it is no per-channel constant (hw/layers/rule.py, per_channel: the capability check refuses it).
    ``channels`` counts them where ``data``'s shape is unknown (a single value only, then)."""
    from .layers.rule import per_channel

    shape = model.get_tensor_shape(data)
    values = per_channel(const, shape)
    count = shape[1] if shape and len(shape) >= 2 and shape[1] > 0 else channels
    if values is None or count is None:
        return None
    return np.broadcast_to(values.astype(np.float64), (count,)).copy()


def per_channel_constant(model: ModelWrapper, node: onnx.NodeProto, data: str, const: np.ndarray) -> np.ndarray:
    """:func:`channel_values`, or a ConversionError naming the node (a graph that skipped the check)."""
    values = channel_values(model, data, const)
    if values is None:
        raise ConversionError(f"node '{node.name}' ({node.op_type}): a constant of shape {list(const.shape)} on "
                              f"{model.get_tensor_shape(data)} is no per-channel constant (ONNX broadcasting aligns "
                              "the last axes); the capability check refuses it")
    return values


def constant_operand(model: ModelWrapper, node: onnx.NodeProto) -> tuple[str | None, np.ndarray | None]:
    """(data input, constant) of a two-input node with one initializer; (None, None) otherwise."""
    a, b = (model.get_initializer(t) for t in node.input[:2])
    if b is not None and a is None:
        return node.input[0], b
    if a is not None and b is None:
        return node.input[1], a
    return None, None


def attr(node: onnx.NodeProto, name: str, default=None):
    """An attribute's value (ints as a list, strings as str), or ``default``."""
    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def remove_attr(node: onnx.NodeProto, name: str) -> None:
    for a in list(node.attribute):
        if a.name == name:
            node.attribute.remove(a)


def set_attr(node: onnx.NodeProto, name: str, value) -> None:
    remove_attr(node, name)
    node.attribute.append(helper.make_attribute(name, value))


SPATIAL_OPS = ("Conv", "MaxPool", "AveragePool")


class RemovePassThrough(Transformation):
    """Identity and Dropout (inference) are wires."""

    def apply(self, model: ModelWrapper):
        for node in model.graph.node:
            if node.op_type in ("Identity", "Dropout"):
                del node.output[1:]
                bypass(model, node)
                return model, True
        return model, False


class ResolveAutoPad(Transformation):
    """``auto_pad`` SAME_UPPER / SAME_LOWER / VALID as explicit ``pads`` (ONNX's rule: the total
    padding makes the output ceil(input / stride); the odd pixel goes after, or before for LOWER)."""

    def apply(self, model: ModelWrapper):
        for node in model.graph.node:
            mode = attr(node, "auto_pad", "NOTSET")
            if node.op_type not in SPATIAL_OPS or mode == "NOTSET":
                continue
            kernel = kernel_of(model, node)
            strides = list(attr(node, "strides", [1] * len(kernel)))
            size = model.get_tensor_shape(node.input[0])[2:]
            pads = [0] * (2 * len(kernel))
            if mode != "VALID":
                for axis, (n, k, s) in enumerate(zip(size, kernel, strides)):
                    total = max(0, (-(-n // s) - 1) * s + k - n)
                    first = total // 2 if mode == "SAME_UPPER" else total - total // 2
                    pads[axis], pads[axis + len(kernel)] = first, total - first
            set_attr(node, "pads", pads)
            remove_attr(node, "auto_pad")
        return model, False


def kernel_of(model: ModelWrapper, node: onnx.NodeProto) -> list[int]:
    if node.op_type == "Conv":
        return list(model.get_initializer(node.input[1]).shape[2:])
    return list(attr(node, "kernel_shape"))


class ExplicitDefaultAttributes(Transformation):
    """Write out ONNX's default Conv / pooling attributes (strides, pads, dilations, group): qonnx's
    channels-last ops require them, and exporters often omit them. The defaults that mean nothing
    here go (``auto_pad`` NOTSET, MaxPool's ``storage_order`` 0: PyTorch's torch.export-based
    exporter spells them out, the TorchScript one does not), so both exports read the same."""

    def apply(self, model: ModelWrapper):
        for node in model.graph.node:
            if attr(node, "auto_pad") == "NOTSET":
                remove_attr(node, "auto_pad")
            if node.op_type == "MaxPool" and attr(node, "storage_order") == 0:
                remove_attr(node, "storage_order")
            if node.op_type == "LeakyRelu" and attr(node, "alpha") is None:
                node.attribute.append(helper.make_attribute("alpha", 0.01))
            if node.op_type not in ("Conv", "MaxPool", "AveragePool"):
                continue
            present = {a.name for a in node.attribute}
            kernel = kernel_of(model, node)
            defaults = {"kernel_shape": kernel, "strides": [1] * len(kernel), "pads": [0] * 2 * len(kernel)}
            if node.op_type == "Conv":
                defaults.update(dilations=[1] * len(kernel), group=1)
            if node.op_type == "AveragePool":
                defaults.update(count_include_pad=0)
            for name, value in defaults.items():
                if name not in present:
                    node.attribute.append(helper.make_attribute(name, value))
        return model, False


class ReduceToGlobalPool(Transformation):
    """ReduceMean / ReduceMax over the spatial axes (2, 3) of an NCHW map become GlobalAveragePool /
    GlobalMaxPool (then a pool over the whole map, below): PyTorch's torch.export-based exporter
    (the default since 2.9) writes AdaptiveAvgPool2d(1) and ``x.mean((2, 3))`` so, where the
    TorchScript one wrote the global pool. ``keepdims=0`` drops the two 1-sized axes: a Flatten
    follows, as the TorchScript export of ``flatten(pool(x), 1)`` has it. The capability check has
    refused every other reduction."""

    def apply(self, model: ModelWrapper):
        from .layers.gpool import is_spatial_reduce, reduce_axes

        for node in model.graph.node:
            if node.op_type not in ("ReduceMean", "ReduceMax"):
                continue
            shape = model.get_tensor_shape(node.input[0])
            if not is_spatial_reduce(reduce_axes(node, model.get_initializer), len(shape) if shape else None):
                continue
            op = {"ReduceMean": "GlobalAveragePool", "ReduceMax": "GlobalMaxPool"}[node.op_type]
            index = model.get_node_index(node)
            if attr(node, "keepdims", 1):
                model.graph.node.insert(index, helper.make_node(op, [node.input[0]], [node.output[0]], name=node.name))
            else:
                pooled = node.name + "_pooled"
                model.graph.node.insert(index, helper.make_node("Flatten", [pooled], [node.output[0]], axis=1,
                                                                name=node.name + "_flatten"))
                model.graph.node.insert(index, helper.make_node(op, [node.input[0]], [pooled], name=node.name))
            model.graph.node.remove(node)
            return model, True
        return model, False


class GlobalPoolToPool(Transformation):
    """GlobalAveragePool / GlobalMaxPool become a pool over the whole map: hls4ml 1.3.0's ONNX parser
    reads a global pool's channel count from the wrong axis of a channels-last tensor."""

    def apply(self, model: ModelWrapper):
        for node in model.graph.node:
            if node.op_type not in ("GlobalAveragePool", "GlobalMaxPool"):
                continue
            h, w = model.get_tensor_shape(node.input[0])[2:]
            extra = {"count_include_pad": 0} if node.op_type == "GlobalAveragePool" else {}
            pool = helper.make_node(node.op_type.replace("Global", ""), [node.input[0]], [node.output[0]],
                                    kernel_shape=[h, w], strides=[h, w], pads=[0, 0, 0, 0], name=node.name, **extra)
            model.graph.node.insert(model.get_node_index(node), pool)
            model.graph.node.remove(node)
            return model, True
        return model, False


class ReshapeToFlatten(Transformation):
    """Reshape(x, [1|-1|0, K]) of a 4-D tensor becomes Flatten(axis=1): the same values, but it keeps
    working for any batch size (profiling runs batches) and qonnx knows how to move it to NHWC."""

    def apply(self, model: ModelWrapper):
        for node in model.get_nodes_by_op_type("Reshape"):
            target = model.get_initializer(node.input[1])
            shape = model.get_tensor_shape(node.input[0])
            if target is None or shape is None or len(shape) != 4 or len(target) != 2 or target[0] not in (1, -1, 0):
                continue
            flatten = helper.make_node("Flatten", [node.input[0]], [node.output[0]], axis=1, name=node.name)
            model.graph.node.insert(model.get_node_index(node), flatten)
            model.graph.node.remove(node)
            return model, True
        return model, False


class RemoveNoOpReshape(Transformation):
    """A Flatten or Reshape of a [N, features] tensor to the same shape is a wire (``x.mean((2, 3))``
    is already flat, and a ``view(1, -1)`` or ``flatten(.., 1)`` after it changes nothing)."""

    def apply(self, model: ModelWrapper):
        for node in model.graph.node:
            if node.op_type not in ("Flatten", "Reshape"):
                continue
            shape, out = model.get_tensor_shape(node.input[0]), model.get_tensor_shape(node.output[0])
            if shape is None or len(shape) != 2 or shape != out:
                continue
            del node.input[1:]
            bypass(model, node)
            return model, True
        return model, False


class DropFinalActivation(Transformation):
    """A Softmax or Sigmoid producing the graph output is removed: the accelerator returns the
    scores before it (same argmax; hls4ml's table-based versions would only add error and area)
    and the runtime applies it; the metadata records which."""

    def apply(self, model: ModelWrapper):
        out = model.graph.output[0].name
        node = model.find_producer(out)
        if node is not None and node.op_type in ("Softmax", "Sigmoid"):
            producer = model.find_producer(node.input[0])
            move_annotation(model, node.input[0], out)  # a quantized model's output type goes along
            producer.output[0] = out
            model.graph.node.remove(node)
            model.set_metadata_prop(OUTPUT_ACTIVATION, node.op_type.lower())
            return model, True
        return model, False


class GemmToDense(Transformation):
    """Gemm becomes MatMul + Add with alpha, beta and transB folded into the constants and a zero
    bias when C is absent (qonnx's GemmToMatMul supports neither a missing C nor folding)."""

    def apply(self, model: ModelWrapper):
        for node in model.get_nodes_by_op_type("Gemm"):
            weight = model.get_initializer(node.input[1]).astype(np.float64)
            if attr(node, "transB", 0):
                weight = weight.T
            weight = weight * attr(node, "alpha", 1.0)
            bias = np.zeros(weight.shape[1])
            if len(node.input) > 2 and node.input[2]:
                bias = bias + model.get_initializer(node.input[2]).reshape(-1) * attr(node, "beta", 1.0)
            names = (node.name + "_weight", node.name + "_bias", node.name + "_product")
            model.set_initializer(names[0], weight.astype(np.float32))
            model.set_initializer(names[1], bias.astype(np.float32))
            for old, new in zip(node.input[1:3], names):  # a quantized model's types go with the values
                move_annotation(model, old, new)
            index = model.get_node_index(node)
            model.graph.node.insert(index, helper.make_node("Add", [names[2], names[1]], [node.output[0]],
                                                            name=node.name + "_add"))
            model.graph.node.insert(index, helper.make_node("MatMul", [node.input[0], names[0]], [names[2]],
                                                            name=node.name + "_matmul"))
            model.graph.node.remove(node)
            return model, True
        return model, False


class DenseBias(Transformation):
    """A MatMul with no bias Add after it gets a zero one: every dense layer is MatMul + Add."""

    def apply(self, model: ModelWrapper):
        for node in model.get_nodes_by_op_type("MatMul"):
            consumers = model.find_consumers(node.output[0])
            if len(consumers) == 1 and consumers[0].op_type == "Add" and constant_operand(model, consumers[0])[1] is not None:
                continue
            width = model.get_initializer(node.input[1]).shape[1]
            out, product = node.output[0], node.name + "_nobias"
            model.set_initializer(node.name + "_zero_bias", np.zeros(width, np.float32))
            node.output[0] = product
            model.graph.node.insert(model.get_node_index(node) + 1, helper.make_node(
                "Add", [product, node.name + "_zero_bias"], [out], name=node.name + "_bias"))
            return model, True
        return model, False


class BatchNormAsAffine(Transformation):
    """A BatchNormalization left after folding (one that follows no Conv) as a plain per-channel
    affine map: scale = gamma / sqrt(var + eps), shift = beta - mean * scale, with mean 0, variance
    1 and epsilon 0, so its scale and shift are the two constants every later step quantizes."""

    def apply(self, model: ModelWrapper):
        for bn in model.get_nodes_by_op_type("BatchNormalization"):
            gamma, beta, mean, var = (model.get_initializer(t).astype(np.float64) for t in bn.input[1:5])
            eps = attr(bn, "epsilon", 1e-5)
            if eps == 0 and not mean.any() and np.all(var == 1):
                continue
            scale = gamma / np.sqrt(var + eps)
            for name, value in zip(bn.input[1:5], (scale, beta - mean * scale, np.zeros_like(mean), np.ones_like(var))):
                model.set_initializer(name, value.astype(np.float32))
            set_attr(bn, "epsilon", 0.0)
        return model, False


class ConstantAddToAffine(Transformation):
    """A per-channel constant Add that is no bias of a Conv or dense layer becomes a
    BatchNormalization with scale one (one per-channel affine stage in hardware); the dense
    layer's bias keeps its ``data + constant`` order."""

    def apply(self, model: ModelWrapper):
        for node in model.get_nodes_by_op_type("Add"):
            data, const = constant_operand(model, node)
            if const is None:
                continue
            producer = model.find_producer(data)
            if producer is not None and producer.op_type == "MatMul":
                if node.input[0] != data:
                    node.input[:] = [data, node.input[0]]
                continue
            shift = per_channel_constant(model, node, data, const)
            replace_by_affine(model, node, data, np.ones(len(shift)), shift)
            return model, True
        return model, False


def replace_by_affine(model: ModelWrapper, node: onnx.NodeProto, data: str, scale: np.ndarray,
                      shift: np.ndarray) -> None:
    """``node`` becomes ``data * scale + shift`` per channel: a BatchNormalization in the affine
    form BatchNormAsAffine leaves (mean 0, variance 1, epsilon 0), named as the node was."""
    channels = len(scale)
    names = [f"{node.name}_{k}" for k in ("scale", "shift", "mean", "var")]
    for name, value in zip(names, (scale, shift, np.zeros(channels), np.ones(channels))):
        model.set_initializer(name, np.asarray(value, np.float32))
    index = model.get_node_index(node)
    model.graph.node.insert(index, helper.make_node("BatchNormalization", [data, *names], [node.output[0]],
                                                    epsilon=0.0, name=node.name))
    model.graph.node.remove(node)


HARDSWISH_ALPHA = 1.0 / 6.0  # x * HardSigmoid(x) with these is HardSwish (TorchScript's opset-13 form)
HARDSWISH_BETA = 0.5


def is_hardswish_gate(alpha: float, beta: float) -> bool:
    """HardSigmoid's (alpha, beta) as an exporter writes nn.Hardswish's: 1/6 and 1/2 (float32)."""
    return abs(alpha - HARDSWISH_ALPHA) <= 1e-7 and beta == HARDSWISH_BETA


class HardSigmoidMulToHardSwish(Transformation):
    """Mul(x, HardSigmoid(x)) with alpha 1/6 and beta 1/2 becomes HardSwish(x) (one ef_act
    stage): PyTorch's TorchScript exporter writes nn.Hardswish so below opset 14, where ONNX has no
    HardSwish; the graph then declares opset 14 (HardSwish-14; the rest of the canonical graph's
    ops mean the same there)."""

    def apply(self, model: ModelWrapper):
        for mul in model.get_nodes_by_op_type("Mul"):
            gate = next((model.find_producer(t) for t in mul.input if model.find_producer(t) is not None
                         and model.find_producer(t).op_type == "HardSigmoid"), None)
            if gate is None or not single_consumer(model, gate.output[0]):
                continue
            data = [t for t in mul.input if t != gate.output[0]]
            if data != [gate.input[0]] or not is_hardswish_gate(attr(gate, "alpha", 0.2), attr(gate, "beta", 0.5)):
                continue
            index = model.get_node_index(mul)
            model.graph.node.insert(index, helper.make_node("HardSwish", [gate.input[0]], [mul.output[0]],
                                                            name=mul.name))
            model.graph.node.remove(mul)
            model.graph.node.remove(gate)
            for entry in model.model.opset_import:
                if entry.domain in ("", "ai.onnx"):
                    entry.version = max(entry.version, 14)
            return model, True
        return model, False


class HardSigmoidToAffineClip(Transformation):
    """HardSigmoid(x) = clip(alpha x + beta, 0, 1) becomes a per-channel affine map (alpha, beta)
    and a Clip to [0, 1]: exactly what exists (folded into the Conv before it, else an ef_affine
    stage), the Clip the saturation of its cast."""

    def apply(self, model: ModelWrapper):
        for node in model.get_nodes_by_op_type("HardSigmoid"):
            channels = model.get_tensor_shape(node.input[0])[1]
            alpha, beta = attr(node, "alpha", 0.2), attr(node, "beta", 0.5)
            out = node.output[0]
            affine = node.name + "_affine"
            clip = helper.make_node("Clip", [affine, node.name + "_min", node.name + "_max"], [out],
                                    name=node.name + "_clip")
            model.set_initializer(node.name + "_min", np.asarray(0.0, np.float32))
            model.set_initializer(node.name + "_max", np.asarray(1.0, np.float32))
            index = model.get_node_index(node)
            model.graph.node.insert(index + 1, clip)
            node.output[0] = affine
            replace_by_affine(model, node, node.input[0], np.full(channels, alpha), np.full(channels, beta))
            return model, True
        return model, False


class InputArithmeticToAffine(Transformation):
    """Sub / Mul / Div by a per-channel constant (torchvision's ``(x - mean) / std`` inside
    ``forward``, Keras' ``Rescaling``) becomes a per-channel affine BatchNormalization; the
    capability check has let them through only at the input, where MergeAffines then makes them
    and the card's normalization one stage."""

    def apply(self, model: ModelWrapper):
        for node in model.graph.node:
            if node.op_type not in ("Sub", "Mul", "Div"):
                continue
            data, const = constant_operand(model, node)
            if const is None:
                continue
            value = per_channel_constant(model, node, data, const)
            replace_by_affine(model, node, data, *arithmetic_as_affine(node.op_type, value, node.input[0] != data))
            return model, True
        return model, False


def arithmetic_as_affine(op: str, value: np.ndarray, constant_first: bool) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) of x - c, c - x, x * c or x / c (c - x: the check refused c / x)."""
    if op == "Sub":
        return (np.full(len(value), -1.0), value) if constant_first else (np.ones(len(value)), -value)
    if op == "Mul":
        return value, np.zeros(len(value))
    return 1.0 / value, np.zeros(len(value))


def is_affine(model: ModelWrapper, node: onnx.NodeProto | None) -> bool:
    """A BatchNormalization in affine form: y = x * scale + shift (mean 0, variance 1, epsilon 0)."""
    if node is None or node.op_type != "BatchNormalization" or attr(node, "epsilon", 1e-5) != 0:
        return False
    mean, var = (model.get_initializer(t) for t in node.input[3:5])
    return mean is not None and var is not None and not mean.any() and bool(np.all(var == 1))


class MergeAffines(Transformation):
    """Two per-channel affine maps in a row are one (x * s1 + b1) * s2 + b2 = x * s1 s2 + b1 s2 + b2:
    the card's normalization in front and the one the model does itself become a single ef_affine
    stage, with one rounding, under the first one's name."""

    def apply(self, model: ModelWrapper):
        for second in model.get_nodes_by_op_type("BatchNormalization"):
            first = model.find_producer(second.input[0])
            if not (is_affine(model, first) and is_affine(model, second) and single_consumer(model, first.output[0])):
                continue
            s1, b1, s2, b2 = (model.get_initializer(t).astype(np.float64)
                              for t in (first.input[1], first.input[2], second.input[1], second.input[2]))
            model.set_initializer(first.input[1], (s1 * s2).astype(np.float32))
            model.set_initializer(first.input[2], (b1 * s2 + b2).astype(np.float32))
            first.output[0] = second.output[0]
            model.graph.node.remove(second)
            return model, True
        return model, False


class FoldPad(Transformation):
    """A Pad (``nn.ZeroPad2d``) before a Conv, MaxPool or AveragePool is added to that layer's own
    pads (an average pool then counts the padding, as the zeros were counted). The capability check
    has refused every Pad this would not compute exactly (hw/capabilities.py, check_pad)."""

    def apply(self, model: ModelWrapper):
        for pad in model.get_nodes_by_op_type("Pad"):
            taker = model.find_consumer(pad.output[0])
            amounts = pad_amounts(model, pad)
            own = list(attr(taker, "pads", [0, 0, 0, 0]))
            set_attr(taker, "pads", [a + b for a, b in zip(own, amounts[2:4] + amounts[6:8])])
            if taker.op_type == "AveragePool":
                set_attr(taker, "count_include_pad", 1)
            bypass(model, pad)
            return model, True
        return model, False


def pad_amounts(model: ModelWrapper, pad: onnx.NodeProto) -> list[int]:
    """The Pad's [begin N, C, H, W, end N, C, H, W] (constants folded by qonnx's cleanup)."""
    from .capabilities import pad_amounts as amounts
    from .layers.rule import GraphView

    return amounts(pad, GraphView(model.model))


def without_input_transpose(model: onnx.ModelProto) -> onnx.ModelProto:
    """A graph that takes NHWC and transposes it to NCHW (Keras / tf2onnx style) takes NCHW: the
    accelerator streams pixels channels-last whichever layout the graph names, so the transpose
    is only the stream order (``channels_last`` makes the input NHWC again for hls4ml)."""
    transpose = input_transpose(model)
    if transpose is None:
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    transpose = next(n for n in copy.graph.node if list(n.output) == list(transpose.output))
    value = next(i for i in copy.graph.input if i.name == transpose.input[0])
    dims = [onnx.TensorShapeProto.Dimension() for _ in range(4)]
    for new, old in zip(dims, NHWC_TO_NCHW):
        new.CopyFrom(value.type.tensor_type.shape.dim[old])
    del value.type.tensor_type.shape.dim[:]
    value.type.tensor_type.shape.dim.extend(dims)
    for node in copy.graph.node:
        node.input[:] = [value.name if t == transpose.output[0] else t for t in node.input]
    copy.graph.node.remove(transpose)
    return copy


CLIP_LIMIT = 3.0e38  # a missing bound: beyond any value a fixed-point type holds


class ClipBoundsAsInputs(Transformation):
    """Clip with both bounds as initializer inputs (the opset-11+ form; a missing one unbounded)."""

    def apply(self, model: ModelWrapper):
        for node in model.get_nodes_by_op_type("Clip"):
            inputs = list(node.input) + [""] * (3 - len(node.input))
            if all(t and model.get_initializer(t) is not None and model.get_initializer(t).shape == () for t in inputs[1:]):
                continue
            for index, default in ((1, -CLIP_LIMIT), (2, CLIP_LIMIT)):
                value = model.get_initializer(inputs[index]) if inputs[index] else None
                name = f"{node.name}_{'min' if index == 1 else 'max'}"
                model.set_initializer(name, np.asarray(default if value is None else value.reshape(-1)[0], np.float32))
                inputs[index] = name
            node.input[:] = inputs
            return model, True
        return model, False


class PrependNormalization(Transformation):
    """Put the card's ``x = (pixel*scale - mean) / std`` in front of the graph as one per-channel
    BatchNormalization, so the accelerator takes raw 8-bit pixels. hls4ml keeps it as its own
    layer before the first zero padding, which keeps the padded border exactly as in training;
    folding it into the first Conv would pad with raw zeros instead."""

    def __init__(self, scale: float, mean: list[float], std: list[float]):
        super().__init__()
        self.gain = np.asarray([scale / s for s in std], np.float32)
        self.offset = np.asarray([-m / s for m, s in zip(mean, std)], np.float32)

    def apply(self, model: ModelWrapper):
        inp = model.graph.input[0].name
        normalized = inp + "_normalized"
        for node in model.find_consumers(inp):
            node.input[:] = [normalized if t == inp else t for t in node.input]
        names = {k: f"input_norm_{k}" for k in ("scale", "bias", "mean", "var")}
        values = {"scale": self.gain, "bias": self.offset,
                  "mean": np.zeros_like(self.gain), "var": np.ones_like(self.gain)}
        for key, name in names.items():
            model.set_initializer(name, values[key])
        bn = helper.make_node("BatchNormalization", [inp, *names.values()], [normalized], epsilon=0.0,
                              name="input_norm")
        model.graph.node.insert(0, bn)
        return model, False


# The ops a canonical graph holds, whose opset-13 definitions compute what their opset 14-22 ones do
# for float tensors (the later versions add types, bfloat16 above all, and the attributes below)
LOWERABLE_OPS = {"Conv", "Relu", "LeakyRelu", "Clip", "MaxPool", "AveragePool", "BatchNormalization", "Flatten",
                 "MatMul", "Add", "Softmax", "Sigmoid", "Reshape", "GlobalAveragePool", "GlobalMaxPool", "HardSwish",
                 "Concat", "Resize"}  # Resize: in CanonicalResize's form (asymmetric, floor, scales), as in 19
NEWER_ATTRIBUTES = {  # attribute added after opset 13 -> its values that mean what opset 13 computes
    "dilations": lambda node, value: all(v == 1 for v in value),  # AveragePool-19
    "training_mode": lambda node, value: value == 0,  # BatchNormalization-14
    "allowzero": lambda node, value: value == 0,  # Reshape-14
}


class LowerToTargetOpset(Transformation):
    """A canonical graph from an opset-18+ file (PyTorch's torch.export-based exporter writes 18-20)
    declares opset 13 like every other: its ops mean the same there (LOWERABLE_OPS) once the
    attributes opset 13 lacks are dropped at their neutral values (ONNX's version converter has no
    downgrade adapters; a graph with any other op would keep its opset). The exporter's per-node
    provenance (namespaces, stack traces) goes too."""

    def __init__(self, source: str):
        super().__init__()
        self.source = source

    def apply(self, model: ModelWrapper):
        opset = default_opset(model.model)
        for node in model.graph.node:
            del node.metadata_props[:]
        # HardSwish has no opset-13 form: a graph holding one lowers to 14, where it came in
        target = 14 if model.get_nodes_by_op_type("HardSwish") else TARGET_OPSET
        if opset <= target or any(n.op_type not in LOWERABLE_OPS or n.domain not in ("", "ai.onnx")
                                        for n in model.graph.node):
            return model, False
        for node in model.graph.node:
            known = onnx.defs.get_schema(node.op_type, target).attributes
            for a in list(node.attribute):
                if a.name in known:
                    continue
                neutral = NEWER_ATTRIBUTES.get(a.name)
                if neutral is None or not neutral(node, helper.get_attribute_value(a)):
                    raise ConversionError(f"{self.source}: node '{node.name}' ({node.op_type}), {a.name}: "
                                          f"opset {opset}'s attribute has no opset-{target} form")
                node.attribute.remove(a)
        for entry in model.model.opset_import:
            if entry.domain in ("", "ai.onnx"):
                entry.version = target
        model.model.ir_version = helper.find_min_ir_version_for(list(model.model.opset_import))
        return model, False


def without_float_annotations(model: ModelWrapper) -> ModelWrapper:
    """qonnx's cleanup marks each copy it makes of a shared constant FLOAT32 (its default datatype):
    the TorchScript exporter shares equal biases, the torch.export-based one the bounds of every
    ReLU6. In a float graph the mark says nothing, and ONNX's Extractor, with which the precision
    search cuts the graph, refuses a graph that has any."""
    annotations = model.graph.quantization_annotation
    keep = [a for a in annotations
            if any((p.key, p.value) != ("finn_datatype", "FLOAT32") for p in a.quant_parameter_tensor_names)]
    del annotations[:]
    annotations.extend(keep)
    return model


def normalization_is_identity(scale: float, mean: list[float], std: list[float]) -> bool:
    return scale == 1.0 and all(m == 0 for m in mean) and all(s == 1 for s in std)


def canonical_graph(model: onnx.ModelProto, source: str, scale: float = 1.0, mean: list[float] | None = None,
                    std: list[float] | None = None) -> ModelWrapper:
    """The user's model as raw-pixel-in, float, channels-first ONNX in edgefpga's canonical form."""
    channels = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    mean = mean if mean is not None else [0.0] * channels
    std = std if std is not None else [1.0] * channels
    model = with_batch_one(to_target_opset(without_input_transpose(without_initializer_inputs(model)), source))
    wrapper = cleanup_model(ModelWrapper(model))
    from .layers.resize import CanonicalResize

    for step in (RemovePassThrough(), CanonicalResize(), ResolveAutoPad(), ExplicitDefaultAttributes(), FoldPad(), ConvBias(),
                 HardSigmoidMulToHardSwish(), HardSigmoidToAffineClip(),
                 FoldBiasAddIntoConv(), FoldBatchNormIntoConv(), ReduceToGlobalPool(), GlobalPoolToPool(),
                 ReshapeToFlatten(), RemoveNoOpReshape(), DropFinalActivation(), GemmToDense(),
                 DenseBias(), ConstantAddToAffine(), InputArithmeticToAffine(), BatchNormAsAffine(),
                 ClipBoundsAsInputs()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            wrapper = wrapper.transform(step)
    if not normalization_is_identity(scale, mean, std):
        wrapper = wrapper.transform(PrependNormalization(scale, mean, std))
    wrapper = wrapper.transform(MergeAffines())
    return without_float_annotations(cleanup_model(wrapper.transform(LowerToTargetOpset(source))))


def node_of_output(model: ModelWrapper) -> dict[str, str]:
    """Tensor name -> name of the node producing it."""
    return {out: node.name for node in model.graph.node for out in node.output}


def channels_last(model: ModelWrapper) -> ModelWrapper:
    """The NHWC graph hls4ml's ONNX frontend converts with io_stream; node names are kept and the
    input itself is NHWC, so the accelerator's stream is pixels with their channels interleaved."""
    from .layers.resize import to_channels_last

    cl = cleanup_model(model.transform(ConvertToChannelsLastAndClean(make_input_channels_last=True)))
    while any(to_channels_last(cl, node) for node in cl.get_nodes_by_op_type("Resize")):  # qonnx has no Resize
        cl = cleanup_model(cl.transform(ConvertToChannelsLastAndClean(make_input_channels_last=True)))
    for pool in cl.get_nodes_by_op_type("AveragePool"):
        make_pool_channels_last(cl, pool)
    stream_map_output(cl)
    leftover = [n.name for n in cl.graph.node if n.op_type == "Transpose"]
    if leftover:
        raise ConversionError(f"layout conversion left Transpose node(s) {', '.join(leftover)}: hls4ml cannot stream "
                              "them; please report this model")
    return cl


def stream_map_output(model: ModelWrapper) -> None:
    """A map output (a detector's last Conv: no Flatten, no dense layer) leaves qonnx's layout
    conversion as Transpose(0,3,1,2) back to NCHW. The accelerator streams the map as it is made,
    cell by cell with each cell's channels together (NHWC, ``precision.stream_order``), so the
    transpose goes and the graph output is the channels-last map."""
    out = model.graph.output[0]
    last = model.find_producer(out.name)
    if transpose_perm(last) != [0, 3, 1, 2]:
        return
    n, c, h, w = model.get_tensor_shape(out.name)
    bypass(model, last)
    model.set_tensor_shape(out.name, [n, h, w, c])


def transpose_perm(node: onnx.NodeProto | None) -> list[int] | None:
    if node is None or node.op_type != "Transpose":
        return None
    return list(next(a.ints for a in node.attribute if a.name == "perm"))


def bypass(model: ModelWrapper, node: onnx.NodeProto) -> None:
    """Remove a single-input node, wiring its consumers to its input."""
    for consumer in model.find_consumers(node.output[0]):
        consumer.input[:] = [node.input[0] if t == node.output[0] else t for t in consumer.input]
    if node.output[0] in [o.name for o in model.graph.output]:
        model.find_producer(node.input[0]).output[0] = node.output[0]
    model.graph.node.remove(node)


def make_pool_channels_last(model: ModelWrapper, pool: onnx.NodeProto) -> None:
    """qonnx has no channels-last AveragePool, so it wraps one in Transpose(0,3,1,2) ..
    Transpose(0,2,3,1); hls4ml then streams nonsense. Drop both transposes and mark the pool
    channels-last, which hls4ml's parser reads (docs/dev/hls4ml-onnx-check.md). A pool that
    reduces to 1x1 has no transpose after it: a 1x1 map reads the same in either layout. A pool
    that a Flatten + dense layer reads has none either: its map is flattened channels-last now,
    so the dense layer's weight rows are put in that order."""
    before = model.find_producer(pool.input[0])
    if transpose_perm(before) != [0, 3, 1, 2]:
        return
    after = model.find_consumers(pool.output[0])
    if len(after) == 1 and transpose_perm(after[0]) == [0, 2, 3, 1]:
        bypass(model, after[0])
    elif len(after) == 1 and after[0].op_type == "Flatten" and model.get_tensor_shape(pool.output[0])[2:] != [1, 1]:
        reorder_dense_rows(model, after[0], model.get_tensor_shape(pool.output[0])[1:])
    elif model.get_tensor_shape(pool.output[0])[2:] != [1, 1]:
        return
    bypass(model, before)
    pool.domain = CHANNELS_LAST_DOMAIN
    n, c, h, w = model.get_tensor_shape(pool.output[0])
    model.set_tensor_shape(pool.output[0], [n, h, w, c])


def reorder_dense_rows(model: ModelWrapper, flatten: onnx.NodeProto, chw: list[int]) -> None:
    """The dense layer after ``flatten`` reads a (C, H, W) map flattened in NHWC order: its weight
    rows (NCHW flatten order in the graph) are permuted to match."""
    matmul = model.find_consumer(flatten.output[0])
    weight = model.get_initializer(matmul.input[1])
    c, h, w = chw
    model.set_initializer(matmul.input[1], weight.reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(c * h * w, -1))


def is_residual(model: ModelWrapper, node: onnx.NodeProto) -> bool:
    """An Add of two computed tensors (a residual join), not a bias Add."""
    return node.op_type == "Add" and all(model.get_initializer(t) is None for t in node.input[:2])


def initializer_array(model: ModelWrapper, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == name))


ORT_MAX_IR = 13  # ONNX Runtime 1.31 reads IR versions up to 13; onnx 1.23 writes 14 by default


def onnx_session(proto: onnx.ModelProto, threads: int = 2):
    """An ONNX Runtime CPU session for an in-memory graph (a file saved with IR 14 by a newer onnx
    package runs as IR 13: the operators the flow accepts are the same in both)."""
    import onnxruntime as ort

    if proto.ir_version > ORT_MAX_IR:
        copy = onnx.ModelProto()
        copy.CopyFrom(proto)
        copy.ir_version = ORT_MAX_IR
        proto = copy
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    # no busy-waiting between operators: conversion runs hundreds of short sessions, and spinning
    # threads burn the CPU the rest of the machine (a second build, the test suite's other worker)
    # needs: ELPV's precision search took 43 s of CPU with spinning, 29 s without
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
