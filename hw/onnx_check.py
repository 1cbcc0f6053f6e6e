"""First step of the conversion: read a user's ONNX file and refuse, up front, what the hardware
flow cannot stream, naming the node and the operator.

hls4ml fails late and obscurely on graphs it does not support (deep inside its converter, or
as a C++ compile error). Checking the graph first gives the user one clear message before any
build folder is written.
"""

from __future__ import annotations

from pathlib import Path

import onnx

MIN_OPSET = 8

SUPPORTED_OPS = frozenset({
    "Conv", "BatchNormalization", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool",
    "Flatten", "Reshape", "Gemm", "MatMul", "Add", "Softmax", "Identity", "Dropout", "Constant",
})


class ConversionError(ValueError):
    """An ONNX model the hardware flow refuses; the message names the file, node and reason."""


def read_onnx(path: str | Path) -> onnx.ModelProto:
    """Load and structurally check an ONNX file."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # protobuf and onnx raise several unrelated exception types
        raise ConversionError(f"{path}: not a valid ONNX model ({type(exc).__name__}: {exc})") from exc
    return model


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The real inputs: before IR 4, exporters also listed every initializer as a graph input."""
    initializers = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def static_input_shape(value: onnx.ValueInfoProto, source: str) -> list[int]:
    """[N, C, H, W] with a fixed C, H, W; a symbolic or missing batch size counts as 1."""
    dims = value.type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ConversionError(f"{source}: input '{value.name}' has rank {len(dims)}; expected an image "
                              "tensor [N, C, H, W]")
    shape = [d.dim_value if d.HasField("dim_value") else 0 for d in dims]
    dynamic = [axis for axis, size in zip("CHW", shape[1:]) if size <= 0]
    if dynamic:
        raise ConversionError(f"{source}: input '{value.name}' has a dynamic shape ({', '.join(dynamic)} not "
                              "fixed); an FPGA stream needs fixed sizes: export with a fixed input shape")
    return [1] + shape[1:]


def unsupported_nodes(model: onnx.ModelProto) -> list[str]:
    """'node (op)' for every node outside SUPPORTED_OPS or the standard domain."""
    return [f"'{n.name or '<unnamed>'}' ({n.domain + '.' if n.domain else ''}{n.op_type})"
            for n in model.graph.node
            if n.domain not in ("", "ai.onnx") or n.op_type not in SUPPORTED_OPS]


def check_onnx(path: str | Path) -> tuple[onnx.ModelProto, list[int]]:
    """The model and its input shape [1, C, H, W], or a ConversionError saying what is wrong."""
    model = read_onnx(path)
    source = str(path)
    opset = default_opset(model)
    if opset < MIN_OPSET:
        raise ConversionError(f"{source}: opset {opset} is too old; opset {MIN_OPSET} or newer is supported")
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        names = ", ".join(f"'{i.name}'" for i in inputs) or "none"
        raise ConversionError(f"{source}: the graph has {len(inputs)} inputs ({names}); exactly one image input "
                              "is supported")
    if len(model.graph.output) != 1:
        raise ConversionError(f"{source}: the graph has {len(model.graph.output)} outputs; exactly one is supported")
    shape = static_input_shape(inputs[0], source)
    bad = unsupported_nodes(model)
    if bad:
        raise ConversionError(f"{source}: unsupported operator(s) at node(s) {', '.join(bad)}; supported: "
                              f"{', '.join(sorted(SUPPORTED_OPS))} (see docs/onnx-support.md)")
    return model, shape
