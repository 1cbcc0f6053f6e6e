"""ONNX graph rewrites that bring a user's CNN into the one form the rest of the flow handles.

After :func:`canonical_graph` every model, whichever tool exported it, is: opset 13, batch 1,
raw 8-bit pixels in (the card's normalization is a BatchNormalization node in front), Conv with
its bias and any following BatchNorm folded in, ReLU, pooling, Flatten, MatMul + Add for dense
layers, logits out (a final Softmax is dropped: argmax does not change). Node names are qonnx's
readable ones (``Conv_0``, ``Relu_0``, ...): the same names key the profile, the precision plan
and hls4ml's per-layer configuration.

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
from qonnx.transformation.gemm_to_matmul import GemmToMatMul  # noqa: E402
from qonnx.util.cleanup import cleanup_model  # noqa: E402

from .onnx_check import ConversionError, default_opset  # noqa: E402

TARGET_OPSET = 13
CHANNELS_LAST_DOMAIN = "qonnx.custom_op.channels_last"
DROPPED_SOFTMAX = "edgefpga.dropped_final_softmax"  # metadata: the source's outputs were softmax(logits)


def to_target_opset(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    """Older exports (opset 8-12) upgraded with ONNX's own version converter."""
    if default_opset(model) >= TARGET_OPSET:
        return model
    try:
        return onnx.version_converter.convert_version(model, TARGET_OPSET)
    except Exception as exc:  # the converter raises bare RuntimeErrors from C++
        raise ConversionError(f"{source}: cannot upgrade opset {default_opset(model)} to {TARGET_OPSET} ({exc})") from exc


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
            conv = model.find_producer(add.input[0])
            const = model.get_initializer(add.input[1])
            if conv is None or conv.op_type != "Conv" or const is None or not single_consumer(model, conv.output[0]):
                continue
            channels = model.get_initializer(conv.input[1]).shape[0]
            if const.size not in (1, channels) or (const.ndim >= 3 and const.shape[-2:] != (1, 1)):
                continue
            bias = conv_bias(model, conv)
            model.set_initializer(conv.input[2], (bias + const.reshape(-1)).astype(np.float32))
            conv.output[0] = add.output[0]
            model.graph.node.remove(add)
            return model, True
        return model, False


class ExplicitDefaultAttributes(Transformation):
    """Write out ONNX's default Conv / pooling attributes (strides, pads, dilations, group): qonnx's
    channels-last ops require them, and exporters often omit them."""

    def apply(self, model: ModelWrapper):
        for node in model.graph.node:
            if node.op_type not in ("Conv", "MaxPool", "AveragePool"):
                continue
            present = {a.name for a in node.attribute}
            if node.op_type == "Conv":
                kernel = list(model.get_initializer(node.input[1]).shape[2:])
            else:
                kernel = list(next(a.ints for a in node.attribute if a.name == "kernel_shape"))
            defaults = {"kernel_shape": kernel, "strides": [1] * len(kernel), "pads": [0] * 2 * len(kernel)}
            if node.op_type == "Conv":
                defaults.update(dilations=[1] * len(kernel), group=1)
            for name, value in defaults.items():
                if name not in present:
                    node.attribute.append(helper.make_attribute(name, value))
        return model, False


class GlobalPoolToAveragePool(Transformation):
    """GlobalAveragePool becomes an AveragePool over the whole map: hls4ml 1.3.0's ONNX parser reads
    a global pool's channel count from the wrong axis of a channels-last tensor."""

    def apply(self, model: ModelWrapper):
        for node in model.get_nodes_by_op_type("GlobalAveragePool"):
            h, w = model.get_tensor_shape(node.input[0])[2:]
            pool = helper.make_node("AveragePool", [node.input[0]], [node.output[0]], kernel_shape=[h, w],
                                    strides=[h, w], pads=[0, 0, 0, 0], name=node.name)
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


class DropFinalSoftmax(Transformation):
    """A Softmax producing the graph output is removed: the accelerator returns logits, whose argmax
    is the same, and hls4ml's table-based softmax would only add error and area."""

    def apply(self, model: ModelWrapper):
        out = model.graph.output[0].name
        node = model.find_producer(out)
        if node is not None and node.op_type == "Softmax":
            producer = model.find_producer(node.input[0])
            producer.output[0] = out
            model.graph.node.remove(node)
            model.set_metadata_prop(DROPPED_SOFTMAX, "1")
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


def normalization_is_identity(scale: float, mean: list[float], std: list[float]) -> bool:
    return scale == 1.0 and all(m == 0 for m in mean) and all(s == 1 for s in std)


def canonical_graph(model: onnx.ModelProto, source: str, scale: float = 1.0, mean: list[float] | None = None,
                    std: list[float] | None = None) -> ModelWrapper:
    """The user's model as raw-pixel-in, float, channels-first ONNX in edgefpga's canonical form."""
    channels = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    mean = mean if mean is not None else [0.0] * channels
    std = std if std is not None else [1.0] * channels
    wrapper = ModelWrapper(to_target_opset(model, source))
    wrapper = cleanup_model(wrapper, override_inpsize=1)
    for step in (ExplicitDefaultAttributes(), FoldBiasAddIntoConv(), FoldBatchNormIntoConv(), GlobalPoolToAveragePool(),
                 ReshapeToFlatten(), DropFinalSoftmax(), GemmToMatMul()):
        with warnings.catch_warnings():  # GemmToMatMul warns for every opset but 9; its rewrite is opset-neutral
            warnings.simplefilter("ignore", UserWarning)
            wrapper = wrapper.transform(step)
    if not normalization_is_identity(scale, mean, std):
        wrapper = wrapper.transform(PrependNormalization(scale, mean, std))
    return cleanup_model(wrapper)


def node_of_output(model: ModelWrapper) -> dict[str, str]:
    """Tensor name -> name of the node producing it."""
    return {out: node.name for node in model.graph.node for out in node.output}


def channels_last(model: ModelWrapper) -> ModelWrapper:
    """The NHWC graph hls4ml's ONNX frontend converts with io_stream; node names are kept and the
    input itself is NHWC, so the accelerator's stream is pixels with their channels interleaved."""
    cl = cleanup_model(model.transform(ConvertToChannelsLastAndClean(make_input_channels_last=True)))
    for pool in cl.get_nodes_by_op_type("AveragePool"):
        make_pool_channels_last(cl, pool)
    leftover = [n.name for n in cl.graph.node if n.op_type == "Transpose"]
    if leftover:
        raise ConversionError(f"layout conversion left Transpose node(s) {', '.join(leftover)}: hls4ml cannot stream "
                              "them; please report this model")
    return cl


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
    reduces to 1x1 has no transpose after it: a 1x1 map reads the same in either layout."""
    before = model.find_producer(pool.input[0])
    if transpose_perm(before) != [0, 3, 1, 2]:
        return
    after = model.find_consumers(pool.output[0])
    if len(after) == 1 and transpose_perm(after[0]) == [0, 2, 3, 1]:
        bypass(model, after[0])
    elif model.get_tensor_shape(pool.output[0])[2:] != [1, 1]:
        return
    bypass(model, before)
    pool.domain = CHANNELS_LAST_DOMAIN
    n, c, h, w = model.get_tensor_shape(pool.output[0])
    model.set_tensor_shape(pool.output[0], [n, h, w, c])


def initializer_array(model: ModelWrapper, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == name))


def onnx_session(proto: onnx.ModelProto, threads: int = 2):
    """An ONNX Runtime CPU session for an in-memory graph."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
