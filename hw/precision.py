"""Automatic fixed-point precision: per-layer widths as small as the accuracy bar allows.

Every weight tensor, bias and layer output of the canonical graph is a *knob*: a fixed-point type
whose integer bits cover the calibration range and whose width the search picks. The search asks
a fast question many times: run the network with those types in ONNX Runtime (a *proxy*: weights
rounded in numpy, each layer output passed through round-half-even + saturate, exactly the casts
hls4ml's ``ap_fixed<W,I,AP_RND_CONV,AP_SAT>`` makes) and compare top-1 with the float model on
calibration images. One knob at a time, weights first, it binary-searches the smallest width that
keeps the bar. The hls4ml emulator then confirms the chosen design (see ``convert``).

Every 4th calibration image is held out (``held_out_split``): a design is accepted only when it
meets the bar on the search part and on the held-out part, each on its own, so a width that only
the images it was tuned on tolerate is refused. When even the widest design misses the guarded
bar but meets the user's own (plain agreement, ``Criterion.meets_bar``), it is built with a
warning instead of refused.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx.utils
from onnx import helper, numpy_helper
from qonnx.core.modelwrapper import ModelWrapper
from edgefpga.progress import progress_bar

from edgefpga.models.detect import stream_order

from .fixed import FixedType, integer_bits_for, parse_hls_type, type_for_range
from .graph import onnx_session
from .onnx_check import ConversionError
from .profile import TensorRange, run_batches, with_outputs

WEIGHT_BITS = (2, 16)
BIAS_BITS = (4, 16)
ACTIVATION_BITS = (4, 16)
OUTPUT_BITS = (8, 16)
PIXEL_TYPE = FixedType(8, 8, signed=False)  # 8-bit pixels in: 0..255 exactly
CONSTANT_BITS = 16  # the input normalization's scale and offset: two numbers, not worth searching


class PrecisionError(ConversionError):
    """No design meets the accuracy bar, or an override file is wrong."""


@dataclass(frozen=True)
class Knob:
    """One searched type: ``node``'s ``field`` (weight, bias or result) stored in ``tensor``."""

    node: str
    field: str
    tensor: str
    signed: bool
    max_abs: float
    bits: tuple[int, int]

    @property
    def name(self) -> str:
        return f"{self.node}.{self.field}"

    def type_at(self, width: int) -> FixedType:
        return type_for_range(width, self.max_abs, self.signed)


@dataclass
class Criterion:
    """The bar a design must meet on calibration images: top-1 agreement with the float model of at
    least ``agreement`` + ``margin``, counted with a guard band, and, when labels are known,
    accuracy at most ``max_accuracy_drop`` below float.

    The guard band: an image counts as agreeing only if it still would with ``guard`` times its
    quantization error on the winning margin. A greedy search tunes widths until the calibration
    set has just few enough flips, and unseen images then flip more: at guard 1.5 and no margin,
    designs at 99.5 % on 1024 ELPV calibration cells gave 99.1-99.9 % on the test cells. Guard 2
    with a 0.4-point margin kept the ELPV and the foreign test CNN at 99.85-100 % (docs/convert.md)."""

    agreement: float = 0.995
    max_accuracy_drop: float = 0.005
    guard: float = 2.0
    margin: float = 0.004

    @property
    def target(self) -> float:
        return min(1.0, self.agreement + self.margin)

    def passes(self, s: "Score") -> bool:
        """The search's bar: guarded agreement of at least ``target`` and the accuracy drop."""
        return s.guarded_agreement >= self.target and self.keeps_accuracy(s)

    def meets_bar(self, s: "Score") -> bool:
        """The user's own bar: plain top-1 agreement of at least ``agreement`` (no guard band, no
        margin) and the accuracy drop. The guard band and margin are the search's insurance for
        narrowing widths; a design that is not narrowed at all (the widest) needs only this."""
        return s.agreement >= self.agreement and self.keeps_accuracy(s)

    def keeps_accuracy(self, s: "Score") -> bool:
        return s.accuracy_drop is None or s.accuracy_drop <= self.max_accuracy_drop


@dataclass
class Precisions:
    """Resolved types: per initializer, per activation tensor (None: exact, hls4ml infers it) and per
    node field, the last being what the hls4ml configuration and the report show."""

    params: dict[str, FixedType] = field(default_factory=dict)
    tensors: dict[str, FixedType | None] = field(default_factory=dict)
    layers: dict[str, dict[str, FixedType]] = field(default_factory=dict)
    # where each param's and tensor's type comes from: "model" (a QONNX model's quantizers, and what
    # follows from them) or "search" (the precision search, and what follows from it); contract 13
    sources: dict[str, str] = field(default_factory=dict)

    def set_layer(self, node: str, field_name: str, value: FixedType | None) -> None:
        if value is not None:
            self.layers.setdefault(node, {})[field_name] = value

    def to_dict(self) -> dict:
        return {"params": {k: v.to_dict() for k, v in self.params.items()},
                "tensors": {k: v.to_dict() if v else None for k, v in self.tensors.items()},
                "layers": {n: {k: v.to_dict() for k, v in f.items()} for n, f in self.layers.items()},
                "sources": dict(self.sources)}

    @classmethod
    def from_dict(cls, raw: dict) -> "Precisions":
        return cls({k: FixedType.from_dict(v) for k, v in raw["params"].items()},
                   {k: FixedType.from_dict(v) if v else None for k, v in raw["tensors"].items()},
                   {n: {k: FixedType.from_dict(v) for k, v in f.items()} for n, f in raw["layers"].items()},
                   dict(raw.get("sources", {})))


def sole_consumer(model: ModelWrapper, tensor: str) -> onnx.NodeProto | None:
    consumers = model.find_consumers(tensor)
    return consumers[0] if len(consumers) == 1 else None


def param_range(model: ModelWrapper, name: str) -> float:
    return float(np.abs(model.get_initializer(name)).max())


def fused_activation(model: ModelWrapper, node: onnx.NodeProto) -> onnx.NodeProto | None:
    """The Relu / Clip that ``node``'s result feeds alone (and so is computed in ``node``'s own
    final cast: its type is the activation's plus a sign bit), or None. Which layers end in such a
    cast, and which activations fuse, their kinds say (``FUSES_ACTIVATION``, ``FUSED``)."""
    from .layers import act, op_kind

    kind = op_kind(node.op_type)
    if not getattr(kind, "FUSES_ACTIVATION", False) or node.output[0] in [o.name for o in model.graph.output]:
        return None
    consumer = sole_consumer(model, node.output[0])
    return consumer if consumer is not None and consumer.op_type in act.FUSED else None


def result_knob(model: ModelWrapper, node: onnx.NodeProto, ranges: dict[str, TensorRange], is_output: bool,
                owner: str | None = None) -> list[Knob]:
    """The searched type of ``node``'s result, unless an activation after it sets the type."""
    if fused_activation(model, node) is not None:
        return []
    out = node.output[0]
    # the network's output (scores) is always signed: the accelerator sends two's-complement words
    # (an unsigned 16-bit type does not fit them), and unseen inputs may give negative scores
    return [Knob(owner or node.name, "result", out, is_output or ranges[out].min < 0, ranges[out].max_abs,
                 OUTPUT_BITS if is_output else ACTIVATION_BITS)]


def param_knob(model: ModelWrapper, node: str, field_name: str, tensor: str) -> Knob:
    return Knob(node, field_name, tensor, True, param_range(model, tensor), WEIGHT_BITS if field_name == "weight"
                else BIAS_BITS)


WIRING = ("Flatten",)  # the one wiring op left in the canonical graph: it passes its input type through


def passes_through(node: onnx.NodeProto) -> bool:
    """Whether ``node``'s result has its input's type: wiring, or a kind's op that only selects
    values (its kind's ``PASS_THROUGH``: a max pool)."""
    from .layers import op_kind

    return node.op_type in WIRING or node.op_type in getattr(op_kind(node.op_type), "PASS_THROUGH", ())


def node_knobs(model: ModelWrapper, node: onnx.NodeProto, ranges: dict[str, TensorRange],
               is_output: bool) -> list[Knob]:
    """The knobs one node contributes (see module docstring): its layer kind's ``knobs``; raise
    for a node outside the table."""
    from .capabilities import capability
    from .layers import op_kind

    if node.op_type in WIRING:
        return []
    kind = op_kind(node.op_type)
    if kind is not None:
        return kind.knobs(model, node, ranges, is_output)
    capability(node.op_type)  # a KeyError names an op the table lacks
    raise ConversionError(f"node '{node.name}' ({node.op_type}) is not supported after canonicalization")


def build_knobs(model: ModelWrapper, ranges: dict[str, TensorRange]) -> list[Knob]:
    """All knobs of the graph, weights and biases first (they set multiplier sizes), then outputs
    in graph order."""
    final = model.graph.output[0].name
    knobs = [k for node in model.graph.node for k in node_knobs(model, node, ranges, node.output[0] == final)]
    order = {"weight": 0, "bias": 1, "result": 2}
    return sorted(knobs, key=lambda k: order[k.field])


def resolve(model: ModelWrapper, knobs: list[Knob], widths: dict[str, int], ranges: dict[str, TensorRange],
            fixed: dict[str, FixedType] | None = None) -> Precisions:
    """Turn knob widths (or fixed types from an override file) into every type of the design."""
    fixed = fixed or {}
    chosen = {k.name: fixed.get(k.name) or k.type_at(widths[k.name]) for k in knobs}
    by_tensor = {k.tensor: (k, chosen[k.name]) for k in knobs}
    p = Precisions()
    inp = model.graph.input[0].name
    p.tensors[inp] = PIXEL_TYPE
    for k in knobs:
        (p.params if k.field != "result" else p.tensors)[k.tensor] = chosen[k.name]
        p.set_layer(k.node, k.field, chosen[k.name])
    for node in model.graph.node:
        resolve_derived(model, node, p, by_tensor)
    return p


def largest_magnitude(t: FixedType) -> float:
    return max(abs(t.low), t.high)


def exact_accumulator(x: FixedType, w: FixedType, b: FixedType, n_in: int) -> FixedType:
    """An accumulator in which products, their sum and the bias are all exact, so the layer's
    only rounding is the final cast to its result type (the RTL mirrors that with one shift).
    Left to itself, hls4ml infers an accumulator per layer that is not always this wide."""
    frac = max(x.frac + w.frac, b.frac)
    bound = n_in * largest_magnitude(x) * largest_magnitude(w) + largest_magnitude(b)
    integer = integer_bits_for(bound, signed=True)
    return FixedType(integer + frac, integer, True)


def drop_unused_fraction(p: Precisions, layer: str, tensor: str, acc: FixedType) -> None:
    """A Conv result with more fractional bits than its exact accumulator holds only zeros in them:
    it gets the accumulator's fractional bits (same values, fewer bits), so the cast is a right
    shift, as the RTL implements it. A detector's last Conv (its scores, no activation after it)
    met this with small weights: the search gives a small range many fractional bits."""
    t = p.tensors.get(tensor)
    if t is not None and t.frac > acc.frac:
        p.tensors[tensor] = FixedType(t.integer + acc.frac, t.integer, t.signed)
        p.set_layer(layer, "result", p.tensors[tensor])


def pass_through(p: Precisions, node: onnx.NodeProto) -> None:
    """``node``'s result keeps its input's type (``passes_through``)."""
    p.tensors[node.output[0]] = p.tensors[node.input[0]]
    p.set_layer(node.name, "result", p.tensors[node.output[0]])


def fused_result(model: ModelWrapper, node: onnx.NodeProto, p: Precisions, by_tensor: dict) -> onnx.NodeProto | None:
    """A layer feeding a fused Relu / Clip gets the activation's type plus a sign bit (so only the
    activation saturates); returns that activation, or None."""
    activation = fused_activation(model, node)
    out = node.output[0]
    if activation is not None and out not in p.tensors:
        act_t = by_tensor[activation.output[0]][1]
        p.tensors[out] = FixedType(act_t.width + 1, act_t.integer + 1, True)
        p.set_layer(node.name, "result", p.tensors[out])
    return activation


def resolve_derived(model: ModelWrapper, node: onnx.NodeProto, p: Precisions, by_tensor: dict) -> None:
    """Types no knob sets: wiring keeps its input type; the rest its layer kind sets
    (``derive_types``: accumulators, a fused activation's result, constants of fixed width)."""
    from .layers import op_kind

    if node.op_type in WIRING:
        pass_through(p, node)
    else:
        op_kind(node.op_type).derive_types(model, node, p, by_tensor)


# ---- the proxy: the quantized network as an ONNX graph ------------------------------------------

def fake_quant_nodes(tensor: str, source: str, t: FixedType) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """``source`` cast to ``t`` (round half to even, saturate) written to ``tensor``."""
    consts = {"inv": 1.0 / t.step, "lo": t.low / t.step, "hi": t.high / t.step, "step": t.step}
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), f"{tensor}_q_{k}") for k, v in consts.items()]
    nodes = [helper.make_node("Mul", [source, f"{tensor}_q_inv"], [f"{tensor}_q_scaled"]),
             helper.make_node("Round", [f"{tensor}_q_scaled"], [f"{tensor}_q_round"]),
             helper.make_node("Clip", [f"{tensor}_q_round", f"{tensor}_q_lo", f"{tensor}_q_hi"], [f"{tensor}_q_clip"]),
             helper.make_node("Mul", [f"{tensor}_q_clip", f"{tensor}_q_step"], [tensor])]
    return nodes, inits


def proxy_graph(model: ModelWrapper, p: Precisions) -> onnx.ModelProto:
    """The float graph with quantized weights and a fake-quant after every typed layer output."""
    proto = with_outputs(model, [])
    inits = {i.name: i for i in proto.graph.initializer}
    for name, t in p.params.items():
        inits[name].CopyFrom(numpy_helper.from_array(
            t.quantize(numpy_helper.to_array(inits[name])).astype(np.float32), name))
    nodes = []
    for node in proto.graph.node:
        nodes.append(node)
        if node.op_type == "LeakyRelu":  # the slope as the hardware rounds it
            t = p.layers[node.name]["alpha"]
            for a in node.attribute:
                if a.name == "alpha":
                    a.f = float(t.quantize(a.f))
        t = p.tensors.get(node.output[0])
        if t is not None:
            raw = node.output[0] + "_float"
            q_nodes, q_inits = fake_quant_nodes(node.output[0], raw, t)
            node.output[0] = raw
            nodes.extend(q_nodes)
            proto.graph.initializer.extend(q_inits)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return proto


def output_classes(model: ModelWrapper) -> int:
    """Scores per output cell: the classes (axis 1 of the output, a vector's or a map's)."""
    return int(model.get_tensor_shape(model.graph.output[0].name)[1])


def as_cells(scores: np.ndarray, classes: int) -> np.ndarray:
    """Stream-ordered scores (N, cells * classes) as one row per output cell (N * cells, classes):
    a classifier has one cell per image, a detector's map many; agreement counts rows."""
    return scores.reshape(-1, classes)


def run_logits(proto: onnx.ModelProto, pixels: np.ndarray) -> np.ndarray:
    """Final outputs of a graph for (N, C, H, W) float pixels: (N, classes), or a map's scores in
    stream order (N, cells * classes)."""
    session = onnx_session(proto)
    return stream_order(np.concatenate([out[0] for out in run_batches(session, pixels, batch=128)]))


@dataclass
class Score:
    agreement: float
    guarded_agreement: float
    accuracy: float | None
    accuracy_drop: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def winning_margin(reference: np.ndarray) -> np.ndarray:
    """Per image, the reference's top-1 score minus its runner-up (how far from a flip it is)."""
    ordered = np.sort(reference, axis=1)
    return ordered[:, -1].astype(np.float64) - ordered[:, -2]


def guarded_agreeing(logits: np.ndarray, reference: np.ndarray, guard: float) -> np.ndarray:
    """Per image, whether its winning margin (reference top-1 minus runner-up) keeps its sign when
    the quantization error of that margin is multiplied by ``guard``."""
    rows = np.arange(len(reference))
    top = reference.argmax(1)
    runner_up = np.argsort(reference, axis=1)[:, -2]
    margin = reference[rows, top].astype(np.float64) - reference[rows, runner_up]
    error = (logits[rows, top].astype(np.float64) - logits[rows, runner_up]) - margin
    return margin + guard * error > 0


def guarded_agreement(logits: np.ndarray, reference: np.ndarray, guard: float) -> float:
    """Share of images that agree with the reference within the guard band (``guarded_agreeing``)."""
    return float(np.mean(guarded_agreeing(logits, reference, guard)))


def score(logits: np.ndarray, reference: np.ndarray, labels: np.ndarray | None, guard: float = 1.0,
          classes: int | None = None) -> Score:
    """Top-1 agreement with the reference logits (plain and guarded) and, with labels, accuracy
    and its drop from the reference. With ``classes`` fewer than the scores per image (a map),
    every output cell counts as one decision, and per-image labels do not apply."""
    if classes and logits.shape[1] != classes:
        logits, reference, labels = as_cells(logits, classes), as_cells(reference, classes), None
    agreement = float(np.mean(logits.argmax(1) == reference.argmax(1)))
    guarded = guarded_agreement(logits, reference, guard)
    if labels is None:
        return Score(agreement, guarded, None, None)
    accuracy = float(np.mean(logits.argmax(1) == labels))
    return Score(agreement, guarded, accuracy, float(np.mean(reference.argmax(1) == labels)) - accuracy)


@dataclass
class SearchResult:
    """The chosen widths and types; ``score`` on every calibration image, ``held_out`` on the
    held-out part alone (``held_out_split``); ``warning`` says why a design was built that misses
    the search's guarded bar (only the widest, see ``widest_warning``)."""

    widths: dict[str, int]
    precisions: Precisions
    score: Score
    evaluations: int
    trace: list[dict]
    held_out: Score
    held_out_images: int
    warning: str | None = None


def load_overrides(path: str | Path | None, knobs: list[Knob]) -> dict[str, FixedType]:
    """An override file: JSON ``{"Conv_0.weight": "ap_fixed<6,2>", "Relu_3.result": 12, ...}``.
    A type string fixes the type exactly; a number fixes the width (integer bits from calibration)."""
    if path is None:
        return {}
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PrecisionError(f"{path}: cannot read the precision override file ({exc})") from exc
    known = {k.name: k for k in knobs}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise PrecisionError(f"{path}: unknown layer field(s) {', '.join(unknown)}; valid: {', '.join(known)}")
    try:
        return {name: (known[name].type_at(int(v)) if isinstance(v, int) else parse_hls_type(str(v)))
                for name, v in raw.items()}
    except ValueError as exc:
        raise PrecisionError(f"{path}: {exc}") from exc


def failure_budget(n: int, target: float) -> int:
    """The most images of ``n`` that may miss the guarded agreement while the share still meets
    ``target`` (computed as ``Criterion.passes`` computes the share, so the two never disagree)."""
    return next(f for f in range(n + 1) if (n - (f + 1)) / n < target)


EARLY_STOP_BATCH = 128  # images per step of an evaluation that can stop early


def image_margin(reference: np.ndarray, classes: int) -> np.ndarray:
    """Per image, its most fragile decision's winning margin (a map: the smallest over its cells)."""
    return winning_margin(as_cells(reference, classes)).reshape(len(reference), -1).min(axis=1)


def evaluate_design(proto: onnx.ModelProto, feeds: dict[str, np.ndarray], reference: np.ndarray,
                    labels: np.ndarray | None, criterion: Criterion,
                    classes: int | None = None) -> tuple[bool, Score, int]:
    """Whether a design meets ``criterion``, its score and how many images that took. ``feeds``
    are the graph's inputs, one row per image: the pixels, or the tensors a prefix of the network
    computed (``PrefixCache``). It stops as soon as more images miss the guarded agreement than
    the bar allows: the answer is the one the whole set would give, and most rejected designs are
    rejected on the first batch when the images come most fragile first (see
    ``search_precisions``). A stopped design's score is over the images it saw. A map's
    decisions are its cells (``as_cells``)."""
    session = onnx_session(proto)
    n = len(reference)
    k = classes or reference.shape[1]
    budget = failure_budget(n * (reference.shape[1] // k), criterion.target)
    parts: list[np.ndarray] = []
    failures = 0
    for start in range(0, n, EARLY_STOP_BATCH):
        stop = min(n, start + EARLY_STOP_BATCH)
        logits = stream_order(session.run(None, {name: value[start:stop] for name, value in feeds.items()})[0])
        parts.append(logits)
        failures += int(np.sum(~guarded_agreeing(as_cells(logits, k), as_cells(reference[start:stop], k),
                                                 criterion.guard)))
        if failures > budget:
            s = score(np.concatenate(parts), reference[:stop], None if labels is None else labels[:stop],
                      criterion.guard, classes)
            return False, s, stop
    s = score(np.concatenate(parts), reference, labels, criterion.guard, classes)
    return criterion.passes(s), s, n


# ---- evaluating only what a knob changes ------------------------------------------------------

REUSE_PREFIX = True  # tests turn it off to show it changes the work, not the answer


def node_changes(model: ModelWrapper, a: Precisions, b: Precisions) -> list[bool]:
    """Per node (graph order), whether its part of the proxy differs between two designs: its
    parameters, its own types (result, slope) or the cast of its output."""
    params = {n for n in set(a.params) | set(b.params) if a.params.get(n) != b.params.get(n)}
    tensors = {t for t in set(a.tensors) | set(b.tensors) if a.tensors.get(t) != b.tensors.get(t)}
    layers = {n for n in set(a.layers) | set(b.layers) if a.layers.get(n) != b.layers.get(n)}
    return [node.name in layers or node.output[0] in tensors or bool(set(node.input) & params)
            for node in model.graph.node]


def cut_tensors(model: ModelWrapper, index: int) -> list[str]:
    """The tensors made before node ``index`` (or the graph input) that nodes from ``index`` on
    read: together they determine the rest of the network (a residual's skip included)."""
    nodes = model.graph.node
    before = {model.graph.input[0].name, *(o for node in nodes[:index] for o in node.output)}
    after = [i for node in nodes[index:] for i in node.input]
    return list(dict.fromkeys(t for t in after if t in before))


class PrefixCache:
    """While one knob is searched, the layers before the first one it changes compute the same
    thing for every candidate: run them once, keep the tensors at that cut (images in the search's
    order), and evaluate each candidate from the cut on. On ELPV most knobs sit behind its costly
    first layers.

    The cut of the next knob is reached from the last cut when it lies further down the network:
    everything before the last cut is still as it was (a knob changes nothing before its own cut),
    so only the layers between the two cuts run. Knobs come layer after layer (weights, biases,
    then results), so the prefixes of a whole search cost about three passes over the calibration
    images instead of one per knob (ELPV: 44 s of the search's 76 s before)."""

    def __init__(self, model: ModelWrapper, pixels: np.ndarray):
        self.model, self.pixels = model, pixels
        self.graph_input = model.graph.input[0].name
        self.index, self.feeds = 0, {self.graph_input: pixels}  # the last cut and its tensors

    def feeds_for(self, proto: onnx.ModelProto, index: int) -> dict[str, np.ndarray]:
        """The inputs of the part of the network from node ``index`` on, computed by ``proto`` (a
        proxy of the design as it stands) up to there."""
        if index == 0 or not REUSE_PREFIX:
            return {self.graph_input: self.pixels}
        if index < self.index:  # behind the last cut: from the pixels again
            self.index, self.feeds = 0, {self.graph_input: self.pixels}
        if index == self.index:
            return self.feeds
        cut = cut_tensors(self.model, index)
        carried = {t: self.feeds[t] for t in cut if t in self.feeds}  # a skip made before the last cut
        wanted = [t for t in cut if t not in carried]
        session = onnx_session(self.segment(proto, self.feeds, wanted))
        rows = len(self.pixels)
        values = [session.run(None, {t: v[s:s + 256] for t, v in self.feeds.items()}) for s in range(0, rows, 256)]
        computed = {t: np.concatenate([v[k] for v in values]) for k, t in enumerate(wanted)}
        self.index, self.feeds = index, {t: carried[t] if t in carried else computed[t] for t in cut}
        return self.feeds

    def suffix(self, proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> onnx.ModelProto:
        """``proto`` cut to what computes the output from ``feeds``."""
        if list(feeds) == [self.graph_input]:
            return proto
        return self.segment(proto, feeds, [o.name for o in proto.graph.output])

    def segment(self, proto: onnx.ModelProto, feeds: dict[str, np.ndarray], outputs: list[str]) -> onnx.ModelProto:
        """The part of ``proto`` that computes ``outputs`` from the tensors ``feeds`` holds."""
        typed = onnx.ModelProto()
        typed.CopyFrom(proto)  # the cut tensors as inputs need a type (float: the proxy computes in float)
        known = {v.name for v in typed.graph.value_info} | {i.name for i in typed.graph.input}
        typed.graph.value_info.extend(helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
                                      for t in [*feeds, *outputs] if t not in known)
        return onnx.utils.Extractor(typed).extract_model(list(feeds), outputs)


HOLD_OUT_EVERY = 4  # every 4th calibration image is held out (held_out_split)
HELD_OUT_RULE = (f"every {HOLD_OUT_EVERY}th calibration image (positions {HOLD_OUT_EVERY - 1}, "
                 f"{2 * HOLD_OUT_EVERY - 1}, ... in loading order); a design must meet the bar on these and on the "
                 "rest, each on its own")


def held_out_split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the search part and the held-out part of ``n`` calibration images: positions 3,
    7, 11, ... (every ``HOLD_OUT_EVERY``-th, in the order the images were loaded) are held out. A
    fixed rule, not a draw, so the same images always give the same parts; convert's calibration
    sample is itself a seeded draw kept in order, so the held-out quarter spreads over the whole
    set (and over every class of a folder read class by class)."""
    if n < HOLD_OUT_EVERY:
        raise PrecisionError(f"{n} calibration image(s): the precision search needs at least {HOLD_OUT_EVERY} (every "
                             f"{HOLD_OUT_EVERY}th is held out to judge the widths on images they were not tuned on)")
    held = np.arange(n) % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1
    return np.flatnonzero(~held), np.flatnonzero(held)


def search_order(reference: np.ndarray, classes: int) -> tuple[np.ndarray, dict[str, slice]]:
    """The order the search evaluates the calibration images in, and where each part lies in it:
    the search part, then the held-out part, each most fragile first (smallest winning margin of
    the float model, so that ``evaluate_design`` stops early on a design that flips too many)."""
    margins = image_margin(reference, classes)
    search, held = held_out_split(len(reference))
    order = np.concatenate([part[np.argsort(margins[part], kind="stable")] for part in (search, held)])
    return order, {"search": slice(0, len(search)), "held_out": slice(len(search), len(order))}


def evaluate_parts(proto: onnx.ModelProto, feeds: dict[str, np.ndarray], reference: np.ndarray,
                   labels: np.ndarray | None, criterion: Criterion, classes: int,
                   parts: dict[str, slice]) -> tuple[bool, dict]:
    """Whether a design meets ``criterion`` on every part of the calibration images, each part
    judged on its own (``evaluate_design``): a width that only the search part tolerates is
    refused. Also the trace entry: the images evaluated and, per part reached, its score. A part
    is evaluated only while the parts before it passed (the answer cannot change after a miss)."""
    entry: dict = {"images": 0, "passed": True}
    for name, rows in parts.items():
        ok, s, seen = evaluate_design(proto, {t: v[rows] for t, v in feeds.items()}, reference[rows],
                                      None if labels is None else labels[rows], criterion, classes)
        entry[name] = {**s.to_dict(), "images": seen, "passed": ok}
        entry["images"] += seen
        if not ok:
            entry["passed"] = False
            break
    return entry["passed"], entry


def part_scores(logits: np.ndarray, reference: np.ndarray, labels: np.ndarray | None, criterion: Criterion,
                classes: int, parts: dict[str, slice]) -> dict[str, Score]:
    """A design's full score on each part of the calibration images (no early stop)."""
    return {name: score(logits[rows], reference[rows], None if labels is None else labels[rows], criterion.guard,
                        classes) for name, rows in parts.items()}


def widest_warning(scores: dict[str, Score], criterion: Criterion) -> str:
    """Why the widest design is built though it misses the search's guarded bar: it meets the
    user's own bar (``Criterion.meets_bar``) on both parts, and refusing it would help no one (no
    narrower design can do better). Raise ``PrecisionError`` when it misses the user's bar too."""
    search, held = scores["search"], scores["held_out"]
    seen = (f"top-1 agreement {search.agreement:.2%} on the search part and {held.agreement:.2%} on the held-out part; "
            f"{search.guarded_agreement:.2%} and {held.guarded_agreement:.2%} with the x{criterion.guard:g} guard band"
            + (f"; accuracy drop {search.accuracy_drop:.2%} and {held.accuracy_drop:.2%}"
               if search.accuracy_drop is not None else ""))
    widest = f"the widest types ({WEIGHT_BITS[1]}-bit weights, {ACTIVATION_BITS[1]}-bit activations)"
    if not all(criterion.meets_bar(s) for s in scores.values()):
        raise PrecisionError(f"even {widest} give {seen}, below the {criterion.agreement:.2%} agreement bar"
                             + (f" or the {criterion.max_accuracy_drop:.2%} accuracy drop" if search.accuracy_drop
                                is not None else "") + ": use more calibration images, lower --agreement, or see "
                             "docs/convert.md")
    return (f"{widest} meet the {criterion.agreement:.2%} bar but not the search's {criterion.target:.2%} with the "
            f"guard band ({seen}): built at the widest types, not narrowed; unseen images may disagree more often "
            "than the bar allows: check with `edgefpga verify` on other images, or add calibration images")


def search_precisions(model: ModelWrapper, knobs: list[Knob], ranges: dict[str, TensorRange],
                      pixels: np.ndarray, labels: np.ndarray | None, criterion: Criterion,
                      overrides: dict[str, FixedType] | None = None, progress: bool = False) -> SearchResult:
    """Greedy per-knob binary search for the smallest widths that keep ``criterion`` on both the
    search part and the held-out part of the calibration images (``held_out_split``,
    ``evaluate_parts``); overridden knobs stay as given. When the widest design misses the bar but
    meets the user's own, it is returned unsearched with a warning (``widest_warning``). Each part
    is evaluated most fragile first (smallest winning margin of the float model), so a design
    that flips too many is rejected after its first batch (``evaluate_design``): about 40 % less
    work on ELPV, with the same widths as evaluating every image. While a knob is searched, the
    layers before the first one it changes run once (``PrefixCache``)."""
    overrides = overrides or {}
    reference = run_logits(with_outputs(model, []), pixels)
    classes = output_classes(model)
    order, parts = search_order(reference, classes)
    pixels, reference = pixels[order], reference[order]
    labels = None if labels is None else labels[order]
    widths = {k.name: k.bits[1] for k in knobs}
    trace: list[dict] = []
    prefixes = PrefixCache(model, pixels)
    feeds = {model.graph.input[0].name: pixels}

    def evaluate(label: str) -> bool:
        proto = prefixes.suffix(proxy_graph(model, resolve(model, knobs, widths, ranges, overrides)), feeds)
        ok, entry = evaluate_parts(proto, feeds, reference, labels, criterion, classes, parts)
        trace.append({"try": label, **entry})
        return ok

    def result(searched: bool) -> SearchResult:
        """The design as it stands, scored on every image and on each part; unsearched (the widest
        missed the bar), built with ``widest_warning``'s warning or refused."""
        final = resolve(model, knobs, widths, ranges, overrides)
        logits = run_logits(proxy_graph(model, final), pixels)
        scores = part_scores(logits, reference, labels, criterion, classes, parts)
        warning = None if searched else widest_warning(scores, criterion)
        held = parts["held_out"]
        return SearchResult(widths, final, score(logits, reference, labels, criterion.guard, classes), len(trace) + 1,
                            trace, scores["held_out"], held.stop - held.start, warning)

    if not evaluate("widest"):
        return result(searched=False)
    searchable = [k for k in knobs if k.name not in overrides]
    for knob in progress_bar(searchable, progress=progress, desc="precision search", unit="layer"):
        low, high = knob.bits[0], widths[knob.name]
        if low < high:
            narrowest = resolve(model, knobs, {**widths, knob.name: low}, ranges, overrides)
            current = resolve(model, knobs, widths, ranges, overrides)
            changes = node_changes(model, narrowest, current)
            index = changes.index(True) if any(changes) else 0  # a knob a derived type overrides changes nothing
            feeds = prefixes.feeds_for(proxy_graph(model, current), index)
        while low < high:
            widths[knob.name] = (low + high) // 2
            ok = evaluate(f"{knob.name}={widths[knob.name]}")
            low, high = (low, widths[knob.name]) if ok else (widths[knob.name] + 1, high)
        widths[knob.name] = high
    return result(searched=True)
