"""How many multipliers each layer gets (hls4ml's ReuseFactor) and what that means in cycles.

In hls4ml's io_stream dataflow every layer is a pipeline stage working on the frame at the same
time; the slowest stage sets the initiation interval (cycles between frames). A conv layer
computes one output pixel every ``reuse`` cycles with ``n_in * n_out / reuse`` multipliers. The
planner finds the smallest interval whose multipliers fit the board's DSP budget, using
hls4ml's own rule for which reuse factors are valid. The cycle counts are estimates of the HLS
design; the RTL simulation of issue 4 measures exact ones.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

DSP_SHARE = 0.8  # leave a fifth of the DSPs for timing closure and the rest of the system


@dataclass
class LayerCost:
    node: str
    op: str
    out_pixels: int  # output positions per frame (1 for a dense layer)
    n_in: int  # inputs per output position (kernel area x input channels)
    n_out: int  # outputs per position (output channels)
    params: int
    macs: int  # per frame
    in_pixels: int = 1  # input positions per frame
    fill_pixels: int = 0  # input positions a line buffer holds before its first window
    reuse: int = 1
    multipliers: int = 0
    cycles: int = 0  # per frame at this reuse

    def to_dict(self) -> dict:
        return asdict(self)


def valid_reuse_factors(n_in: int, n_out: int) -> list[int]:
    """hls4ml's FPGABackend rule (fpga_backend.py ``_validate_reuse_factor``), without its
    O(n_in * n_out) loop: only divisors of n_in * n_out can qualify."""
    total = n_in * n_out
    divisors = sorted({d for i in range(1, math.isqrt(total) + 1) if total % i == 0 for d in (i, total // i)})
    ok = []
    for rf in divisors:
        limit = math.ceil(total / min(n_in, rf))
        if ((limit % n_out == 0) or rf >= n_in) and ((rf % n_in == 0) or rf < n_in):
            ok.append(rf)
    return ok


def layer_costs(model: ModelWrapper) -> list[LayerCost]:
    """Conv and dense layers of the canonical (channels-first) graph with their sizes."""
    costs = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "MatMul"):
            continue
        weight = model.get_initializer(node.input[1])
        if node.op_type == "Conv":
            _, _, h, w = model.get_tensor_shape(node.output[0])
            _, _, in_h, in_w = model.get_tensor_shape(node.input[0])
            n_out, n_in = weight.shape[0], int(np.prod(weight.shape[1:]))
            kh, kw = weight.shape[2:]
            pixels, in_pixels, fill = h * w, in_h * in_w, (kh - 1) * in_w + kw - 1
        else:
            n_in, n_out = weight.shape
            pixels, in_pixels, fill = 1, 1, 0
        costs.append(LayerCost(node.name, node.op_type, pixels, n_in, n_out, int(weight.size) + n_out,
                               pixels * n_in * n_out, in_pixels, fill))
    return costs


def apply_reuse(cost: LayerCost, interval: int) -> None:
    """Largest valid reuse whose cycles per frame stay within ``interval``."""
    valid = valid_reuse_factors(cost.n_in, cost.n_out)
    fitting = [rf for rf in valid if cost.out_pixels * rf <= interval] or [valid[0]]
    cost.reuse = fitting[-1]
    cost.multipliers = math.ceil(cost.n_in * cost.n_out / cost.reuse)
    cost.cycles = cost.out_pixels * cost.reuse


def plan_reuse(costs: list[LayerCost], input_pixels: int, dsp_budget: int) -> int:
    """Set every layer's reuse for the smallest interval whose multipliers fit ``dsp_budget``;
    return that interval in cycles (never below one input pixel per cycle)."""
    candidates = sorted({c.out_pixels * rf for c in costs for rf in valid_reuse_factors(c.n_in, c.n_out)}
                        | {input_pixels})
    candidates = [i for i in candidates if i >= input_pixels]
    low, high = 0, len(candidates) - 1
    while low < high:
        mid = (low + high) // 2
        for c in costs:
            apply_reuse(c, candidates[mid])
        if sum(c.multipliers for c in costs) <= dsp_budget:
            high = mid
        else:
            low = mid + 1
    for c in costs:
        apply_reuse(c, candidates[low])
    return max([input_pixels] + [c.cycles for c in costs])


def roofline_cycles(macs: int, input_pixels: int, dsp: int) -> int:
    """The physical limit: one pixel per clock in, or every DSP busy every cycle."""
    return max(input_pixels, math.ceil(macs / dsp))


def estimate_latency(costs: list[LayerCost], interval: int) -> int:
    """First pixel in to last score out, roughly: one frame interval for the stream to pass plus,
    per layer, the wait for its line buffer to fill (inputs arrive spread over the interval) and
    the time for one output (its reuse)."""
    fill = sum(math.ceil(c.fill_pixels * interval / c.in_pixels) + c.reuse for c in costs)
    return interval + fill
