"""The one parallelism planner: how many multipliers each layer gets, for the RTL (lanes) and for
hls4ml (ReuseFactor), and what that means in cycles.

Every layer is a pipeline stage working on the frame at the same time; the slowest stage sets
the initiation interval (cycles between frames). The physical limit, the *roofline*, is one
input beat per clock or every DSP of the board busy every cycle. The planner gives each layer
the fewest multipliers whose cycles fit the target interval, using the RTL engines' own step
counts (so a depthwise layer, with few MACs per output, is bound by its window steps rather than
its multipliers), then checks the design fits the board: multipliers beyond the DSP budget are
built from LUTs (narrowest operands first) and, when their estimated LUTs exceed the share of
the board set aside for them, the interval is relaxed (fit first, then speed). hls4ml's reuse
factor for a layer is the valid one nearest to the same number of multipliers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from .graph import attr

DSP_SHARE = 0.8  # leave a fifth of the DSPs for timing closure and the rest of the system
LUT_MULTIPLIER_SHARE = 0.35  # of the board's LUTs, at most this much for multipliers built from LUTs
# LUTs per bit of a LUT multiplier's operand product (XW * WW), from Yosys: ResNet-8's Conv_2 (48 LUT
# multipliers of 12 x 9 bits) takes 9,773 LUTs more than Conv_1, the same layer in DSPs: 1.9 per bit
LUT_PER_PRODUCT_BIT = 1.9
SHORT_MAP_ROWS = 6
RELAX = 1.1  # interval growth per step while the design does not fit
DEFAULT_OPERAND_BITS = 8 * 8  # XW * WW of a product before the precision search has chosen the widths


@dataclass
class LayerPlan:
    """One layer: its sizes, the chosen lanes (ci input channels x po outputs x kp window
    positions per cycle), multipliers, engine cycles per frame, and hls4ml's reuse factor."""

    node: str
    kind: str = "fixed"  # conv, depthwise, dense, gpool, fixed
    out_rows: int = 1
    out_pixels: int = 1
    channels: int = 1  # input channels per pixel of the stream
    outputs: int = 1
    kernel: tuple[int, int] = (1, 1)
    in_pixels: int = 1
    macs: int = 0
    params: int = 0
    ci: int = 1
    po: int = 1
    kp: int = 1
    multipliers: int = 0
    cycles: int = 0
    reuse: int = 1
    dsp: bool = True
    operand_bits: int = 0  # XW * WW of one product (LUT cost when not in a DSP)

    @property
    def n_in(self) -> int:
        """Inputs per output value (hls4ml's n_in): kernel area x input channels per group."""
        per_group = 1 if self.kind == "depthwise" else self.channels
        return self.kernel[0] * self.kernel[1] * per_group * (self.in_pixels if self.kind == "dense" else 1)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class NetworkPlan:
    interval: int
    roofline: int
    input_beats: int
    dsp_budget: int
    layers: dict[str, LayerPlan] = field(default_factory=dict)
    relaxed: int = 0  # times the interval was relaxed to fit

    @property
    def multipliers(self) -> int:
        return sum(lp.multipliers for lp in self.layers.values())

    @property
    def dsp_multipliers(self) -> int:
        return sum(lp.multipliers for lp in self.layers.values() if lp.dsp)

    @property
    def ii_cycles(self) -> int:
        return max([self.input_beats] + [lp.cycles for lp in self.layers.values()])

    def lut_multiplier_cost(self) -> float:
        return sum(lp.multipliers * lp.operand_bits * LUT_PER_PRODUCT_BIT for lp in self.layers.values() if not lp.dsp)

    def to_dict(self) -> dict:
        return {"interval_target": self.interval, "ii_cycles": self.ii_cycles, "roofline_cycles": self.roofline,
                "input_beats": self.input_beats, "dsp_budget": self.dsp_budget, "multipliers": self.multipliers,
                "dsp_multipliers": self.dsp_multipliers, "lut_multiplier_luts": round(self.lut_multiplier_cost()),
                "relaxed": self.relaxed, "layers": [lp.to_dict() for lp in self.layers.values()]}


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def dense_input(model: ModelWrapper, matmul) -> tuple[int, int]:
    """(channels per pixel, pixels) of the stream a dense layer reads: the map it was flattened
    from, or one vector."""
    producer = model.find_producer(matmul.input[0])
    if producer is not None and producer.op_type == "Flatten":
        shape = model.get_tensor_shape(producer.input[0])
        if len(shape) == 4:
            return shape[1], shape[2] * shape[3]
    return model.get_tensor_shape(matmul.input[0])[-1], 1


def layer_sizes(model: ModelWrapper) -> list[LayerPlan]:
    """Every layer whose cost depends on its lanes (conv, dense, global pool) or is fixed (window pool)."""
    layers = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            weight = model.get_initializer(node.input[1])
            _, c, h, w = model.get_tensor_shape(node.input[0])
            _, oc, oh, ow = model.get_tensor_shape(node.output[0])
            kind = "depthwise" if attr(node, "group", 1) != 1 else "conv"
            layers.append(LayerPlan(node.name, kind, oh, oh * ow, c, oc, tuple(weight.shape[2:]), h * w,
                                    oh * ow * int(weight.size), int(weight.size) + oc))
        elif node.op_type == "MatMul":
            weight = model.get_initializer(node.input[1])
            c, npix = dense_input(model, node)
            layers.append(LayerPlan(node.name, "dense", 1, 1, c, weight.shape[1], (1, 1), npix, int(weight.size),
                                    int(weight.size) + weight.shape[1]))
        elif node.op_type in ("MaxPool", "AveragePool"):
            _, c, h, w = model.get_tensor_shape(node.input[0])
            _, _, oh, ow = model.get_tensor_shape(node.output[0])
            kernel = tuple(attr(node, "kernel_shape"))
            kind = "gpool" if kernel == (h, w) and not any(attr(node, "pads", [0])) else "fixed"
            layers.append(LayerPlan(node.name, kind, oh, oh * ow, c, c, kernel, h * w))
    return layers


def lane_options(layer: LayerPlan) -> list[tuple[int, int, int]]:
    if layer.kind == "conv":
        return [(ci, po, kp) for ci in divisors(layer.channels) for po in divisors(layer.outputs)
                for kp in divisors(layer.kernel[1])]
    if layer.kind == "depthwise":
        return [(1, po, kp) for po in divisors(layer.channels) for kp in divisors(layer.kernel[1])]
    if layer.kind == "dense":
        return [(ci, po, 1) for ci in divisors(layer.channels) for po in divisors(layer.outputs)]
    if layer.kind == "gpool":
        return [(ci, 1, 1) for ci in divisors(layer.channels)]
    return [(1, 1, 1)]


def engine_cycles(layer: LayerPlan, ci: int, po: int, kp: int) -> int:
    """Cycles per frame of the RTL engine (one step per cycle), as the Verilog modules count them."""
    kh, kw = layer.kernel
    if layer.kind == "conv":
        return layer.out_pixels * kh * (kw // kp) * (layer.channels // ci) * (layer.outputs // po)
    if layer.kind == "depthwise":
        return layer.out_pixels * kh * (kw // kp) * (layer.channels // po)
    if layer.kind == "dense":
        return layer.in_pixels * (layer.outputs // po) * (layer.channels // ci)
    if layer.kind == "gpool":
        return layer.in_pixels * (layer.channels // ci)
    return layer.out_pixels * kh * kw


def lanes_for(layer: LayerPlan, budget: int) -> tuple[int, int, int]:
    """The fewest multipliers whose cycles fit ``budget``; the most parallel choice when none
    does. Ties prefer whole input pixels (ci), then adjacent positions (kp)."""
    options = sorted(lane_options(layer), key=lambda o: (o[0] * o[1] * o[2], -o[0], -o[2]))
    for ci, po, kp in options:
        if engine_cycles(layer, ci, po, kp) <= budget:
            return ci, po, kp
    return min(options, key=lambda o: (engine_cycles(layer, *o), o[0] * o[1] * o[2]))


def layer_interval(interval: int, out_rows: int) -> int:
    """Cycles per frame a layer may take. A layer with few output rows starts late (it waits for
    most of its input) and its last rows add to the latency at its own pace, so layers with fewer
    than SHORT_MAP_ROWS rows get proportionally less time (more multipliers)."""
    return max(1, interval * min(out_rows, SHORT_MAP_ROWS) // SHORT_MAP_ROWS)


def apply_lanes(layer: LayerPlan, interval: int) -> None:
    layer.ci, layer.po, layer.kp = lanes_for(layer, layer_interval(interval, layer.out_rows))
    layer.cycles = engine_cycles(layer, layer.ci, layer.po, layer.kp)
    layer.multipliers = layer.ci * layer.po * layer.kp if layer.kind in ("conv", "depthwise", "dense") else 0
    if layer.multipliers:
        layer.reuse = hls4ml_reuse(layer.n_in, layer.outputs, layer.multipliers)


def assign_dsps(layers: list[LayerPlan], dsp_budget: int) -> None:
    """Which layers' multipliers go to DSP48s (a layer's lanes are all DSP or all LUT): the set
    within the budget whose multipliers would cost the most LUTs otherwise (a 0/1 knapsack over
    multipliers, value = multipliers x operand bits), the rest from LUTs. A greedy pass that drops
    whole layers wastes the budget (ResNet-8: 129 of 176 DSPs used, 99 % of the LUTs)."""
    movable = [lp for lp in layers if lp.kind in ("conv", "depthwise") and lp.multipliers]  # ef_conv2d has USE_DSP
    for lp in layers:
        lp.dsp = True
    fixed = sum(lp.multipliers for lp in layers if lp not in movable)  # dense layers: always DSPs
    budget = dsp_budget - fixed
    if sum(lp.multipliers for lp in movable) <= budget:
        return
    best: dict[int, tuple[int, tuple[int, ...]]] = {0: (0, ())}  # DSPs used -> (LUT cost saved, layers in DSPs)
    for i, lp in enumerate(movable):
        value = lp.multipliers * lp.operand_bits
        for used, (saved, chosen) in list(best.items()):
            total = used + lp.multipliers
            if total <= budget and best.get(total, (-1, ()))[0] < saved + value:
                best[total] = (saved + value, chosen + (i,))
    in_dsp = set(max(best.values())[1])
    for i, lp in enumerate(movable):
        lp.dsp = i in in_dsp


def roofline_cycles(macs: int, input_beats: int, dsp: int) -> int:
    """The physical limit: one input beat per clock, or every DSP busy every cycle."""
    return max(input_beats, math.ceil(macs / dsp))


def plan_network(model: ModelWrapper, board_dsp: int, board_lut: int, operand_bits: dict[str, int] | None = None,
                 interval: int | None = None) -> NetworkPlan:
    """Lanes for every layer of a canonical graph (see plan_layers)."""
    _, c, h, w = model.get_tensor_shape(model.graph.input[0].name)
    return plan_layers(layer_sizes(model), c * h * w, board_dsp, board_lut, operand_bits, interval)


def plan_layers(layers: list[LayerPlan], beats: int, board_dsp: int, board_lut: int,
                operand_bits: dict[str, int] | None = None, interval: int | None = None) -> NetworkPlan:
    """Lanes for every layer at the roofline interval (or ``interval``), relaxed until the
    multipliers fit the board (see module docstring). ``layers`` come from a graph
    (layer_sizes) or, before a model exists, from an architecture (hw/sizing.py)."""
    for lp in layers:
        lp.operand_bits = (operand_bits or {}).get(lp.node, DEFAULT_OPERAND_BITS)
    roofline = roofline_cycles(sum(lp.macs for lp in layers), beats, board_dsp)
    plan = NetworkPlan(interval or roofline, roofline, beats, int(board_dsp * DSP_SHARE), {lp.node: lp for lp in layers})
    while True:
        for lp in layers:
            apply_lanes(lp, plan.interval)
        assign_dsps(layers, plan.dsp_budget)
        if plan.lut_multiplier_cost() <= LUT_MULTIPLIER_SHARE * board_lut or plan.relaxed > 40:
            return plan
        plan.interval = math.ceil(plan.interval * RELAX)
        plan.relaxed += 1


def valid_reuse_factors(n_in: int, n_out: int) -> list[int]:
    """hls4ml's FPGABackend rule (fpga_backend.py ``_validate_reuse_factor``), without its
    O(n_in * n_out) loop: only divisors of n_in * n_out can qualify."""
    total = n_in * n_out
    divs = sorted({d for i in range(1, math.isqrt(total) + 1) if total % i == 0 for d in (i, total // i)})
    ok = []
    for rf in divs:
        limit = math.ceil(total / min(n_in, rf))
        if ((limit % n_out == 0) or rf >= n_in) and ((rf % n_in == 0) or rf < n_in):
            ok.append(rf)
    return ok


def hls4ml_reuse(n_in: int, n_out: int, multipliers: int) -> int:
    """The valid reuse factor whose multiplier count (n_in * n_out / reuse) is nearest to ours."""
    want = n_in * n_out / max(1, multipliers)
    return min(valid_reuse_factors(n_in, n_out), key=lambda rf: (abs(math.log(rf / want)), rf))


def estimate_latency(plan: NetworkPlan) -> int:
    """First pixel in to last score out, roughly: one frame interval for the stream to pass plus,
    per layer, the wait for its line buffer to fill (inputs arrive spread over the interval)."""
    ii = plan.ii_cycles
    fill = 0
    for lp in plan.layers.values():
        if lp.kind in ("conv", "depthwise", "fixed"):
            width = max(1, int(np.sqrt(lp.in_pixels)))
            fill += math.ceil(((lp.kernel[0] - 1) * width + lp.kernel[1] - 1) * ii / lp.in_pixels)
        fill += lp.cycles // max(1, lp.out_pixels)
    return ii + fill
