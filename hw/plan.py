"""The one planner: how many multipliers each layer gets (RTL lanes, hls4ml ReuseFactor), whether
they are DSP48s or LUTs, and whether the whole design fits the board. It fits or it refuses.

Every layer is a pipeline stage working on the frame at the same time; the slowest stage sets
the initiation interval (cycles between frames). The physical limit, the *roofline*, is one
input beat per clock or every DSP of the board busy every cycle. For a target interval (the
roofline, or the user's ``--fps``) each layer gets the fewest multipliers whose cycles fit it,
by its hardware model's own step count (hw/layers: a depthwise layer is bound by its window
steps, not its multipliers). Which layers' multipliers are DSP48s is a knapsack within the DSP
budget (the layers whose LUT multipliers would cost the most go to DSPs). Then every layer's
LUT, FF, DSP and block RAM come from its hardware model (fitted on Yosys), plus the stages
without lanes (input affine, activations, residual adds, forks and FIFOs, the stream ends); the
design fits when each resource is within the budget, 80 % of the board by default (room for
the PS side of the chip and for timing closure). While it does not, the interval is relaxed
(fewer multipliers: fit first, then speed). The roofline counts DSP48s only, and a layer's
multipliers may be LUTs: so without ``--fps`` the layouts faster than the roofline's are tried
too (``faster_layout``), and the fastest that fits is built. When even one multiplier per layer does not fit
(weights that need more block RAM than the board has), the plan is refused with the resource,
the need and the board, and the smallest preset board that would hold it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from .boards import BOARDS, Board
from .layers import kind_model, op_kind
from .layers.base import Resources, divisors, total
from .onnx_check import ConversionError

BUDGET_SHARE = 0.8  # of each resource: room for the PS side of the chip and for timing closure
# the planner keeps this far below the budget where its model is fitted rather than exact: whole
# designs' LUT and FF were within 2 % of Yosys (docs/rtl.md); DSP and block RAM are exact. Without
# it ResNet-8 was planned at 78.9 % of the LUTs and counted at 80.4 %.
PLANNING_MARGIN = {"LUT": 0.03, "FF": 0.03}
RESOURCES = ("LUT", "FF", "DSP", "BRAM36")
RELAX = 1.02  # interval growth per step while the design does not fit (fine: the highest rate that fits)
MAX_RELAX_STEPS = 400
FASTER_MISSES = 3  # layouts below the roofline tried in a row without one that fits before the search stops
FASTER_GIVE_UP = 1.5  # ... or a resource at this many times its budget


class PlanError(ConversionError):
    """No design of the network fits the board at any frame rate, or a pinned plan does not fit."""


@dataclass(frozen=True)
class Widths:
    """The widths of one layer's RTL instance: input values, (aligned) weights, accumulator, output."""

    xw: int = 8
    ww: int = 8
    accw: int = 32
    ow: int = 8
    x_signed: bool = True

    @property
    def operand_bits(self) -> int:
        return self.xw * self.ww


DEFAULT_WIDTHS = Widths()
# the narrowest design the precision search can choose (hw/precision.py: 2-bit weights, 4-bit
# activations): a network that does not fit even so is refused before the search runs
SEARCH_FLOOR = Widths(xw=4, ww=2, accw=8, ow=4, x_signed=False)


@dataclass
class LayerPlan:
    """One layer with lanes: its sizes, the chosen lanes (ci input channels x po outputs x kp
    window positions per cycle), multipliers, engine cycles per frame, hls4ml's reuse factor,
    and its predicted resources."""

    node: str
    kind: str = "fixed"  # conv, depthwise, dense, gpool, fixed (a window pool)
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
    op: str = ""
    in_shape: tuple[int, int] = (1, 1)
    out_shape: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    pads: tuple[int, int] = (0, 0)
    widths: Widths = DEFAULT_WIDTHS
    pinned: bool = False
    pairing: bool = True  # two products may share a DSP48 where the widths allow (plan_layers decides)
    resources: Resources = field(default_factory=Resources)

    @property
    def n_in(self) -> int:
        """Inputs per output value (hls4ml's n_in): kernel area x input channels per group."""
        per_group = 1 if self.kind == "depthwise" else self.channels
        return self.kernel[0] * self.kernel[1] * per_group * (self.in_pixels if self.kind == "dense" else 1)

    @property
    def model(self):
        return kind_model(self.kind)

    @property
    def module(self) -> str:
        return self.model.MODULES[0]

    @property
    def lut_multipliers_possible(self) -> bool:
        return getattr(self.model, "LUT_MULTIPLIERS", True) and self.multipliers > 0

    def rtl_params(self, use_dsp: bool | None = None) -> dict:
        return self.model.plan_params(self, self.widths, self.dsp if use_dsp is None else use_dsp)

    @property
    def paired_products(self) -> int:
        """Its products that share a DSP48 with another as laid out (its kind's ``paired_products``)."""
        rule = getattr(self.model, "paired_products", None)
        return rule(self.rtl_params()) if rule and self.multipliers and self.dsp else 0

    def estimate(self, use_dsp: bool | None = None) -> Resources:
        from .layers.estimate import stage_resources

        return stage_resources(self.module, self.rtl_params(use_dsp))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["resources"] = self.resources.to_dict()
        data["widths"] = asdict(self.widths)
        return data


@dataclass
class NetworkPlan:
    interval: int
    roofline: int
    input_beats: int
    board: Board
    layers: dict[str, LayerPlan] = field(default_factory=dict)
    overhead: Resources = field(default_factory=Resources)  # stages without lanes
    budget_share: float = BUDGET_SHARE
    relaxed: int = 0  # times the interval was relaxed to fit
    target_interval: int = 0  # the roofline or the user's frame rate, before relaxing
    below_roofline: bool = False  # a faster layout than the DSP roofline's fits (LUT multipliers)

    @property
    def dsp_budget(self) -> int:
        return int(self.board.dsp * self.budget_share)

    @property
    def multipliers(self) -> int:
        return sum(lp.multipliers for lp in self.layers.values())

    @property
    def dsp_multipliers(self) -> int:
        return sum(lp.multipliers for lp in self.layers.values() if lp.dsp)

    @property
    def paired_multipliers(self) -> int:
        """DSP products that share their DSP48 with another (a conv's output lanes in pairs, PACK)."""
        return sum(lp.paired_products for lp in self.layers.values())

    @property
    def ii_cycles(self) -> int:
        return max([self.input_beats] + [lp.cycles for lp in self.layers.values()])

    def total(self) -> Resources:
        return total(lp.resources for lp in self.layers.values()) + self.overhead

    def fit(self) -> dict:
        """Predicted use per resource against the board and the budget (DESIGN.md contract 12),
        with the planner's margin for the fitted resources."""
        return fit_summary(self.total(), self.board, self.budget_share, PLANNING_MARGIN)

    @property
    def fits(self) -> bool:
        return self.fit()["fits"]

    def fps(self) -> float:
        return self.board.clock_mhz * 1e6 / self.ii_cycles

    def to_dict(self) -> dict:
        return {"board": self.board.name, "interval_target": self.interval, "requested_interval": self.target_interval,
                "ii_cycles": self.ii_cycles, "roofline_cycles": self.roofline, "input_beats": self.input_beats,
                "dsp_budget": self.dsp_budget, "multipliers": self.multipliers,
                "dsp_multipliers": self.dsp_multipliers, "paired_multipliers": self.paired_multipliers,
                "relaxed": self.relaxed,
                "below_roofline": self.below_roofline,
                "fps_at_clock": round(self.fps(), 1), "clock_mhz": self.board.clock_mhz,
                "fit": self.fit(), "overhead": self.overhead.to_dict(),
                "layers": [lp.to_dict() for lp in self.layers.values()]}


def board_limits(board: Board) -> dict[str, float]:
    return {"LUT": board.lut, "FF": board.ff, "DSP": board.dsp, "BRAM36": board.bram36}


def fit_summary(resources: Resources, board: Board, budget_share: float = BUDGET_SHARE,
                margin: dict[str, float] | None = None) -> dict:
    """``used``, ``available``, ``share`` and ``budget`` per resource, ``over`` (the resources past
    the budget, less ``margin`` of it where given) and ``fits``: what plan.json, convert and verify
    print. The planner plans with PLANNING_MARGIN; verify judges a design against the budget itself."""
    used, available = resources.board_use(), board_limits(board)
    margin = margin or {}
    share = {k: round(used[k] / available[k], 3) for k in RESOURCES}
    over = [k for k in RESOURCES if used[k] > budget_share * (1 - margin.get(k, 0.0)) * available[k]]
    return {"board": board.name, "used": used, "available": available, "share": share, "budget_share": budget_share,
            **({"planning_margin": margin} if margin else {}), "over": over, "fits": not over}


def format_fit(fit: dict) -> str:
    """One line: ``LUT 31,200/53,200 (59 %), FF ... `` with the resources over budget marked."""
    parts = []
    for k in RESOURCES:
        mark = " OVER" if k in fit["over"] else ""
        parts.append(f"{k} {fit['used'][k]:,g}/{fit['available'][k]:,} ({fit['share'][k]:.0%}){mark}")
    return ", ".join(parts) + f" of {fit['board']} (budget {fit['budget_share']:.0%} each)"


# ---- the network's layers ---------------------------------------------------------------------

def layer_sizes(model: ModelWrapper) -> list[LayerPlan]:
    """Every layer whose cost depends on its lanes (conv, dense, global pool) or is fixed (window
    pool, resize): the row its kind's hardware model gives (``layer_plan``), in graph order."""
    kinds = [(node, op_kind(node.op_type)) for node in model.graph.node]
    return [kind.layer_plan(model, node) for node, kind in kinds if hasattr(kind, "layer_plan")]


# ---- lanes ----------------------------------------------------------------------------------------

def lane_options(layer: LayerPlan) -> list[tuple[int, int, int]]:
    return layer.model.lane_options(layer)


def engine_cycles(layer: LayerPlan, ci: int, po: int, kp: int) -> int:
    """Cycles per frame of the RTL engine (one step per cycle), as the Verilog modules count them."""
    return layer.model.cycles(layer, ci, po, kp)


def lanes_for(layer: LayerPlan, budget: int) -> tuple[int, int, int]:
    """The fewest multipliers whose cycles fit ``budget``; the most parallel choice when none
    does. Ties prefer output lanes in pairs where two products share a DSP48 (a conv's ``packs``:
    half the DSPs), then whole input pixels (ci), then adjacent positions (kp)."""
    packs = getattr(layer.model, "packs", None)

    def shares(o: tuple[int, int, int]) -> bool:
        return bool(packs and packs(layer, *o))

    options = sorted(lane_options(layer), key=lambda o: (o[0] * o[1] * o[2], not shares(o), -o[0], -o[2]))
    for ci, po, kp in options:
        if engine_cycles(layer, ci, po, kp) <= budget:
            return ci, po, kp
    return min(options, key=lambda o: (engine_cycles(layer, *o), o[0] * o[1] * o[2]))


def set_lanes(layer: LayerPlan, lanes: tuple[int, int, int]) -> None:
    layer.ci, layer.po, layer.kp = lanes
    layer.cycles = engine_cycles(layer, *lanes)
    layer.multipliers = layer.model.multipliers(layer, *lanes)
    if layer.multipliers:
        layer.reuse = hls4ml_reuse(layer.n_in, layer.outputs, layer.multipliers)


def apply_lanes(layer: LayerPlan, interval: int) -> None:
    """Every layer may take the whole interval, however few its output rows: frames overlap in
    every stage (FRAME_OVERLAP, docs/rtl.md), so a layer's last rows add to the latency, not to
    the interval. (Layers with fewer than 6 rows used to get proportionally less time: a 3-row
    layer a half, a dense layer a sixth; the foreign conv + dense-head net was then planned at
    6,144 cycles, 3,072 without it, and measured at plan + 1 both ways.)"""
    if not layer.pinned:
        set_lanes(layer, lanes_for(layer, interval))


def fewest_lanes(layer: LayerPlan) -> tuple[int, int, int]:
    return min(lane_options(layer), key=lambda o: (o[0] * o[1] * o[2], engine_cycles(layer, *o)))


def assign_dsps(layers: list[LayerPlan], dsp_budget: int) -> None:
    """Which layers' multipliers are DSP48s (a layer's lanes are all DSP or all LUT): the set
    within the budget whose LUT multipliers would cost the most LUTs (a 0/1 knapsack over DSPs,
    both sides priced by the layer's hardware model), the rest from LUTs. Layers whose module has
    no LUT multipliers (dense) always take DSPs."""
    for lp in layers:
        lp.dsp = True
    movable = [lp for lp in layers if lp.lut_multipliers_possible]
    in_dsp = {id(lp): lp.estimate(use_dsp=True) for lp in layers}
    # what the other layers take whatever the choice: dense lanes, and a global pool's divider
    # (no lanes, one DSP48; left out, MobileNet-V1 0.25 was laid out at 177 of 176)
    budget = dsp_budget - sum(in_dsp[id(lp)].dsp for lp in layers if lp not in movable)
    if sum(in_dsp[id(lp)].dsp for lp in movable) <= budget:
        return
    in_lut = {id(lp): lp.estimate(use_dsp=False) for lp in movable}
    best: dict[int, tuple[float, tuple[int, ...]]] = {0: (0.0, ())}  # DSPs used -> (LUTs saved, layers in DSPs)
    for i, lp in enumerate(movable):
        cost = int(math.ceil(in_dsp[id(lp)].dsp))
        value = (in_lut[id(lp)].lut + in_lut[id(lp)].lutram) - (in_dsp[id(lp)].lut + in_dsp[id(lp)].lutram)
        for used, (saved, chosen) in list(best.items()):
            spent = used + cost
            if spent <= budget and best.get(spent, (-1.0, ()))[0] < saved + value:
                best[spent] = (saved + value, chosen + (i,))
    chosen = set(max(best.values())[1])
    for i, lp in enumerate(movable):
        lp.dsp = i in chosen


def estimate_layers(layers: list[LayerPlan]) -> None:
    for lp in layers:
        lp.resources = lp.estimate()


def roofline_cycles(macs: int, input_beats: int, dsp: int) -> int:
    """The physical limit: one input beat per clock, or every DSP busy every cycle."""
    return max(input_beats, math.ceil(macs / dsp))


def fps_interval(board: Board, fps: float) -> int:
    """The interval (cycles) of ``fps`` frames per second at the board's clock."""
    if fps <= 0:
        raise PlanError(f"--fps {fps:g}: a frame rate must be positive")
    return max(1, math.floor(board.clock_mhz * 1e6 / fps))


# ---- the planner -------------------------------------------------------------------------------

def layout_at(layers: list[LayerPlan], interval: int, dsp_budget: int) -> None:
    for lp in layers:
        apply_lanes(lp, interval)
    assign_dsps(layers, dsp_budget)
    estimate_layers(layers)


def smallest_design(layers: list[LayerPlan], beats: int, board: Board, overhead: Resources,
                    budget_share: float) -> NetworkPlan:
    """Every unpinned layer at its fewest multipliers: if this does not fit, nothing does."""
    copies = [replace(lp) for lp in layers]
    for lp in copies:
        if not lp.pinned:
            set_lanes(lp, fewest_lanes(lp))
    plan = NetworkPlan(0, 0, beats, board, {lp.node: lp for lp in copies}, overhead, budget_share)
    assign_dsps(copies, plan.dsp_budget - int(overhead.dsp))
    estimate_layers(copies)
    plan.interval = plan.ii_cycles
    return plan


def refusal(smallest: NetworkPlan, layers: list[LayerPlan], beats: int, overhead: Resources, what: str) -> PlanError:
    """One line: the resource furthest over, its need, the board's budget, and the smallest preset
    board that would hold the same design."""
    fit = smallest.fit()
    worst = max(fit["over"], key=lambda k: fit["used"][k] / fit["available"][k])
    kept = PLANNING_MARGIN.get(worst, 0.0)
    limit = smallest.budget_share * (1 - kept) * fit["available"][worst]
    budget = f"{smallest.budget_share:.0%} of {fit['available'][worst]:,}" + (f", less {kept:.0%} for the model's error"
                                                                              if kept else "")
    holds = [b for b in sorted(BOARDS.values(), key=lambda b: (b.lut, b.bram36))
             if b.name != smallest.board.name
             and smallest_design(layers, beats, b, overhead, smallest.budget_share).fits]
    where = f"the smallest preset board that holds it: {holds[0].name}" if holds else \
        f"no preset board holds it ({', '.join(BOARDS)})"
    others = [k for k in fit["over"] if k != worst]
    also = f" (also over: {', '.join(others)})" if others else ""
    return PlanError(f"{what} does not fit {smallest.board.name} at any frame rate: {worst} needs "
                     f"{fit['used'][worst]:,g} of {limit:,.0f} ({budget})"
                     f" with the fewest multipliers per layer{also}; {where}")


def plan_layers(layers: list[LayerPlan], beats: int, board: Board, widths: dict[str, Widths] | Widths | None = None,
                overhead: Resources | None = None, interval: int | None = None, fps: float | None = None,
                pins: dict[str, tuple[int, int, int]] | None = None, budget_share: float = BUDGET_SHARE,
                what: str = "the network") -> NetworkPlan:
    """Lanes for every layer at the roofline interval (or ``interval``, or ``fps``), relaxed until
    every resource fits the budget; PlanError when nothing fits (see the module docstring).
    ``layers`` come from a graph (layer_sizes) or, before a model exists, from an architecture
    (hw/sizing.py); ``widths`` per layer (or one for all; default 8-bit operands) price them.

    Where a layer's widths let two products share a DSP48 (``LayerPlan.pairing``, a conv's PACK),
    the network is planned both ways and the paired plan is kept only where its interval is
    shorter: a pair costs LUTs and flip-flops, and its stage places slower on the ECP5 (docs/rtl.md,
    "Two products per DSP48"), so pairs are built where they buy rate, not where the same rate
    fits without them (MobileNet-V1 0.25 and the dense-head shape: the same interval either way)."""
    options = dict(overhead=overhead, interval=interval, fps=fps, pins=pins, budget_share=budget_share, what=what)
    single = [replace(lp, pairing=False) for lp in layers]
    try:
        unpaired = plan_some_way(single, beats, board, widths, **options)
    except PlanError:  # pinned lanes may fit only paired
        if not any(could_pair(lp) for lp in single):
            raise
        unpaired = None
    if unpaired is not None and not any(could_pair(lp) for lp in single):
        return adopt(layers, unpaired)
    for lp in layers:
        lp.pairing = True
    try:
        paired = plan_some_way(layers, beats, board, widths, **options)
    except PlanError:
        if unpaired is None:
            raise
        return adopt(layers, unpaired)
    if unpaired is None or paired.ii_cycles < unpaired.ii_cycles:
        return paired
    return adopt(layers, unpaired)


def could_pair(layer: LayerPlan) -> bool:
    """Whether some layout of ``layer`` would put two products in one DSP48 (its kind's ``packs``)."""
    packs = getattr(layer.model, "packs", None)
    return bool(packs) and any(packs(replace(layer, pairing=True), *o) for o in lane_options(layer))


def adopt(layers: list[LayerPlan], plan: NetworkPlan) -> NetworkPlan:
    """``plan``, made of copies of ``layers``, over ``layers`` themselves (the caller's objects)."""
    restore(layers, plan.layers.values())
    for lp in layers:
        src = plan.layers[lp.node]
        lp.pairing, lp.widths, lp.pinned = src.pairing, src.widths, src.pinned
    plan.layers = {lp.node: lp for lp in layers}
    return plan


def plan_some_way(layers: list[LayerPlan], beats: int, board: Board, widths: dict[str, Widths] | Widths | None = None,
                  overhead: Resources | None = None, interval: int | None = None, fps: float | None = None,
                  pins: dict[str, tuple[int, int, int]] | None = None, budget_share: float = BUDGET_SHARE,
                  what: str = "the network") -> NetworkPlan:
    """``plan_layers`` for one setting of the layers' ``pairing``."""
    overhead = overhead or Resources()
    for lp in layers:
        w = widths.get(lp.node, DEFAULT_WIDTHS) if isinstance(widths, dict) else (widths or DEFAULT_WIDTHS)
        lp.widths = w
        if pins and lp.node in pins:
            if tuple(pins[lp.node]) not in lane_options(lp):
                raise PlanError(f"plan file: {lp.node} cannot take lanes {tuple(pins[lp.node])} (ci, po, kp); "
                                f"its options divide its channels and kernel width")
            set_lanes(lp, tuple(pins[lp.node]))
            lp.pinned = True
    smallest = smallest_design(layers, beats, board, overhead, budget_share)
    if not smallest.fits:
        raise refusal(smallest, layers, beats, overhead, what)
    roofline = roofline_cycles(sum(lp.macs for lp in layers), beats, board.dsp)
    target = interval or (max(roofline, fps_interval(board, fps)) if fps else roofline)
    plan = NetworkPlan(target, roofline, beats, board, {lp.node: lp for lp in layers}, overhead, budget_share,
                       target_interval=target)
    dsp_budget = plan.dsp_budget - int(overhead.dsp)
    faster = faster_layout(plan, dsp_budget) if interval is None and fps is None else None
    for _ in range(MAX_RELAX_STEPS):
        layout_at(layers, plan.interval, dsp_budget)
        if plan.fits:
            break
        if plan.interval >= smallest.interval:
            restore(layers, smallest.layers.values())  # the smallest design fits: take it
            plan.interval = smallest.interval
            break
        plan.interval = min(smallest.interval, math.ceil(plan.interval * RELAX))
        plan.relaxed += 1
    else:  # relaxed MAX_RELAX_STEPS times without a fit: the smallest design fits, take it
        restore(layers, smallest.layers.values())
        plan.interval = smallest.interval
    if faster is not None and faster[0] < plan.ii_cycles:
        plan.interval, plan.relaxed, plan.below_roofline = faster[0], 0, True
        restore(layers, faster[1])
    return plan


def faster_layout(plan: NetworkPlan, dsp_budget: int) -> tuple[int, list[LayerPlan]] | None:
    """The fastest layout below the DSP roofline that fits (its interval and a copy of its
    layers), or None. Past the roofline the extra products are LUT multipliers, so a faster
    layout costs LUTs, but not always more of them: the lanes are divisors of the channels, and a
    faster layout may fit where a slower one does not (ResNet-8 with its searched widths: the
    55,296-cycle layout over the LUT budget, the 49,152 one within it). So every distinct layout below the roofline is
    laid out in turn, fastest last, until FASTER_MISSES in a row do not fit or one is far over."""
    layers = list(plan.layers.values())
    best, misses, interval = None, 0, plan.interval
    while misses < FASTER_MISSES and interval >= plan.input_beats:
        layout_at(layers, interval, dsp_budget)
        if plan.ii_cycles > interval:
            break  # a pinned layer, or one at its most parallel, sets the pace
        if plan.fits:
            best, misses = (plan.ii_cycles, [replace(lp) for lp in layers]), 0
        else:
            misses += 1
            if max(plan.fit()["share"].values()) > FASTER_GIVE_UP * plan.budget_share:
                break
        interval = plan.ii_cycles - 1
    return best


def restore(layers: list[LayerPlan], source) -> None:
    """Each layer's lanes, multipliers and resources as in ``source`` (copies of the same layers)."""
    by_node = {lp.node: lp for lp in source}
    for lp in layers:
        src = by_node[lp.node]
        lp.ci, lp.po, lp.kp, lp.cycles, lp.multipliers, lp.reuse, lp.dsp, lp.resources = (
            src.ci, src.po, src.kp, src.cycles, src.multipliers, src.reuse, src.dsp, src.resources)


def plan_network(model: ModelWrapper, board: Board, widths: dict[str, Widths] | Widths | None = None,
                 overhead: Resources | None = None, **options) -> NetworkPlan:
    """Lanes for every layer of a canonical graph (see plan_layers)."""
    _, c, h, w = model.get_tensor_shape(model.graph.input[0].name)
    return plan_layers(layer_sizes(model), c * h * w, board, widths, overhead, **options)


# ---- plan files ----------------------------------------------------------------------------------

def load_pins(path: str | Path) -> dict[str, tuple[int, int, int]]:
    """Lanes to pin from a plan file: a build's plan.json (its ``layers``) or ``{"Conv_0": {"ci": 1,
    "po": 8, "kp": 3}, ...}`` (FINN's folding config, in our terms)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PlanError(f"{path}: not a readable plan file ({exc})") from None
    rows = data.get("layers", data) if isinstance(data, dict) else None
    if isinstance(rows, list):
        rows = {row.get("node"): row for row in rows if isinstance(row, dict)}
    if not isinstance(rows, dict):
        raise PlanError(f"{path}: expected plan.json's 'layers' or an object of layer -> {{ci, po, kp}}")
    pins = {}
    for node, row in rows.items():
        try:
            pins[node] = (int(row.get("ci", 1)), int(row.get("po", 1)), int(row.get("kp", 1)))
        except (AttributeError, TypeError, ValueError):
            raise PlanError(f"{path}: layer {node}: lanes must be integers ci, po, kp") from None
    return pins


def load_plan(path: str | Path) -> dict:
    """A build's plan.json, read back (what convert planned: lanes, resources and fit)."""
    return json.loads(Path(path).read_text())


def check_pins(pins: dict[str, tuple[int, int, int]], layers: list[LayerPlan], source: str) -> None:
    known = {lp.node for lp in layers}
    unknown = sorted(set(pins) - known)
    if unknown:
        raise PlanError(f"{source}: no layer named {', '.join(unknown)} in this network (layers: {', '.join(sorted(known))})")


# ---- hls4ml --------------------------------------------------------------------------------------

def valid_reuse_factors(n_in: int, n_out: int) -> list[int]:
    """hls4ml's FPGABackend rule (fpga_backend.py ``_validate_reuse_factor``), without its
    O(n_in * n_out) loop: only divisors of n_in * n_out can qualify."""
    total_ = n_in * n_out
    divs = sorted({d for i in range(1, math.isqrt(total_) + 1) if total_ % i == 0 for d in (i, total_ // i)})
    ok = []
    for rf in divs:
        limit = math.ceil(total_ / min(n_in, rf))
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


__all__ = ["BUDGET_SHARE", "LayerPlan", "NetworkPlan", "PlanError", "Widths", "divisors", "plan_layers",
           "plan_network", "fit_summary", "format_fit", "load_pins", "load_plan"]
