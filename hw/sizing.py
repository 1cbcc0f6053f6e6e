"""Sizing an architecture for a board and a frame rate, before training: what
``edgefpga train --board pynq-z2 --fps 2000`` (and ``--dry-run``) uses.

Each candidate is the project's conv stack (models/arch.py: 3x3 conv blocks, 2x2 max-pool
between them, a global pool, one dense layer) at an input size and a width scale. Its layers
go through the converter's own planner (hw/plan.py ``plan_layers``, the function ``convert``
plans the real graph with), so the projected interval and the predicted fit (every resource,
from each layer's hardware model, within the same 80 % budget) are the ones ``convert`` will
plan. Two margins make the projection one the RTL meets: the search's widths are not known
before training, so every layer is priced at SIZING_WIDTHS (12-bit weights and activations:
ELPV's search chose 7..14-bit weights), and the RTL's interval runs up to a few percent over the
plan (pipeline fill between frames: ELPV 1.005x, 32 px nets 1.01x), so the projected interval
is the plan's times RTL_MARGIN. The choice is the candidate with the most multiply-accumulates
(the most capacity) that meets the frame rate and fits the board, larger inputs first on a tie.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .boards import Board
from .plan import LayerPlan, PlanError, Widths, plan_layers

SIZES = (32, 48, 64, 96, 128)
BASE_WIDTHS = (8, 16, 32, 48, 64, 80)  # the shipped ELPV model's
WIDTH_SCALES = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
SIZING_WIDTHS = Widths(xw=12, ww=12, accw=32, ow=12)  # a layer's widths assumed before the search has run
RTL_MARGIN = 1.03  # measured interval over the planned one, at most (see the module docstring)


class SizingError(ValueError):
    """No candidate meets the frame rate on the board; the message says what would."""


@dataclass
class Candidate:
    size: int
    widths: tuple[int, ...]
    params: int
    macs: int
    ii_cycles: int
    fps: float
    dsp_multipliers: int
    predicted: dict  # board use per resource (hw/plan.py fit_summary's "used")
    fits: bool
    meets_fps: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def scaled_widths(depth: int, scale: float) -> tuple[int, ...]:
    """The first ``depth`` base widths times ``scale``, in multiples of 4 (at least 4)."""
    return tuple(max(4, 4 * round(w * scale / 4)) for w in BASE_WIDTHS[:depth])


def arch_layers(size: int, widths: tuple[int, ...], in_channels: int, classes: int) -> list[LayerPlan]:
    """The planner's view of an architecture, layer by layer as the canonical graph will have
    them (BatchNorm folded into the convs, the ReLUs fused): conv, max-pool, ..., global pool, dense."""
    layers, h, c = [], size, in_channels
    for i, w in enumerate(widths):
        layers.append(LayerPlan(f"Conv_{i}", "conv", h, h * h, c, w, (3, 3), h * h, h * h * 9 * c * w, 9 * c * w + w,
                                op="Conv", in_shape=(h, h), out_shape=(h, h), pads=(1, 1)))
        c = w
        if i < len(widths) - 1:
            layers.append(LayerPlan(f"MaxPool_{i}", "fixed", h // 2, (h // 2) ** 2, c, c, (2, 2), h * h,
                                    op="MaxPool", in_shape=(h, h), out_shape=(h // 2, h // 2), stride=(2, 2)))
            h //= 2
    layers.append(LayerPlan("AveragePool_0", "gpool", 1, 1, c, c, (h, h), h * h, op="AveragePool", in_shape=(h, h)))
    layers.append(LayerPlan("MatMul_0", "dense", 1, 1, c, classes, (1, 1), 1, c * classes, c * classes + classes,
                            op="MatMul"))
    return layers


def plan_architecture(board: Board, size: int, widths: tuple[int, ...], in_channels: int, classes: int,
                      layer_widths: Widths | None = None):
    """The converter's plan (hw/plan.py) of the architecture's layers on ``board``; PlanError
    when no design of it fits."""
    layers = arch_layers(size, widths, in_channels, classes)
    return layers, plan_layers(layers, in_channels * size * size, board, layer_widths,
                               what=f"a {size} px net of widths {list(widths)}")


def plan_candidate(board: Board, size: int, widths: tuple[int, ...], in_channels: int, classes: int) -> Candidate:
    layers = arch_layers(size, widths, in_channels, classes)
    params, macs = sum(lp.params for lp in layers), sum(lp.macs for lp in layers)
    try:
        layers, plan = plan_architecture(board, size, widths, in_channels, classes, SIZING_WIDTHS)
    except PlanError:
        return Candidate(size, widths, params, macs, 0, 0.0, 0, {}, fits=False)
    ii = math.ceil(plan.ii_cycles * RTL_MARGIN)
    return Candidate(size, widths, params, macs, ii, round(board.clock_mhz * 1e6 / ii, 1), plan.dsp_multipliers,
                     plan.fit()["used"], fits=True)


def candidates(board: Board, fps: float, in_channels: int, classes: int, max_params: int, max_macs: int,
               sizes: tuple[int, ...] = SIZES) -> list[Candidate]:
    """Every size x width scale (as deep as the size divides: 4 to 6 blocks), within the
    project's parameter and MAC caps, planned for ``board``; ``meets_fps`` set against ``fps``."""
    found = []
    for size in sizes:
        depth = max(d for d in range(1, len(BASE_WIDTHS) + 1) if size % 2 ** (d - 1) == 0 and size // 2 ** (d - 1) >= 1)
        for scale in WIDTH_SCALES:
            widths = scaled_widths(min(depth, len(BASE_WIDTHS)), scale)
            cand = plan_candidate(board, size, widths, in_channels, classes)
            if cand.params <= max_params and cand.macs <= max_macs:
                cand.meets_fps = cand.fps >= fps
                found.append(cand)
    return found


def choose(found: list[Candidate], board: Board, fps: float) -> Candidate:
    """The most capacity (MACs) that meets the frame rate and fits; larger inputs first on a tie."""
    good = [c for c in found if c.meets_fps and c.fits]
    if not good:
        fastest = max(found, key=lambda c: c.fps, default=None)
        best = f"; the fastest candidate ({fastest.size} px, widths {list(fastest.widths)}) reaches " \
               f"{fastest.fps:,.0f} frames/s" if fastest else ""
        raise SizingError(f"no architecture reaches {fps:,.0f} frames/s on {board.name} within the budget{best}: "
                          "ask for fewer frames/s or a larger board")
    return max(good, key=lambda c: (c.macs, c.size))


def format_candidates(found: list[Candidate], chosen: Candidate | None) -> str:
    """The --dry-run table: one row per candidate, the chosen one marked."""
    rows = [f"{'':2}{'size':>5} {'widths':<28} {'params':>8} {'MACs':>11} {'II cycles':>10} {'frames/s':>10} "
            f"{'DSP':>5} {'LUT':>7} {'BRAM36':>7}  verdict"]
    for c in sorted(found, key=lambda c: (c.size, c.macs)):
        verdict = "ok" if c.meets_fps and c.fits else ("too slow" if c.fits else "does not fit")
        mark = "->" if c is chosen else ""
        rows.append(f"{mark:2}{c.size:>5} {str(list(c.widths)):<28} {c.params:>8,} {c.macs:>11,} {c.ii_cycles:>10,} "
                    f"{c.fps:>10,.0f} {c.dsp_multipliers:>5} {c.predicted.get('LUT', 0):>7,} "
                    f"{c.predicted.get('BRAM36', 0):>7}  {verdict}")
    return "\n".join(rows)
