"""Open RTL from the converted design: one instance of a generic Verilog module from ``hw/rtl/``
per layer, with parameters and ROM contents computed from the canonical graph and its chosen
types, chained in a generated top with an AXI-Stream of 8-bit pixels in and of scores out.

The arithmetic is the integer model's (``intmodel.py``): integer weights, biases pre-aligned to
the exact accumulator, one rounding shift and a saturation per layer. Layer modules:
``ef_affine`` (input normalization), ``ef_conv2d`` (ReLU fused), ``ef_pool2d`` (max / average),
``ef_dense``; framing: ``ef_axis_in`` / ``ef_axis_out``.
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
INCLUDE_FILE = "ef_requant.vh"  # the layers' shared rounding cast, `include`d by each module


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


def conv_layer(model: ModelWrapper, p: Precisions, node_name: str, ci: int, po: int, kp: int = 1) -> ConvLayer:
    """Parameters of ``node_name`` (a Conv) with ``ci`` input channels, ``po`` output channels and
    ``kp`` adjacent window positions per cycle; a following ReLU is fused (same fractional bits)."""
    node = model.get_node_from_name(node_name)
    x_t = p.tensors[node.input[0]]
    w_t, b_t, acc_t = (p.layers[node.name][k] for k in ("weight", "bias", "accum"))
    weight = to_int(model.get_initializer(node.input[1]), w_t)  # (OC, C, K, K)
    bias = align(to_int(model.get_initializer(node.input[2]), b_t), b_t.frac, acc_t.frac)
    oc, c, k, _ = weight.shape
    if oc % po or c % ci or k % kp:
        raise ValueError(f"{node.name}: lanes {po}/{ci}/{kp} must divide {oc} outputs / {c} inputs / kernel {k}")
    relu = sole_consumer(model, node.output[0])
    fused = relu is not None and relu.op_type == "Relu"
    out_t = p.tensors[relu.output[0]] if fused else p.tensors[node.output[0]]
    shift = acc_t.frac - out_t.frac
    if shift < 0:
        raise ValueError(f"{node.name}: output type has more fractional bits than the accumulator")
    _, _, h, w = model.get_tensor_shape(node.input[0])
    pads = attr(node, "pads")
    words = [hex_word([weight[g * po + lane, ch * ci + i, ky, kx + j] for lane in range(po) for j in range(kp)
                       for i in range(ci)], w_t.width)
             for g in range(oc // po) for ky in range(k) for kx in range(0, k, kp) for ch in range(c // ci)]
    biases = [hex_word(list(bias[g * po:(g + 1) * po]), acc_t.width) for g in range(oc // po)]
    params = dict(H=h, W=w, C=c, K=k, S=attr(node, "strides")[0], PAD=pads[0], OC=oc, CI=ci, PO=po, KP=kp,
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


@dataclass
class Stage:
    """One module instance of the generated top: what it is, its parameters, the ROM files it
    reads (name -> lines) and the pixel vector it emits (channels x bits)."""

    name: str
    module: str
    params: dict
    roms: dict[str, list[str]]
    out_channels: int
    out_bits: int
    steps_per_frame: int = 0  # engine cycles per frame (the layer's share of the interval)
    multipliers: int = 0


def affine_stage(model: ModelWrapper, p: Precisions, node) -> Stage:
    x_t, out_t = p.tensors[node.input[0]], p.tensors[node.output[0]]
    s_t, b_t = p.layers[node.name]["scale"], p.layers[node.name]["bias"]
    scale = to_int(model.get_initializer(node.input[1]), s_t)
    frac = max(x_t.frac + s_t.frac, b_t.frac)
    bias = align(to_int(model.get_initializer(node.input[2]), b_t), b_t.frac, frac)
    accw = 48
    words = [format(((int(b) & ((1 << accw) - 1)) << s_t.width) | (int(sc) & ((1 << s_t.width) - 1)), "x")
             for sc, b in zip(scale, bias)]
    c = len(scale)
    params = dict(C=c, XW=x_t.width, XSIGNED=int(x_t.signed), SW=s_t.width, SSIGNED=int(s_t.signed), ACCW=accw,
                  SHIFT=frac - out_t.frac, OW=out_t.width, OMIN=round(out_t.low / out_t.step),
                  OMAX=round(out_t.high / out_t.step))
    if params["SHIFT"] < 0:
        raise ValueError(f"{node.name}: output type has more fractional bits than the product")
    return Stage(node.name, "ef_affine", params, {"AFILE": words}, c, out_t.width)


def conv_stage(model: ModelWrapper, p: Precisions, node, ci: int, po: int, kp: int) -> Stage:
    layer = conv_layer(model, p, node.name, ci, po, kp)
    q = layer.params
    _, _, oh, ow = model.get_tensor_shape(node.output[0])
    steps = oh * ow * q["K"] * (q["K"] // kp) * (q["C"] // ci) * (q["OC"] // po)
    return Stage(layer.node, "ef_conv2d", q, {"WFILE": layer.weight_words, "BFILE": layer.bias_words},
                 q["OC"], q["OW"], steps, ci * po * kp)


def exact_divider(n: int, max_value: int) -> tuple[int, int]:
    """(m, sh) with floor(x / n) == (x * m) >> sh for every 0 <= x <= max_value (Granlund-Montgomery)."""
    if n & (n - 1) == 0:
        return 1, n.bit_length() - 1
    bits = max(1, max_value.bit_length())
    extra = (n - 1).bit_length()
    sh = bits + extra
    m = -(-(1 << sh) // n)
    return m, sh


def pool_stage(model: ModelWrapper, p: Precisions, node) -> Stage:
    x_t = p.tensors[node.input[0]]
    _, c, h, w = model.get_tensor_shape(node.input[0])
    _, _, oh, ow = model.get_tensor_shape(node.output[0])
    k, stride = attr(node, "kernel_shape"), attr(node, "strides")
    pads = attr(node, "pads", [0, 0, 0, 0])
    if k[0] != k[1] or stride[0] != stride[1] or any(pads):
        raise ValueError(f"{node.name}: only square, unpadded pooling windows are generated")
    params = dict(H=h, W=w, C=c, K=k[0], S=stride[0], XW=x_t.width, XSIGNED=int(x_t.signed))
    if node.op_type == "MaxPool":
        params.update(MODE=0, OW=x_t.width, OMIN=round(x_t.low / x_t.step), OMAX=round(x_t.high / x_t.step))
        out_bits = x_t.width
    else:
        acc_t, out_t = p.layers[node.name]["accum"], p.tensors[node.output[0]]
        count = k[0] * k[1]
        align_bits = acc_t.frac - x_t.frac
        window_sum = count * round(max(abs(x_t.low), x_t.high) / x_t.step)
        m, sh = exact_divider(count, window_sum << align_bits)
        # the window sum's width (with sign): wider accumulators cost registers and adders per channel
        params.update(MODE=1, OW=out_t.width, ALIGN=align_bits, SHIFT=acc_t.frac - out_t.frac,
                      SUMW=window_sum.bit_length() + 1,
                      DIV_M=m, DIV_SH=sh, OMIN=round(out_t.low / out_t.step), OMAX=round(out_t.high / out_t.step))
        out_bits = out_t.width
    return Stage(node.name, "ef_pool2d", params, {}, c, out_bits, oh * ow * k[0] * k[1])


def dense_stage(model: ModelWrapper, p: Precisions, matmul, add, in_shape: list[int], ci: int, po: int) -> Stage:
    """A dense layer reading the (C, H, W) map it was flattened from as a pixel stream: its weight
    rows, in NCHW flatten order in the graph, are visited in stream (NHWC) order."""
    x_t = p.tensors[matmul.input[0]]
    w_t, b_t, acc_t = (p.layers[matmul.name][k] for k in ("weight", "bias", "accum"))
    out_t = p.tensors[add.output[0]]
    weight = to_int(model.get_initializer(matmul.input[1]), w_t)  # (C*H*W, OC)
    bias = align(to_int(model.get_initializer(add.input[1]), b_t), b_t.frac, acc_t.frac)
    c, h, w = in_shape
    oc = weight.shape[1]
    rows = weight.reshape(c, h * w, oc)  # [channel, pixel, output]
    words = [hex_word([rows[ch * ci + i, pix, g * po + lane] for lane in range(po) for i in range(ci)], w_t.width)
             for pix in range(h * w) for g in range(oc // po) for ch in range(c // ci)]
    params = dict(NPIX=h * w, C=c, OC=oc, CI=ci, PO=po, XW=x_t.width, XSIGNED=int(x_t.signed), WW=w_t.width,
                  ACCW=acc_t.width, SHIFT=acc_t.frac - out_t.frac, OW=out_t.width,
                  OMIN=round(out_t.low / out_t.step), OMAX=round(out_t.high / out_t.step))
    biases = [hex_word(list(bias[g * po:(g + 1) * po]), acc_t.width) for g in range(oc // po)]
    return Stage(matmul.name, "ef_dense", params, {"WFILE": words, "BFILE": biases}, oc, out_t.width,
                 h * w * (oc // po) * (c // ci), ci * po)


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def choose_lanes(c: int, oc: int, macs: int, interval: int, k: int = 1) -> tuple[int, int, int]:
    """(ci, po, kp) with the fewest multipliers whose cycles (``macs`` / multipliers) fit in
    ``interval``; the most parallel choice when none does. Ties prefer whole input pixels (ci)."""
    options = sorted((ci * po * kp, -ci, -kp, ci, po, kp)
                     for ci in divisors(c) for po in divisors(oc) for kp in divisors(k))
    for lanes, _, _, ci, po, kp in options:
        if macs // lanes <= interval:
            return ci, po, kp
    return c, oc, k


SHORT_MAP_ROWS = 6


def layer_interval(interval: int, out_rows: int) -> int:
    """Cycles per frame a layer may take. A layer with few output rows starts late (it waits for
    most of its input) and its last rows add to the latency at its own pace, so layers with fewer
    than SHORT_MAP_ROWS rows get proportionally less time (more multipliers)."""
    return interval * min(out_rows, SHORT_MAP_ROWS) // SHORT_MAP_ROWS


def assign_dsps(stages: list[Stage], dsp_budget: int) -> None:
    """Put as many multipliers as the budget allows in DSP48s and build the rest from LUTs,
    starting with the conv layers whose operands are narrowest (cheapest in logic)."""
    used = sum(st.multipliers for st in stages)
    convs = sorted((st for st in stages if st.module == "ef_conv2d"), key=lambda st: st.params["XW"] * st.params["WW"])
    for st in convs:
        if used <= dsp_budget:
            break
        st.params["USE_DSP"] = 0
        used -= st.multipliers


def network_stages(model: ModelWrapper, p: Precisions, interval: int) -> list[Stage]:
    """Every layer of the canonical graph as a stage, parallel enough for ``interval`` cycles per frame."""
    stages, skip = [], set()
    for node in model.graph.node:
        if node.name in skip:
            continue
        if node.op_type == "BatchNormalization":
            stages.append(affine_stage(model, p, node))
        elif node.op_type == "Conv":
            weight = model.get_initializer(node.input[1])
            _, _, oh, ow = model.get_tensor_shape(node.output[0])
            ci, po, kp = choose_lanes(weight.shape[1], weight.shape[0], oh * ow * weight.size,
                                      layer_interval(interval, oh), weight.shape[3])
            stages.append(conv_stage(model, p, node, ci, po, kp))
            consumer = sole_consumer(model, node.output[0])
            if consumer is not None and consumer.op_type == "Relu":
                skip.add(consumer.name)
        elif node.op_type in ("MaxPool", "AveragePool"):
            stages.append(pool_stage(model, p, node))
        elif node.op_type == "Flatten":
            continue
        elif node.op_type == "MatMul":
            add = sole_consumer(model, node.output[0])
            source = model.find_producer(node.input[0])
            tensor = source.input[0] if source.op_type == "Flatten" else node.input[0]
            shape = model.get_tensor_shape(tensor)[1:]
            if len(shape) == 1:
                shape = [shape[0], 1, 1]
            weight = model.get_initializer(node.input[1])
            ci, po, _ = choose_lanes(shape[0], weight.shape[1], weight.size, interval)
            stages.append(dense_stage(model, p, node, add, shape, ci, po))
            skip.add(add.name)
        else:
            raise ValueError(f"{node.name} ({node.op_type}): no RTL module for this layer yet")
    return stages


TDATA_BITS = 16


def verilog_value(value) -> str:
    return str(value) if isinstance(value, int) else f'"{value}"'


def stage_parameters(stage: Stage) -> list[str]:
    """``.NAME(value)`` for every parameter; ROM files are read from the top's MEM_DIR."""
    lines = [f".{k}({verilog_value(v)})" for k, v in stage.params.items()]
    return lines + [f'.{k}({{MEM_DIR, "{stage.name}_{k}.mem"}})' for k in stage.roms]


def stage_input_bits(stages: list[Stage], channels: int) -> list[int]:
    """Width of each stage's input pixel vector: the 8-bit pixels of ef_axis_in, then the previous
    stage's output (the resource estimate instantiates each stage alone with these ports)."""
    return [channels * 8] + [st.out_channels * st.out_bits for st in stages[:-1]]


def generic_modules(stages: list[Stage]) -> list[str]:
    return ["ef_axis_in", *dict.fromkeys(st.module for st in stages), "ef_axis_out"]


def write_rtl(model: ModelWrapper, p: Precisions, out_dir: Path, name: str, interval: int, source: str,
              version: str, dsp_budget: int) -> dict:
    """Write ``out_dir/src`` (generic modules, generated top, ROM files) and ``out_dir/manifest.json``;
    return the manifest."""
    import json
    import shutil

    import jinja2

    stages = network_stages(model, p, interval)
    assign_dsps(stages, dsp_budget)
    src = out_dir / "src"
    src.mkdir(parents=True, exist_ok=True)
    for module in generic_modules(stages):
        shutil.copyfile(RTL_DIR / f"{module}.v", src / f"{module}.v")
    shutil.copyfile(RTL_DIR / INCLUDE_FILE, src / INCLUDE_FILE)
    for st in stages:
        for key, lines in st.roms.items():
            (src / f"{st.name}_{key}.mem").write_text("\n".join(lines) + "\n")
    _, channels, height, width = model.get_tensor_shape(model.graph.input[0].name)
    out_t = p.tensors[model.graph.output[0].name]
    top = f"{name}_top"
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(RTL_DIR), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    text = env.get_template("top.v.j2").render(
        top=top, version=version, source=source, stages=stages, stage_params=[stage_parameters(s) for s in stages],
        height=height, width=width, channels=channels, outputs=stages[-1].out_channels, out_bits=out_t.width,
        out_frac=out_t.frac, tdata_bits=TDATA_BITS)
    (src / f"{top}.v").write_text(text)
    manifest = {
        "top": top, "sources": [f"src/{m}.v" for m in generic_modules(stages)] + [f"src/{top}.v"],
        "includes": ["src"], "clock": "clk", "reset": {"name": "rst_n", "active_low": True},
        "input": {"prefix": "s_axis", "tdata_bits": 8, "height": height, "width": width, "channels": channels},
        "output": {"prefix": "m_axis", "tdata_bits": TDATA_BITS, "outputs": stages[-1].out_channels,
                   "width": out_t.width, "frac": out_t.frac, "signed": out_t.signed},
        "memory": {"parameter": "MEM_DIR", "files": sorted(f.name for f in src.glob("*.mem"))},
        "errors": {"err_short": "pulses when tlast ends a frame early: the rest is filled with zero pixels",
                   "err_long": "pulses when a frame has no tlast on its last beat: beats up to the next tlast are dropped"},
        "stages": [{"name": st.name, "module": st.module, "multipliers": st.multipliers,
                    "dsp": st.params.get("USE_DSP", 1) == 1,
                    "cycles_per_frame": st.steps_per_frame, "params": st.params,
                    "roms": {k: f"{st.name}_{k}.mem" for k in st.roms},
                    "in_bits": in_bits, "out_bits": st.out_channels * st.out_bits}
                   for st, in_bits in zip(stages, stage_input_bits(stages, channels))],
        "target_interval_cycles": interval,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
