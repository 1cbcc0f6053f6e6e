"""Open RTL from the converted design: one instance of a generic Verilog module from ``hw/rtl/``
per layer, with parameters and ROM contents computed from the canonical graph and its chosen
types, wired in a generated top with an AXI-Stream of 8-bit pixels in and of scores out.

The arithmetic is the integer model's (``intmodel.py``): integer weights, biases pre-aligned to
the exact accumulator, one rounding shift and a saturation per layer (a Relu or Clip after a
layer is that saturation). Layer modules: ``ef_affine`` (input normalization, any per-channel
affine map), ``ef_conv2d`` (any window, depthwise), ``ef_pool2d`` (max / average windows),
``ef_gpool`` (global pools), ``ef_resize`` (nearest upsampling), ``ef_act`` (an activation that
cannot be fused: LeakyReLU), ``ef_dense``, ``ef_add`` (the join of a residual block), ``ef_concat``
(the channel join of two branches); plumbing: ``ef_fork`` and ``ef_fifo`` (the two branches of a
fork, the FIFO sized from both branches' latency so the block never deadlocks); framing:
``ef_axis_in`` / ``ef_axis_out``. Which module builds which ONNX op is the capability table's
``rtl`` column (hw/capabilities.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from .graph import is_residual
from .layers import op_kind
from .layers.stage import Stage, StreamInfo, hex_word, saturation
from .plan import NetworkPlan, Widths
from .precision import Precisions, fused_activation, sole_consumer

RTL_DIR = Path(__file__).resolve().parent / "rtl"
# `include`d by the modules: the shared rounding cast, and the averaging layers' exact division
INCLUDE_FILES = ("ef_requant.vh", "ef_average.vh")
TDATA_BITS = 16
FIFO_SLACK = 8  # entries beyond the computed lead of one branch: pipeline registers on the way
JOIN_MODULES = ("ef_add", "ef_concat")  # where a fork's two branches meet: ports a and b


# ---- the network --------------------------------------------------------------------------------

def stream_of(model: ModelWrapper, tensor: str, channels: int, bits: int) -> StreamInfo:
    shape = model.get_tensor_shape(tensor)
    h, w = (shape[2], shape[3]) if len(shape) == 4 else (1, 1)
    return StreamInfo(tensor, channels, bits, h, w)


def layer_stages(model: ModelWrapper, p: Precisions, plan: NetworkPlan) -> tuple[list[Stage], dict[str, StreamInfo]]:
    """One stage per layer in graph order, each reading the streams of the tensors it needs
    (fused activations, Flatten and bias Adds are no stages of their own)."""
    inp = model.graph.input[0].name
    _, channels, height, width = model.get_tensor_shape(inp)
    streams = {inp: StreamInfo(inp, channels, 8, height, width)}
    alias: dict[str, str] = {}
    fused = {fused_activation(model, n).name for n in model.graph.node if fused_activation(model, n) is not None}
    stages: list[Stage] = []

    for node in model.graph.node:
        if node.op_type == "Flatten":
            alias[node.output[0]] = alias.get(node.input[0], node.input[0])
            continue
        if node.name in fused or (node.op_type == "Add" and not is_residual(model, node)):
            continue  # computed by the stage before it, whose stream carries this node's output
        kind = op_kind(node.op_type)
        if kind is None:
            raise ValueError(f"{node.name} ({node.op_type}): no RTL module for this layer")
        ins = [alias.get(t, t) for t in node.input if alias.get(t, t) in streams]
        stage = kind.stage(model, p, node, [streams[t] for t in ins], plan.layers.get(node.name))
        if hasattr(kind, "pace"):  # a stage without lanes that may take several cycles a pixel
            kind.pace(stage, plan.ii_cycles)
        stage.inputs = [("a", ins[0]), ("b", ins[1])] if stage.module in JOIN_MODULES else [("in", ins[0])]
        out = stage.output
        streams[out] = stream_of(model, out, stage.out_channels, stage.out_bits)
        if stage.module == "ef_dense":
            streams[out] = StreamInfo(out, stage.out_channels, stage.out_bits, 1, 1)
        stages.append(stage)
    output = alias.get(model.graph.output[0].name, model.graph.output[0].name)
    if stages[-1].output != output:
        raise ValueError(f"the graph output {output} is not the last stage's")
    return stages, streams


def readers_of(stages: list[Stage], stream: str) -> list[tuple[Stage, str]]:
    return [(s, port) for s in stages for port, name in s.inputs if name == stream]


def branch_need(stages: list[Stage], start: str) -> tuple[Stage, np.ndarray]:
    """Follow one branch of a fork from stream ``start`` to the join (ef_add, ef_concat) that ends
    it; return the join and, for each of its output pixels, the last pixel of ``start`` that branch
    needs."""
    chain, stream = [], start
    for _ in range(len(stages) + 1):
        readers = readers_of(stages, stream)
        if len(readers) != 1:
            raise ValueError(f"the branch from {start} does not lead to one join (Add or Concat)")
        reader = readers[0][0]
        if reader.module in JOIN_MODULES:
            need = np.arange(len(reader.need))
            for stage in reversed(chain):
                need = stage.need[need]
            return reader, need
        chain.append(reader)
        stream = reader.output
    raise ValueError(f"the branch from {start} does not end")


def insert_forks(stages: list[Stage], streams: dict[str, StreamInfo]) -> list[Stage]:
    """A stream read by two stages (a residual block, a channel join) gets an ef_fork, and the
    branch that runs ahead an ef_fifo deep enough for the other branch's lag: when the join waits for pixel j of
    the slow branch, the fast branch has taken every input pixel up to what the slow one needs
    for j, and must hold those the fast one's own stages cannot yet use. So backpressure never
    deadlocks the block (the RTL check runs it with random stalls)."""
    result = list(stages)
    for stream in [name for name in streams if len(readers_of(result, name)) > 1]:
        info = streams[stream]
        readers = readers_of(result, stream)
        if len(readers) != 2:
            raise ValueError(f"{stream} feeds {len(readers)} layers; a fork has two branches")
        first = result.index(readers[0][0])
        for (reader, port), suffix in zip(readers, "ab"):
            branch = f"{stream}_{suffix}"
            reader.inputs = [(q, branch if (q, n) == (port, stream) else n) for q, n in reader.inputs]
            streams[branch] = StreamInfo(branch, info.channels, info.bits, info.h, info.w)
        joins, needs = zip(*(branch_need(result, f"{stream}_{suffix}") for suffix in "ab"))
        if joins[0] is not joins[1]:
            raise ValueError(f"the two branches of {stream} end at different joins")
        fork = Stage(f"fork_{joins[0].name}", "ef_fork", {"BITS": info.width}, {}, [("in", stream)],
                     [("a", f"{stream}_a"), ("b", f"{stream}_b")], info.channels, info.bits)
        result.insert(first, fork)
        for suffix, own, other in (("a", needs[0], needs[1]), ("b", needs[1], needs[0])):
            lead = int(np.max(other - own))
            if lead > 0:
                result.insert(result.index(fork) + 1, fifo_stage(result, streams, f"{stream}_{suffix}", lead))
    return result


def fifo_stage(stages: list[Stage], streams: dict[str, StreamInfo], stream: str, lead: int) -> Stage:
    """An ef_fifo between ``stream`` and its reader, ``lead`` + FIFO_SLACK pixels deep."""
    info = streams[stream]
    out = f"{stream}_fifo"
    reader, port = readers_of(stages, stream)[0]
    reader.inputs = [(q, out if (q, n) == (port, stream) else n) for q, n in reader.inputs]
    streams[out] = StreamInfo(out, info.channels, info.bits, info.h, info.w)
    return Stage(f"fifo_{reader.name}", "ef_fifo", {"BITS": info.width, "DEPTH": lead + FIFO_SLACK}, {},
                 [("in", stream)], [("out", out)], info.channels, info.bits)


def network_stages(model: ModelWrapper, p: Precisions, plan: NetworkPlan) -> tuple[list[Stage], dict[str, StreamInfo]]:
    """Every layer of the canonical graph as a stage with the plan's lanes, forks wired in."""
    stages, streams = layer_stages(model, p, plan)
    return insert_forks(stages, streams), streams


def verilog_value(value) -> str:
    return str(value) if isinstance(value, (int, np.integer)) else f'"{value}"'


def stage_parameters(stage: Stage) -> list[str]:
    """``.NAME(value)`` for every parameter; ROM files are read from the top's MEM_DIR."""
    lines = [f".{k}({verilog_value(v)})" for k, v in stage.params.items()]
    return lines + [f'.{k}({{MEM_DIR, "{stage.name}_{k}.mem"}})' for k in stage.roms]


def stage_ports(stage: Stage, streams: dict[str, StreamInfo]) -> list[dict]:
    """Each port of a stage with its stream, direction and width (the top wires them; the
    resource estimate builds a wrapper with the same ports)."""
    return [{"port": port, "stream": name, "dir": direction, "bits": streams[name].width}
            for direction, ports in (("in", stage.inputs), ("out", stage.outputs)) for port, name in ports]


def generic_modules(stages: list[Stage]) -> list[str]:
    return ["ef_axis_in", *dict.fromkeys(st.module for st in stages), "ef_axis_out"]


def layer_widths(model: ModelWrapper, p: Precisions) -> dict[str, Widths]:
    """The widths of every planned layer's RTL instance, as the stage builders above set them
    (the planner prices each layer's multipliers, memories and accumulators with them)."""
    widths = {}
    for node in model.graph.node:
        if node.op_type in ("Conv", "MatMul") and node.name in p.layers:
            x_t = p.tensors[node.input[0]] or p.tensors.get(model.find_producer(node.input[0]).input[0])
            w_t, acc_t = p.layers[node.name]["weight"], p.layers[node.name]["accum"]
            last = node if node.op_type == "Conv" else sole_consumer(model, node.output[0])
            out_t = saturation(model, p, last)[1]
            widths[node.name] = Widths(x_t.width, w_t.width + acc_t.frac - x_t.frac - w_t.frac, acc_t.width,
                                       out_t.width, x_t.signed)
        elif node.op_type in ("MaxPool", "AveragePool", "Resize"):
            x_t, out_t = p.tensors[node.input[0]], p.tensors[node.output[0]]
            widths[node.name] = Widths(x_t.width, 0, 0, out_t.width, x_t.signed)
    return widths


LANE_MODULES = ("ef_conv2d", "ef_dense", "ef_gpool", "ef_pool2d", "ef_resize")


def fixed_stages(model: ModelWrapper, p: Precisions, plan: NetworkPlan) -> list[tuple[str, dict]]:
    """(module, params) of every stage the planner does not size (input affine, activations,
    residual adds, channel joins, forks, FIFOs) and of the two stream ends, as write_rtl builds them."""
    stages, streams = network_stages(model, p, plan)
    inp = model.graph.input[0].name
    _, channels, height, width = model.get_tensor_shape(inp)
    last = streams[stages[-1].output]
    ends = [("ef_axis_in", {"H": height, "W": width, "C": channels}),
            ("ef_axis_out", {"N": last.channels, "OW": last.bits, "TW": TDATA_BITS, "P": last.h * last.w})]
    return [(st.module, st.params) for st in stages if st.module not in LANE_MODULES] + ends


def write_rtl(model: ModelWrapper, p: Precisions, plan: NetworkPlan, out_dir: Path, name: str, source: str,
              version: str) -> dict:
    """Write ``out_dir/src`` (generic modules, generated top, ROM files) and ``out_dir/manifest.json``;
    return the manifest."""
    import jinja2

    stages, streams = network_stages(model, p, plan)
    for st in stages:
        if st.node in plan.layers and not plan.layers[st.node].dsp:
            st.params["USE_DSP"] = 0
            if "PACK" in st.params:
                st.params["PACK"] = 0  # products in LUTs are not packed
    src = out_dir / "src"
    src.mkdir(parents=True, exist_ok=True)
    for module in generic_modules(stages):
        shutil.copyfile(RTL_DIR / f"{module}.v", src / f"{module}.v")
    for include in INCLUDE_FILES:
        shutil.copyfile(RTL_DIR / include, src / include)
    for st in stages:
        for key, lines in st.roms.items():
            (src / f"{st.name}_{key}.mem").write_text("\n".join(lines) + "\n")
    inp = model.graph.input[0].name
    _, channels, height, width = model.get_tensor_shape(inp)
    out_t = p.tensors[model.graph.output[0].name]
    if not out_t.signed or out_t.width > TDATA_BITS:
        raise ValueError(f"the output type {out_t} does not fit the {TDATA_BITS}-bit two's-complement output words")
    last = stages[-1].output
    out_pixels = streams[last].h * streams[last].w  # 1, or a detector's map cells (streamed out row-major)
    top = f"{name}_top"
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(RTL_DIR), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    ports = [stage_ports(s, streams) for s in stages]
    text = env.get_template("top.v.j2").render(
        top=top, version=version, source=source, stages=stages, stage_params=[stage_parameters(s) for s in stages],
        stage_ports=ports, streams=[s for s in streams.values() if s.name != inp], input_stream=inp,
        output_stream=last, height=height, width=width, channels=channels, outputs=streams[last].channels,
        out_pixels=out_pixels, out_bits=out_t.width, out_frac=out_t.frac, tdata_bits=TDATA_BITS)
    (src / f"{top}.v").write_text(text)
    manifest = {
        "top": top, "sources": [f"src/{m}.v" for m in generic_modules(stages)] + [f"src/{top}.v"],
        "includes": ["src"], "clock": "clk", "reset": {"name": "rst_n", "active_low": True},
        "input": {"prefix": "s_axis", "tdata_bits": 8, "height": height, "width": width, "channels": channels},
        "output": {"prefix": "m_axis", "tdata_bits": TDATA_BITS, "outputs": streams[last].channels * out_pixels,
                   "width": out_t.width, "frac": out_t.frac, "signed": out_t.signed,
                   **({"map": {"height": streams[last].h, "width": streams[last].w, "classes": streams[last].channels,
                               "order": "cells row-major, each cell's class scores in class order"}}
                      if out_pixels > 1 else {})},
        "memory": {"parameter": "MEM_DIR", "files": sorted(f.name for f in src.glob("*.mem"))},
        "errors": {"err_short": "pulses when tlast ends a frame early: the rest is filled with zero pixels",
                   "err_long": "pulses when a frame has no tlast on its last beat: beats up to the next tlast are dropped"},
        "stage_busy": "output stage_busy[i] is high in the cycles stage i works (stages in this order)",
        "stages": [{"name": st.name, "module": st.module, "node": st.node, "multipliers": st.multipliers,
                    "dsp": st.params.get("USE_DSP", 1) == 1 and st.multipliers > 0,
                    "cycles_per_frame": st.steps_per_frame, "params": st.params,
                    "roms": {k: f"{st.name}_{k}.mem" for k in st.roms}, "ports": port_list,
                    "in_bits": sum(q["bits"] for q in port_list if q["dir"] == "in"),
                    "out_bits": sum(q["bits"] for q in port_list if q["dir"] == "out")}
                   for st, port_list in zip(stages, ports)],
        "target_interval_cycles": plan.interval,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, default=int) + "\n")
    return manifest


def pack_pixels(q: np.ndarray, bits: int) -> list[int]:
    """(C, H, W) integers to raster-order pixel words, channel 0 in the low bits."""
    c, h, w = q.shape
    return [int(hex_word(list(q[:, y, x]), bits), 16) for y in range(h) for x in range(w)]
