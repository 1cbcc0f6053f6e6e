"""First step of the conversion: read a user's ONNX file and refuse, up front, what the hardware
flow cannot build, naming the node, the operator and the attribute (the rules per operator are
the capability table, hw/capabilities.py).

hls4ml fails late and obscurely on graphs it does not support (deep inside its converter, or
as a C++ compile error). Checking the graph first gives the user one clear message before any
build folder is written.
"""

from __future__ import annotations

from pathlib import Path

import onnx

MIN_OPSET = 8


class ConversionError(ValueError):
    """An ONNX model the hardware flow refuses; the message names the file, node and reason."""


def read_onnx(path: str | Path) -> onnx.ModelProto:
    """Load and structurally check an ONNX file."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path))
        inputs = {i.name for i in model.graph.input}
        if model.ir_version < 4 and any(i.name not in inputs for i in model.graph.initializer):
            # ONNX Runtime's quantization tools (quant_pre_process, quantize_static) keep an IR-3
            # file's version while writing constants that are not graph inputs, as IR 4 allows
            model.ir_version = 4
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


NHWC_TO_NCHW = [0, 3, 1, 2]


def input_transpose(model: onnx.ModelProto) -> onnx.NodeProto | None:
    """The Transpose NHWC -> NCHW that is the one reader of a Keras / tf2onnx-style graph's input
    (the input is then [N, H, W, C]), or None."""
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        return None
    readers = [n for n in model.graph.node if inputs[0].name in n.input]
    if len(readers) != 1 or readers[0].op_type != "Transpose":
        return None
    perm = next((list(a.ints) for a in readers[0].attribute if a.name == "perm"), None)
    return readers[0] if perm == NHWC_TO_NCHW else None


def static_input_shape(value: onnx.ValueInfoProto, source: str, nhwc: bool = False) -> list[int]:
    """[N, C, H, W] with a fixed C, H, W (read from [N, H, W, C] when ``nhwc``); a symbolic or
    missing batch size counts as 1."""
    dims = list(value.type.tensor_type.shape.dim)
    if len(dims) == 4 and nhwc:
        dims = [dims[i] for i in NHWC_TO_NCHW]
    if len(dims) != 4:
        raise ConversionError(f"{source}: input '{value.name}' has rank {len(dims)}; expected an image "
                              "tensor [N, C, H, W]")
    shape = [d.dim_value if d.HasField("dim_value") else 0 for d in dims]
    dynamic = [axis for axis, size in zip("CHW", shape[1:]) if size <= 0]
    if dynamic:
        raise ConversionError(f"{source}: input '{value.name}' has a dynamic shape ({', '.join(dynamic)} not "
                              "fixed); an FPGA stream needs fixed sizes: export with a fixed input shape")
    return [1] + shape[1:]


def refuse_node(source: str, node: onnx.NodeProto, attribute: str, reason: str) -> ConversionError:
    """The one-line refusal: file, node, op, attribute and why."""
    return ConversionError(f"{source}: node '{node.name or '<unnamed>'}' ({node.op_type}), {attribute}: {reason}")


def check_nodes(model: onnx.ModelProto, source: str) -> None:
    """Every node against the capability table (hw/capabilities.py), then the graph's shape."""
    from .capabilities import GraphView, check_node

    view = GraphView(model)
    for node in model.graph.node:
        refusal = check_node(node, view)
        if refusal is not None:
            raise refuse_node(source, node, refusal.attribute, refusal.reason)
    check_topology(model, view, source)


def hardswish_fork(view, consumers: list[onnx.NodeProto]) -> bool:
    """x feeding HardSigmoid(x) and the Mul of x by it: one HardSwish (hw/graph.py), no fork."""
    from .layers.act import hardswish_gate

    muls = [c for c in consumers if c.op_type == "Mul"]
    return len(consumers) == 2 and len(muls) == 1 and hardswish_gate(muls[0], view) in consumers


def check_topology(model: onnx.ModelProto, view, source: str) -> None:
    """A tensor feeds at most two nodes, and two branches that leave a tensor meet again at an Add
    (a residual block) or a Concat (a fire module) before either forks again: the joins the RTL
    streams with one FIFO per fork."""
    passthrough = ("Identity", "Dropout")
    for tensor, consumers in view.consumers.items():
        # a Shape of a map of fixed size is a constant (hw/layers/rule.py static_shape): no branch
        consumers = [c for c in consumers if c.op_type not in ("Constant",)
                     and not all(t in view.constants for t in c.output if t)]
        if tensor in view.constants or len(consumers) <= 1 or hardswish_fork(view, consumers):
            continue
        node = view.producer.get(tensor)
        where = f"node '{node.name}' ({node.op_type})" if node is not None else f"input '{tensor}'"
        if len(consumers) > 2:
            raise ConversionError(f"{source}: {where}, output: feeds {len(consumers)} nodes; a stream forks into at "
                                  "most two branches (a residual block)")
        joins = [branch_join(view, c, passthrough) for c in consumers]
        if joins[0] is None or joins[1] is None or joins[0].output[0] != joins[1].output[0]:
            raise ConversionError(f"{source}: {where}, output: its two branches ("
                                  f"{', '.join(repr(c.name) for c in consumers)}) do not meet again at one Add or "
                                  "Concat before forking again; only residual blocks and channel joins are built")


JOIN_OPS = ("Add", "Concat")  # where two branches of a fork meet (hw/rtlgen.py JOIN_MODULES)


def branch_join(view, node: onnx.NodeProto, passthrough: tuple[str, ...]) -> onnx.NodeProto | None:
    """Follow a branch from ``node`` through single-consumer nodes to the Add or Concat of computed
    tensors that joins it."""
    seen = 0
    while node is not None and seen < 10_000:
        seen += 1
        if node.op_type in JOIN_OPS and not any(t in view.constants for t in node.input):
            return node
        consumers = view.consumers.get(node.output[0], [])
        if len(consumers) != 1:
            return None
        node = consumers[0]
    return None


def check_onnx(path: str | Path) -> tuple[onnx.ModelProto, list[int]]:
    """The model and its input shape [1, C, H, W], or a ConversionError saying what is wrong."""
    from .qdq_in import is_qdq, lower_qdq
    from .qonnx_in import is_qonnx, lower_qonnx

    model = read_onnx(path)
    source = str(path)
    if is_qonnx(model):  # quantizers become fixed-point types on a float graph (hw/qonnx_in.py)
        model = lower_qonnx(model, source)
    elif is_qdq(model):  # ONNX Runtime's QDQ: each tensor in units of its scale (hw/qdq_in.py)
        model = lower_qdq(model, source)
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
    shape = static_input_shape(inputs[0], source, nhwc=input_transpose(model) is not None)
    check_nodes(model, source)
    return model, shape
