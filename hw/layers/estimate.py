"""Resources of a stage, and of a whole design, from RTL parameters alone (microseconds, no Yosys).

Each layer kind's module (hw/layers/conv.py, ...) describes its Verilog module as structure:
memories (depth x width, read ports, RAM or ROM), multipliers (operand widths, DSP or LUT),
adders, comparators and registers, each as a *feature* of a resource. Two parts of it are
computed exactly, as Yosys's ``synth_xilinx -family xc7`` decides them:

- where each memory goes: block RAM (RAMB18E1 / RAMB36E1, their aspect ratios 16K x 1 .. 512 x 36,
  and 512 x 72 simple dual port), distributed RAM (RAM32M, RAM64M, ... cells) or plain logic, by
  ``memory_libmap``'s own costs (``map_memory``, the algorithm of passes/memory/memory_libmap.cc
  with the xc7 libraries: ROMs cost 1/64 per bit as logic, RAMs 1 per bit);
- how many DSP48E1 a product takes (``dsp_per_product``: 25 x 18 signed, larger ones split).

The rest (LUTs and flip-flops of adders, comparators, multiplexers, counters and of the ROMs
mapped to logic) is a linear combination of the features with non-negative coefficients
fitted on Yosys counts (``sim/calibrate.py`` writes them to ``calibration/<module>.json``).
LUT RAM is counted as ``sim/resources.py`` counts it: one per RAM cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .base import Resources, calibration

KEYS = ("lut", "lutram", "ff", "dsp", "bram18")
# below these a count is judged by its absolute error (a relative error of 3 LUTs in 10 says nothing)
SMALL = {"lut": 50, "lutram": 8, "ff": 50, "dsp": 4, "bram18": 4}


# ---- memories -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MemoryMap:
    """Where one memory goes and what it costs there: ``kind`` block | distributed | logic, block
    RAM in RAMB18 halves, LUT RAM cells, the LUTs of the read multiplexers and write decoders
    around them, and the flip-flops of a synchronous read that the target lacks (distributed
    RAM and logic read asynchronously: the output register stays in the fabric)."""

    kind: str
    bram18: float = 0.0
    lutram: int = 0
    mux_bits: int = 0  # read-data bits selected among several units (LUT multiplexers)
    out_ff: int = 0
    logic_bits: int = 0  # a memory mapped to logic: its bits
    depth: int = 0
    width: int = 0


# Yosys's xc7 libraries (techlibs/xilinx/brams_xc4v.txt with HAS_SIZE_36, HAS_CASCADE,
# HAS_MIXWIDTH_SDP; lutrams_xc5v.txt): (name, kind, abits, widths, cost, widthscale, halves per
# unit, ports: "tdp" (two read/write), "sdp" (one write, one read), "dp" (one read/write, one
# read), "qp" (one read/write, three reads)
_BLOCK = [
    ("RAMB18 TDP", 14, (1, 2, 4, 9, 18), 129, 1, "tdp"),
    ("RAMB36 TDP", 15, (1, 2, 4, 9, 18, 36), 257, 2, "tdp"),
    ("RAMB36 cascade", 16, (1, 2, 4, 9), 513, 4, "tdp"),
    ("RAMB18 SDP", 14, (1, 2, 4, 9, 18, 36), 129, 1, "sdp"),
    ("RAMB36 SDP", 15, (1, 2, 4, 9, 18, 36, 72), 257, 2, "sdp"),
]
_DISTRIBUTED = [  # (abits, width, cost, widthscale, ports)
    (5, 4, 8, 8, "dp"), (6, 2, 8, 8, "dp"), (7, 1, 8, 8, "dp"),
    (5, 2, 7, 7, "qp"), (6, 1, 7, 7, "qp"),
    (5, 6, 8, 7, "sdp"), (6, 3, 8, 7, "sdp"),
]
LOGIC_COST_ROM = 1 / 64  # synth_xilinx -family xc7: memory_libmap -logic-cost-rom 0.015625
LOGIC_COST_RAM = 1.0
FACTOR_MUX = 0.5
FACTOR_DEMUX = 0.5
BYTE = 9  # block RAM write-enable granularity


def _read_replicas(ports: str, reads: int, rom: bool) -> int:
    """How many copies of the array the read ports need (memory_libmap ``repl_port``)."""
    free = {"tdp": 1 if not rom else 2, "sdp": 1, "dp": 1, "qp": 3}[ports]
    if ports == "qp" and rom:
        free = 4
    return max(1, -(-reads // free))


def _geometry(depth: int, width: int, abits: int, unit_width: int, index: int, rom: bool,
              byte: int) -> tuple[int, int]:
    """(address blocks, data units) of one array built from ``unit_width`` x 2**(abits-index) units."""
    blocks = -(-depth // (1 << (abits - index)))
    eb = 1 if rom else min(byte, unit_width) if byte else unit_width
    padded = -(-width // eb) * eb
    return blocks, -(-(blocks * padded) // unit_width)


@lru_cache(maxsize=4096)
def map_memory(depth: int, width: int, reads: int = 1, rom: bool = False, block: bool = False) -> MemoryMap:
    """Where ``synth_xilinx -family xc7`` puts a memory of ``depth`` words of ``width`` bits with
    ``reads`` synchronous read ports (and one write port unless ``rom``), by the costs its
    ``memory_libmap`` compares (a memory of one word, or constant, is no memory at all). With
    ``block`` (the RTL says ``ram_style = "block"``), block RAM's geometries only."""
    if depth <= 1 or width <= 0:
        return MemoryMap("logic", logic_bits=depth * width, out_ff=reads * width if not rom else 0,
                         depth=depth, width=width)
    logic_cost = depth * width * (LOGIC_COST_ROM if rom else LOGIC_COST_RAM)
    best = ("logic", math.inf if block else logic_cost, None)
    emu = 2.0 * reads  # one emulation point per read port not shared with a write port (a tie breaker)
    for name, abits, widths, cost, halves, ports in _BLOCK:
        repl_port = _read_replicas(ports, reads, rom)
        for index, unit_width in enumerate(widths):
            blocks, units = _geometry(depth, width, abits, unit_width, index, rom, BYTE)
            c = cost * units * repl_port + emu
            c += FACTOR_MUX * (blocks - 1) * width * reads
            if not rom and blocks != 1:
                c += FACTOR_DEMUX * blocks
            if c < best[1]:
                best = ("block", c, (units * repl_port * halves, blocks))
    if not rom and not block:  # the distributed RAM libraries have ``prune_rom``
        for abits, unit_width, cost, scale, ports in _DISTRIBUTED:
            repl_port = _read_replicas(ports, reads, rom)
            blocks, units = _geometry(depth, width, abits, unit_width, 0, rom, 0)
            c = (cost - scale) * units * repl_port + scale * blocks * width / unit_width * repl_port + emu
            c += FACTOR_MUX * (blocks - 1) * width * reads
            if blocks != 1:
                c += FACTOR_DEMUX * blocks
            if c < best[1]:
                best = ("distributed", c, (units * repl_port, blocks))
    kind, _, how = best
    if kind == "logic":
        return MemoryMap("logic", logic_bits=depth * width, out_ff=reads * width, depth=depth, width=width)
    count, blocks = how
    mux = (blocks - 1) * width * reads
    if kind == "block":
        return MemoryMap("block", bram18=count, mux_bits=mux, depth=depth, width=width)
    return MemoryMap("distributed", lutram=count, mux_bits=mux, out_ff=reads * width, depth=depth, width=width)


def rom_luts_per_bit(depth: int) -> float:
    """LUTs per output bit of a ROM of ``depth`` words mapped to logic, relative to a 32-word
    one. Yosys builds the ROM as a multiplexer tree over the constant words and ABC maps each bit
    to about a LUT per 32 words, more so towards the next power of two (the calibration's random
    weights: depth 18, 72 and 144 cost about 1, 4 and 7 LUTs per bit): 2**(k - 5) with k three
    parts log2 of the depth rounded up and one part log2 of the depth; the calibration fits the
    factor."""
    if depth <= 1:
        return 0.0
    k = 0.75 * math.ceil(math.log2(depth)) + 0.25 * math.log2(depth)
    return max(1.0, 2.0 ** (k - 5))


def rom_columns(depth: int, width: int) -> int:
    """Distinct bit columns of a ROM (at most 2**depth: Yosys merges equal columns, their logic
    and their output registers, so a 4-word ROM of 256 bits is at most 16 functions)."""
    return min(width, 1 << depth) if depth < 30 else width


# ---- multipliers ----------------------------------------------------------------------------------

DSP_A, DSP_B, DSP_A_PARTIAL = 25, 18, 18  # mul2dsp's DSP_A_MAXWIDTH, DSP_B_MAXWIDTH, DSP_A_MAXWIDTH_PARTIAL
# mul2dsp's DSP_Y_MINWIDTH for the xc7: a product narrower than this is built in LUTs, not a DSP48
# (synth_xilinx here: 5 x 3 bits, 19 LUTs; 5 x 4, one DSP48E1)
DSP_Y_MIN = 9


def dsp_per_product(a_bits: int, b_bits: int) -> int:
    """DSP48E1 slices of one signed ``a_bits`` x ``b_bits`` product (Yosys mul2dsp: the wider
    operand on A (25 bits), the other on B (18); past that an operand is cut into 17-bit unsigned
    pieces below a signed top piece, one DSP per pair of pieces); none for a product narrower than
    DSP_Y_MIN bits, which Yosys builds in LUTs (a net quantized to 4-bit activations and 3-bit
    weights had 70 products predicted on DSPs where Yosys used 2 DSPs in all)."""
    if a_bits + b_bits < DSP_Y_MIN:
        return 0
    a, b = max(a_bits, b_bits), min(a_bits, b_bits)
    if a <= DSP_A and b <= DSP_B:
        return 1
    pieces_a = 1 + -(-max(0, a - DSP_A) // (DSP_A_PARTIAL - 1))
    pieces_b = 1 + -(-max(0, b - DSP_B) // (DSP_B - 1))
    return pieces_a * pieces_b


# ---- the fitted part ------------------------------------------------------------------------------

@dataclass
class Model:
    """One instance's resources as exact parts plus features (per resource, name -> value) whose
    coefficients the calibration fits."""

    exact: Resources = field(default_factory=Resources)
    features: dict[str, dict[str, float]] = field(default_factory=lambda: {k: {} for k in KEYS})

    def add(self, key: str, name: str, value: float) -> None:
        self.features[key][name] = self.features[key].get(name, 0.0) + float(value)


def predict(module: str, model: Model, coefficients: dict | None = None) -> Resources:
    """The exact parts plus the features weighted by the module's fitted coefficients."""
    coef = coefficients if coefficients is not None else calibration(module).get("coefficients", {})
    values = {}
    for key in KEYS:
        c = coef.get(key, {})
        values[key] = getattr(model.exact, key) + sum(c.get(name, 0.0) * v for name, v in model.features[key].items())
    return Resources(**values)


def _nnls(a: np.ndarray, b: np.ndarray, iterations: int = 500) -> np.ndarray:
    """Non-negative least squares (Lawson and Hanson's active set method)."""
    m, n = a.shape
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    w = a.T @ (b - a @ x)
    for _ in range(iterations):
        if passive.all() or w[~passive].max(initial=-np.inf) <= 1e-10:
            break
        j = np.argmax(np.where(passive, -np.inf, w))
        passive[j] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            neg = passive & (z <= 0)
            alpha = np.min(x[neg] / (x[neg] - z[neg]))
            x = x + alpha * (z - x)
            passive &= x > 1e-12
            x[~passive] = 0.0
        w = a.T @ (b - a @ x)
    return x


def observed(cells: dict) -> dict[str, float]:
    """A Yosys count (sim/resources.py CELLS) in this model's terms."""
    return {"lut": cells["LUT"], "lutram": cells["LUTRAM"], "ff": cells["FF"], "dsp": cells["DSP"],
            "bram18": 2 * cells["BRAM36"] + cells["BRAM18"]}


def errors(predicted: float, actual: float, key: str) -> tuple[float, float]:
    """(relative error, absolute error) of one prediction."""
    return (abs(predicted - actual) / max(actual, SMALL[key]), abs(predicted - actual))


def fit_module(module: str, points: list[dict]) -> dict:
    """Fit the coefficients of ``module``'s features on Yosys ``points`` (params, cells): per
    resource, non-negative least squares weighted for relative error; the coefficients, the
    fit's quality, and each point's prediction."""
    models = [model_of(module, p["params"]) for p in points]
    truth = [observed(p["cells"]) for p in points]
    coefficients: dict[str, dict[str, float]] = {}
    for key in KEYS:
        names = sorted({name for m in models for name in m.features[key]})
        if not names:
            continue
        a = np.array([[m.features[key].get(name, 0.0) for name in names] for m in models])
        y = np.array([t[key] - getattr(m.exact, key) for t, m in zip(truth, models)])
        weight = 1.0 / np.maximum(np.array([t[key] for t in truth]), SMALL[key])
        x = _nnls(a * weight[:, None], y * weight)
        coefficients[key] = {name: round(float(v), 6) for name, v in zip(names, x) if v > 0}
    quality = {}
    for i, (m, t) in enumerate(zip(models, truth)):
        pred = predict(module, m, coefficients)
        points[i]["predicted"] = {k: round(getattr(pred, k), 1) for k in KEYS}
    for key in KEYS:
        rel = [errors(p["predicted"][key], t[key], key)[0] for p, t in zip(points, truth)]
        ab = [errors(p["predicted"][key], t[key], key)[1] for p, t in zip(points, truth)]
        quality[key] = {"max_rel_err": round(max(rel), 4), "mean_rel_err": round(float(np.mean(rel)), 4),
                        "max_abs_err": round(max(ab), 1), "small": SMALL[key]}
    return {"coefficients": coefficients, "quality": quality,
            "note": "relative errors are |predicted - yosys| / max(yosys, small): a count under `small` "
                    "is judged by its absolute error"}


# ---- dispatch -------------------------------------------------------------------------------------

def _kind_modules():
    from . import act, add, affine, concat, conv, dense, gpool, pool, resize, stream

    return (affine, conv, dense, pool, gpool, act, add, concat, resize, stream)


def _module_table() -> dict:
    return {name: m for m in _kind_modules() for name in m.MODULES}


def model_of(module: str, params: dict) -> Model:
    """The structural model of one instance of ``module`` with RTL ``params``."""
    table = _module_table()
    if module not in table:
        raise KeyError(f"no hardware model for {module}")
    return table[module].model(module, params)


def stage_resources(module: str, params: dict) -> Resources:
    """Predicted resources of one instance of ``module`` (an ``ef_*`` Verilog module) with ``params``
    (the manifest's ``params`` of a stage, or the planner's)."""
    return _module_table()[module].resources(module, params)


def adapter_params(manifest: dict) -> dict[str, dict]:
    """The two AXI-Stream adapters' parameters, as sim/resources.py ``network_estimate`` sets them."""
    inp, out = manifest["input"], manifest["output"]
    cells = out.get("map", {"height": 1, "width": 1})
    p = cells["height"] * cells["width"]
    return {"ef_axis_in": {"H": inp["height"], "W": inp["width"], "C": inp["channels"]},
            "ef_axis_out": {"N": out["outputs"] // p, "OW": out["width"], "TW": out["tdata_bits"], "P": p}}


def design_parts(manifest: dict) -> dict[str, Resources]:
    """Predicted resources per unit of a design (its stages by name, ``axis_in``, ``axis_out``):
    the units ``sim/resources.py`` synthesizes one by one."""
    parts = {st["name"]: stage_resources(st["module"], st["params"]) for st in manifest["stages"]}
    adapters = adapter_params(manifest)
    parts["axis_in"] = stage_resources("ef_axis_in", adapters["ef_axis_in"])
    parts["axis_out"] = stage_resources("ef_axis_out", adapters["ef_axis_out"])
    return parts


PREDICTION_TOLERANCE = 0.10  # a whole design's prediction against Yosys's count, per resource (issue 28)
# a whole design's count under which a percentage says nothing, and the absolute error allowed there
DESIGN_SMALL = {"LUT": (50, 5), "FF": (50, 5), "DSP": (4, 1), "BRAM36": (4, 1)}


def prediction_misses(predicted: dict, counted: dict, tolerance: float = PREDICTION_TOLERANCE) -> dict[str, str]:
    """The board budgets (``Resources.board_use`` keys) whose prediction is off Yosys's count by
    more than ``tolerance`` of it, or, under DESIGN_SMALL's count, by more than its absolute
    error: name -> 'predicted P, Yosys C'. Empty when the prediction holds."""
    misses = {}
    for key, count in counted.items():
        small, absolute = DESIGN_SMALL.get(key, (0, 0))
        allowed = absolute if count < small else tolerance * count
        if abs(predicted[key] - count) > allowed:
            misses[key] = f"predicted {predicted[key]}, Yosys {count}"
    return misses


def prediction_error(predicted: dict, counted: dict) -> dict:
    """(predicted - counted) / counted per resource; None where Yosys counts none."""
    return {k: round((predicted[k] - v) / v, 3) if v else None for k, v in counted.items()}


def design_resources(manifest: dict) -> Resources:
    """Predicted resources of a whole generated design (rtl/manifest.json): every stage plus the
    two AXI-Stream adapters, the sum ``edgefpga verify --resources`` counts with Yosys."""
    out = Resources()
    for part in design_parts(manifest).values():
        out = out + part
    return out
