"""``edgefpga convert``: a small CNN (ONNX) to an hls4ml accelerator project with automatically
chosen fixed-point types, and its bit-accurate emulator.

Like FINN's builder, conversion is an ordered list of named steps (``STEPS``); each reads what
earlier steps left in the build folder / context and writes its own artifact:

    build/<name>/
      model/        source.onnx, card.json (with any assumptions), canonical.onnx, channels_last.onnx
      calibration/  ranges.json (profile), search.json (every design tried)
      hls/          the hls4ml project (firmware/, build scripts, board driver)
      rtl/          open Verilog of the same design: manifest.json, src/*.v, ROM files src/*.mem
      precisions.json  every chosen type (weights, biases, accumulators, layer outputs)
      report.json   per-layer types, sizes, cycle estimates, emulator agreement; report.md, ranges.png

A failing step removes the folder it was writing (an older build folder there is put back), so
no half-written build is ever left behind.
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from edgefpga import __version__
from edgefpga.models.card import CARD_FILE, MODEL_FILE, InputSpec, ModelCardError, defect_classes_of, load_card
from edgefpga.models.imagefiles import Skips

from . import hls
from .capabilities import emulator_gaps
from .boards import Board, get_board
from .fixed import FixedType
from .graph import OUTPUT_ACTIVATION, canonical_graph, channels_last
from .images import ImageSet, load_image_set
from .intmodel import IntegerModel
from .onnx_check import ConversionError, check_onnx
from .precision import HELD_OUT_RULE, Criterion, Precisions, as_cells, build_knobs, load_overrides, output_classes, \
    proxy_graph, run_logits, score, search_precisions, stream_order
from .plan import BUDGET_SHARE, SEARCH_FLOOR, NetworkPlan, PlanError, check_pins, estimate_latency, format_fit, \
    layer_sizes, load_pins, plan_network
from .profile import TensorRange, profile_activations, with_outputs
from .qdq_in import OUTPUT_SCALE, OUTPUT_TENSOR, OUTPUT_ZERO, fit_input_quantizer, impose_input_types, is_lowered_qdq, metadata
from .qonnx_in import is_lowered_qonnx, model_precisions, qonnx_outputs, reference_graph

REPORT_FILE = "report.json"
DEFAULT_AGREEMENT = 0.995
PRECISIONS_FILE = "precisions.json"  # every type of the design, keyed by canonical graph names
PLAN_ROUNDS = 4  # plans with the lane-less stages priced at the previous plan's interval (step_plan_parallelism)
REFERENCE_FILE = "reference.onnx"  # a quantized model's own arithmetic (QONNX), raw pixels in: verify's reference


@dataclass
class ConvertConfig:
    """What ``edgefpga convert`` asks of the user; the defaults are what a PYNQ-Z2 user wants."""

    board: str = "pynq-z2"
    calibration: str | None = None  # image source (see images.py); ELPV cards default to elpv:train
    calibration_images: int = 1024
    agreement: float | None = None  # None: the card's "convert.agreement", else DEFAULT_AGREEMENT
    max_accuracy_drop: float = 0.005
    guard: float = 2.0
    margin: float = 0.004
    overrides: Path | None = None
    emulator_images: int = 200
    emulator: bool = True  # compile hls4ml's C simulation (g++); False: the integer model stands in (verify compiles it)
    scale: float | None = None  # normalization for a bare .onnx (a card's own values win)
    mean: float | None = None
    std: float | None = None
    classes: list[str] | None = None
    seed: int = 0
    progress: bool = True
    fps: float | None = None  # a slower, smaller design than the fastest that fits
    plan: Path | None = None  # a plan file pinning layers' lanes (a build's plan.json, or {layer: {ci, po, kp}})
    budget_share: float = BUDGET_SHARE  # of each of the board's LUT, FF, DSP and block RAM
    skips: Skips | None = None  # where a calibration folder's unusable files go; None: the first one stops conversion


@dataclass
class ModelSource:
    """What conversion knows about the model: from its card, or assumed for a bare .onnx."""

    name: str
    onnx_path: Path
    spec: InputSpec
    classes: list[str]
    card: dict | None
    assumed: list[str] = field(default_factory=list)

    @property
    def default_calibration(self) -> str | None:
        """The card's own calibration source, else the ELPV training split for ELPV models."""
        card = self.card or {}
        if card.get("calibration"):
            return card["calibration"]
        return "elpv:train" if card.get("dataset", {}).get("name") == "ELPV" else None


@dataclass
class BuildContext:
    """Carried from step to step; everything worth keeping is also written to ``out``."""

    source_arg: str
    out: Path
    cfg: ConvertConfig
    board: Board | None = None
    source: ModelSource | None = None
    onnx_model: onnx.ModelProto | None = None
    canonical: object = None  # qonnx ModelWrapper
    calibration: ImageSet | None = None
    ranges: dict[str, TensorRange] = field(default_factory=dict)
    precisions: Precisions | None = None
    plan: NetworkPlan | None = None
    hls_model: object = None
    emulator: object = None
    report: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    log: Callable[[str], None] = print

    def write_json(self, relative: str, data) -> Path:
        path = self.out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n")
        return path


def read_model_source(arg: str, cfg: ConvertConfig) -> ModelSource:
    """A model folder with a card (or zoo name resolved by the CLI), or a bare .onnx."""
    path = Path(arg)
    if path.is_dir():
        card = load_card(path)
        return ModelSource(card.name, card.model_path, card.input, card.classes, card.raw)
    if path.suffix != ".onnx":
        raise ConversionError(f"{arg}: expected a model folder (model.onnx + card.json) or an .onnx file")
    _, shape = check_onnx(path)
    assumed = []
    norm = {"scale": cfg.scale, "mean": cfg.mean, "std": cfg.std}
    defaults = {"scale": 1.0, "mean": 0.0, "std": 1.0}
    for key, value in norm.items():
        if value is None:
            norm[key] = defaults[key]
            assumed.append(f"input.{key} = {defaults[key]} (no card, no --{key}): the network gets 8-bit pixels as they are")
    color = "gray" if shape[1] == 1 else "bgr"
    spec = InputSpec(shape[1], shape[2], shape[3], color, "area", norm["scale"], norm["mean"], norm["std"])
    assumed.append(f"input.color = {color} (from {shape[1]} input channel(s)), resize = area")
    classes = cfg.classes
    if classes is None:
        out_dim = check_onnx(path)[0].graph.output[0].type.tensor_type.shape.dim[-1].dim_value
        classes = [f"class{i}" for i in range(out_dim)]
        assumed.append(f"classes = {classes} (no card, no --classes)")
    return ModelSource(path.stem, path, spec, classes, None, assumed)


# ---- the steps -------------------------------------------------------------------------------

def step_check_onnx(ctx: BuildContext) -> None:
    """Refuse what the flow cannot stream, before anything else; keep a copy of the input."""
    ctx.board = get_board(ctx.cfg.board)
    ctx.source = read_model_source(ctx.source_arg, ctx.cfg)
    if ctx.cfg.agreement is None:  # a card may lower the bar (reference shapes: random weights, near-ties)
        ctx.cfg.agreement = float((ctx.source.card or {}).get("convert", {}).get("agreement", DEFAULT_AGREEMENT))
    ctx.onnx_model, shape = check_onnx(ctx.source.onnx_path)
    spec = ctx.source.spec
    if shape[1:] != [spec.channels, spec.height, spec.width]:
        raise ConversionError(f"{ctx.source.onnx_path}: input shape {shape} does not match the card's "
                              f"{[1, spec.channels, spec.height, spec.width]}")
    (ctx.out / "model").mkdir(parents=True)
    shutil.copyfile(ctx.source.onnx_path, ctx.out / "model" / "source.onnx")
    card = dict(ctx.source.card or {"name": ctx.source.name, "classes": ctx.source.classes})
    card["input"] = spec.to_dict()
    card["assumed"] = ctx.source.assumed
    ctx.write_json(f"model/{CARD_FILE}", card)


def step_canonicalize(ctx: BuildContext) -> None:
    """qonnx cleanup, folds, normalization in front (raw 8-bit pixels in), MatMul + Add dense."""
    spec = ctx.source.spec
    ctx.canonical = canonical_graph(ctx.onnx_model, str(ctx.source.onnx_path), spec.scale,
                                    list(spec.channel_mean), list(spec.channel_std))
    if is_lowered_qdq(ctx.canonical):  # the input quantizer on raw pixels, with the normalization in front
        misses = fit_input_quantizer(ctx.canonical, spec, str(ctx.source.onnx_path))
        ctx.report["input_quantizer"] = {"pixel_values_one_step_away": misses, "of": 256 * spec.channels}
        if misses:
            ctx.log(f"[convert]   warning: the input quantizer lands one step away from ONNX Runtime's on {misses} of "
                    f"{256 * spec.channels} pixel values (ties ONNX Runtime's float rounding decides; docs/convert.md)")
    ctx.canonical.save(str(ctx.out / "model" / "canonical.onnx"))


def step_load_calibration(ctx: BuildContext) -> None:
    """Calibration images from the train split (or the user's set), as 8-bit pixels."""
    source = ctx.cfg.calibration or ctx.source.default_calibration
    if source is None:
        raise ConversionError(f"{ctx.source_arg}: no calibration images: pass --calibration with a folder of "
                              "images or an .npz (the precision search needs real inputs)")
    images = load_image_set(source, ctx.source.spec, ctx.source.classes, ctx.cfg.skips)
    if ctx.cfg.skips:
        ctx.report["calibration_skipped"] = ctx.cfg.skips.record()  # named in report.json, not only on stderr
    ctx.calibration = images.take(ctx.cfg.calibration_images, ctx.cfg.seed)
    check_canonical_matches_source(ctx)


def check_canonical_matches_source(ctx: BuildContext) -> None:
    """The rewritten graph must compute what the user's graph computes (float, first 32 images)."""
    from edgefpga.models.preprocess import normalize

    pixels = ctx.calibration.pixels[:32]
    ours = run_logits(with_outputs(ctx.canonical, []), pixels.astype(np.float32))
    activation = ctx.canonical.get_metadata_prop(OUTPUT_ACTIVATION)
    if activation:
        ours = softmax(ours) if activation == "softmax" else 1.0 / (1.0 + np.exp(-ours))
        ctx.report["notes"] = [f"the final {activation.capitalize()} was removed: the accelerator returns the scores "
                               "before it (same ranking); the runtime applies it"]
    ctx.report["output_activation"] = activation or "none"
    theirs = run_source(ctx.onnx_model, normalize(pixels, ctx.source.spec))
    diff = float(np.abs(ours - theirs).max())
    ctx.report["canonical_max_abs_diff"] = diff
    if diff > 1e-3 * max(1.0, float(np.abs(theirs).max())):
        raise ConversionError(f"{ctx.source.onnx_path}: the cleaned-up graph differs from the original by {diff:.3g}; "
                              "please report this model")


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def run_source(model: onnx.ModelProto, inputs: np.ndarray, output: str | None = None,
               output_type: int = onnx.TensorProto.FLOAT) -> np.ndarray:
    """The user's own graph in ONNX Runtime, one image at a time (its batch size may be fixed;
    NCHW ``inputs`` are given channels-last to a graph that takes NHWC)."""
    from .graph import onnx_session
    from .onnx_check import input_transpose

    if input_transpose(model) is not None:
        inputs = np.ascontiguousarray(inputs.transpose(0, 2, 3, 1))
    if output is not None:  # a tensor inside the graph, read as an output of its own
        model = onnx.ModelProto.FromString(model.SerializeToString())
        model.graph.output.insert(0, onnx.helper.make_tensor_value_info(output, output_type, None))
    session = onnx_session(model)
    name = session.get_inputs()[0].name
    outputs = [session.run(None, {name: inputs[i:i + 1]})[0] for i in range(len(inputs))]
    return stream_order(np.concatenate(outputs))


def step_profile(ctx: BuildContext) -> None:
    """Value range of every tensor on the calibration images (sets integer bits)."""
    ctx.ranges = profile_activations(ctx.canonical, ctx.calibration.pixels.astype(np.float32), ctx.cfg.progress)
    ctx.write_json("calibration/ranges.json", {t: r.to_dict() for t, r in ctx.ranges.items()})


def step_search_precision(ctx: BuildContext) -> None:
    """Smallest per-layer widths meeting the agreement and accuracy bar (precision.py), or a quantized model's own."""
    criterion = Criterion(ctx.cfg.agreement, ctx.cfg.max_accuracy_drop, ctx.cfg.guard, ctx.cfg.margin)
    if is_lowered_qonnx(ctx.canonical):
        model_types(ctx, criterion)
        return
    knobs = build_knobs(ctx.canonical, ctx.ranges)
    overrides = load_overrides(ctx.cfg.overrides, knobs)
    result = search_precisions(ctx.canonical, knobs, ctx.ranges, ctx.calibration.pixels.astype(np.float32),
                               ctx.calibration.labels, criterion, overrides, ctx.cfg.progress)
    ctx.precisions = result.precisions
    ctx.report["precision_search"] = {
        "criterion": asdict(criterion), "calibration": {"source": ctx.calibration.source, "n": len(ctx.calibration),
                                                        "labels": ctx.calibration.labels is not None},
        "held_out": {"n": result.held_out_images, "rule": HELD_OUT_RULE},
        "evaluations": result.evaluations, "images_evaluated": sum(e["images"] for e in result.trace),
        "overrides": {k: str(v) for k, v in overrides.items()},
        "widths": result.widths, "proxy_on_calibration": result.score.to_dict(),
        "proxy_on_held_out": result.held_out.to_dict(), "warning": result.warning}
    if result.warning:
        ctx.log(f"[convert]   warning: {result.warning}")
    ctx.write_json("calibration/search.json", {"widths": result.widths, "trace": result.trace,
                                               "knobs": [asdict(k) for k in knobs]})
    result.precisions.sources = {name: "search" for name in (*result.precisions.params, *result.precisions.tensors)}
    ctx.write_json(PRECISIONS_FILE, result.precisions.to_dict())


def model_types(ctx: BuildContext, criterion: Criterion) -> None:
    """A QONNX model's widths and scales are the user's (contract 13): no search; every type is read
    from its quantizers (hw/qonnx_in.py), and model/reference.onnx keeps what qonnx computes."""
    if ctx.cfg.overrides is not None:
        raise ConversionError(f"{ctx.cfg.overrides}: a quantized model's types are its own; --overrides applies "
                              "to the precision search, which does not run for it")
    qdq = is_lowered_qdq(ctx.canonical)
    ctx.precisions = model_precisions(ctx.canonical, ctx.ranges, str(ctx.source.onnx_path))
    if qdq:
        impose_input_types(ctx.canonical, ctx.precisions)
        ctx.report["output_dequantize"] = {  # the backends return scale * (q - zero_point) (runtime/backends/base.py)
            "scale": float(metadata(ctx.canonical, OUTPUT_SCALE)), "zero_point": int(metadata(ctx.canonical, OUTPUT_ZERO)),
            "why": "the accelerator returns the output quantizer's integers q; the scores are scale * (q - zero_point)"}
    onnx.save(reference_graph(ctx.canonical, ctx.precisions), str(ctx.out / "model" / REFERENCE_FILE))
    ctx.report["precision_search"] = {
        "criterion": asdict(criterion),
        "skipped": ("QDQ model: its own scales and zero points, each tensor in units of its scale" if qdq
                    else "QONNX model: its own widths, scales and zero points"),
        "source": "model", "reference": f"model/{REFERENCE_FILE} (" + (
            "the model's integer arithmetic as float ONNX; ONNX Runtime on the QDQ file is checked separately)" if qdq
            else "what qonnx computes on the model)"),
        "calibration": {"source": ctx.calibration.source, "n": len(ctx.calibration),
                        "labels": ctx.calibration.labels is not None}}
    ctx.write_json(PRECISIONS_FILE, ctx.precisions.to_dict())


def pins_of(ctx: BuildContext) -> dict[str, tuple[int, int, int]]:
    if ctx.cfg.plan is None:
        return {}
    pins = load_pins(ctx.cfg.plan)
    check_pins(pins, layer_sizes(ctx.canonical), str(ctx.cfg.plan))
    return pins


def step_check_fit(ctx: BuildContext) -> None:
    """The smallest design (fewest multipliers, narrowest widths the search may choose) must fit the board."""
    plan = plan_network(ctx.canonical, ctx.board, SEARCH_FLOOR, pins=pins_of(ctx), budget_share=ctx.cfg.budget_share,
                        what=str(ctx.source.onnx_path), interval=1 << 62)
    ctx.report["fit_gate"] = {"widths": "narrowest the search may choose (2-bit weights, 4-bit activations)",
                              "smallest_design": plan.fit()}


def step_plan_parallelism(ctx: BuildContext) -> None:
    """Lanes per layer (RTL and hls4ml reuse), DSP or LUT multipliers, for the fastest design that fits the board."""
    from .layers.estimate import stage_resources
    from .layers.base import total
    from .rtlgen import fixed_stages, layer_widths

    widths = layer_widths(ctx.canonical, ctx.precisions)
    options = dict(pins=pins_of(ctx), fps=ctx.cfg.fps, budget_share=ctx.cfg.budget_share,
                   what=str(ctx.source.onnx_path))
    # the stages without lanes are priced as the RTL builds them for the plan's interval (a residual
    # join adds fewer channels a cycle where the interval is long): planned again until the interval
    # they were priced at is the one planned
    plan = plan_network(ctx.canonical, ctx.board, widths, **options)
    for _ in range(PLAN_ROUNDS):
        overhead = total(stage_resources(m, prm) for m, prm in fixed_stages(ctx.canonical, ctx.precisions, plan))
        again = plan_network(ctx.canonical, ctx.board, widths, overhead, **options)
        settled, plan = again.ii_cycles == plan.ii_cycles, again
        if settled:
            break
    ctx.plan = plan
    ii = plan.ii_cycles
    fit = plan.fit()
    ctx.report["estimate"] = {
        "ii_cycles": ii, "latency_cycles": estimate_latency(plan), "roofline_cycles": plan.roofline,
        "ii_over_roofline": round(ii / plan.roofline, 3), "multipliers": plan.multipliers,
        "dsp_multipliers": plan.dsp_multipliers, "paired_multipliers": plan.paired_multipliers,
        "dsp_budget": plan.dsp_budget, "relaxed_to_fit": plan.relaxed,
        "requested_interval": plan.target_interval, "fps_at_clock": round(ctx.board.clock_mhz * 1e6 / ii, 1),
        "clock_mhz": ctx.board.clock_mhz, "fit": fit,
        "note": "planned engine cycles of the RTL and resources predicted by each layer's hardware model "
                "(hw/plan.py, hw/layers); the clock is the board's nominal one, not a placed-and-routed one; "
                "`edgefpga verify` measures exact cycles in RTL simulation, `--resources` counts with Yosys"}
    ctx.write_json("plan.json", plan.to_dict())
    why = f", relaxed {plan.relaxed}x to fit" if plan.relaxed else ""
    ctx.log(f"[convert]   planned II {ii:,} cycles ({ii / plan.roofline:.2f}x the roofline{why}): "
            f"{ctx.report['estimate']['fps_at_clock']:,.0f} frames/s at the nominal {ctx.board.clock_mhz:g} MHz "
            "(not placed and routed)")
    ctx.log(f"[convert]   predicted: {format_fit(fit)}")


def output_type(ctx: BuildContext) -> FixedType:
    return ctx.precisions.tensors[ctx.canonical.graph.output[0].name]


def step_hls_project(ctx: BuildContext) -> None:
    """The hls4ml project (io_stream, 8-bit pixel input) for the board, where hls4ml can represent the model."""
    gaps = emulator_gaps(ctx.canonical)
    ctx.report["hls"] = {"project": None if gaps else "hls", "backend": ctx.board.backend, "io_type": "io_stream",
                         "strategy": "Resource", "not_generated_because": gaps}
    if gaps:
        return
    cl = channels_last(ctx.canonical)
    cl.save(str(ctx.out / "model" / "channels_last.onnx"))
    ctx.hls_model = hls.convert(cl, ctx.precisions, list(ctx.plan.layers.values()), ctx.board, ctx.out / "hls",
                                output_type(ctx))


def step_compile_emulator(ctx: BuildContext) -> None:
    """g++ C simulation of the project: the bit-accurate emulator (skipped without an hls4ml project,
    or with ``emulator`` off: a g++ build of tens of seconds that `verify` makes when it checks it)."""
    if ctx.report["hls"]["project"] is None or not ctx.cfg.emulator:
        return
    start = time.perf_counter()
    spec = ctx.source.spec
    ctx.emulator = hls.Emulator.load(ctx.out / "hls", [1, spec.channels, spec.height, spec.width])
    ctx.report["emulator_compile_s"] = round(time.perf_counter() - start, 1)


def step_check_emulator(ctx: BuildContext) -> None:
    """The real arithmetic against the search's promise: the hls4ml emulator (where there is one)
    must equal the integer model, which the RTL implements, bit for bit on calibration images, and
    the integer model must agree with the float model about as often as the bar says (the search
    gated the agreement on all calibration images; this sample may differ by chance, so it fails
    only beyond three standard deviations)."""
    check = ctx.calibration.take(ctx.cfg.emulator_images, ctx.cfg.seed + 1)
    pixels = check.pixels.astype(np.float32)
    integer = IntegerModel(ctx.canonical, ctx.precisions).run(check.pixels).real
    quantized = is_lowered_qonnx(ctx.canonical)
    reference = run_logits(onnx.load(str(ctx.out / "model" / REFERENCE_FILE)) if quantized
                           else with_outputs(ctx.canonical, []), pixels)
    if is_lowered_qdq(ctx.canonical):
        check_against_onnxruntime(ctx, check, integer)
    elif quantized:
        check_against_qonnx(ctx, check, integer)
    proxy = run_logits(proxy_graph(ctx.canonical, ctx.precisions), pixels)
    row = {"n": len(check), "model": "integer model (hw/intmodel.py)"}
    if ctx.emulator is not None:
        emulated = ctx.emulator.predict(check.pixels, ctx.cfg.progress)
        mismatched = int(np.sum(~np.all(emulated == integer, axis=1)))
        row.update(model="hls4ml emulator", integer_model_mismatched_images=mismatched)
        if mismatched:
            raise ConversionError(f"check failed: the hls4ml emulator and the integer model (which the RTL implements) "
                                  f"differ on {mismatched} of {len(check)} calibration images; please report this model")
    else:
        row["stand_in_for_emulator"] = "; ".join(ctx.report["hls"]["not_generated_because"]) or \
            "not compiled (convert --no-emulator): verify compiles it"
    classes = output_classes(ctx.canonical)
    s = score(integer, reference, check.labels, ctx.cfg.guard, classes)
    ctx.report["emulator_on_calibration"] = {
        **row, **s.to_dict(),
        "agreement_with_proxy": float(np.mean(as_cells(integer, classes).argmax(1) == as_cells(proxy, classes).argmax(1))),
        "max_abs_diff_vs_proxy": float(np.abs(integer - proxy).max()),
        "max_abs_diff_vs_float": float(np.abs(integer - reference).max())}
    decisions = len(as_cells(integer, classes))  # images, or output cells of a map
    flips, allowed = round((1 - s.agreement) * decisions), allowed_flips(decisions, ctx.cfg.agreement)
    if flips > allowed:
        raise ConversionError(f"check failed: the {row['model']} disagrees with the float model on {flips} of "
                              f"{decisions} decisions on {len(check)} calibration images, more than the {ctx.cfg.agreement:.2%} bar allows "
                              f"({allowed}); widen types with --overrides or use more calibration images")


QONNX_CHECK_IMAGES = 64  # qonnx's executor runs node by node in Python: a sample


def check_against_qonnx(ctx: BuildContext, check: ImageSet, integer: np.ndarray) -> None:
    """The integer model against ``qonnx.core.onnx_exec.execute_onnx`` on the user's QONNX file
    (after qonnx's cleanup), on normalized pixels: how many images give the very same scores.
    qonnx computes in float32, which is exact while no partial sum needs more than 24 bits."""
    from edgefpga.models.preprocess import normalize

    n = min(len(check), QONNX_CHECK_IMAGES)
    theirs = stream_order(qonnx_outputs(str(ctx.source.onnx_path), normalize(check.pixels[:n], ctx.source.spec)))
    ours = integer[:n]
    same = np.all(ours == theirs, axis=1)
    ctx.report["qonnx_check"] = {
        "n": n, "bit_exact_images": int(same.sum()), "max_abs_diff": float(np.abs(ours - theirs).max()),
        "top1_agreement": float(np.mean(ours.argmax(1) == theirs.argmax(1))),
        "reference": "qonnx.core.onnx_exec.execute_onnx on the source file after qonnx's cleanup"}
    if not same.all():
        ctx.log(f"[convert]   warning: the integer model differs from qonnx's execution on {int((~same).sum())} of "
                f"{n} images (largest difference {ctx.report['qonnx_check']['max_abs_diff']:.3g})")


def onnxruntime_integers(model, path: Path, pixels: np.ndarray, spec: InputSpec) -> np.ndarray:
    """ONNX Runtime running the user's QDQ file (its default session: the QLinear kernels) on
    normalized pixels: the output quantizer's integers ``q``, read from the file's own integer
    tensor (older builds: its float scores turned back into them)."""
    from edgefpga.models.preprocess import normalize

    tensor = metadata(model, OUTPUT_TENSOR)
    if tensor is not None:  # the quantizer's own integers (before a final Softmax, too)
        name, _, kind = tensor.partition(",")
        unsigned = kind == "uint8"
        q = run_source(onnx.load(str(path)), normalize(pixels, spec), name,
                       onnx.TensorProto.UINT8 if unsigned else onnx.TensorProto.INT8)
        return q.astype(np.int64) - (128 if unsigned else 0)  # as the output words carry them (hw/qdq_in.py)
    scale, zero = float(metadata(model, OUTPUT_SCALE)), int(metadata(model, OUTPUT_ZERO))
    scores = run_source(onnx.load(str(path)), normalize(pixels, spec))
    return np.round(scores / np.float32(scale)).astype(np.int64) + zero


QDQ_MAX_STEPS = 3  # a lowering that computes something else is off by many steps (a lost clamp: 9; a clip on integers: 86)


def check_against_onnxruntime(ctx: BuildContext, check: ImageSet, integer: np.ndarray) -> None:
    """The integer model against ONNX Runtime on the user's QDQ file: images with the very same
    output integers, the largest difference (in output steps) and the top-1 agreement. ONNX
    Runtime rounds ``float(sum) * M`` in float32, the design ``sum * M`` folded into its 25-bit
    weights: they agree but where a value lies within about 1e-5 of a step of a rounding tie. Such
    a one-step difference inside the network moves the layers after it, by a step here and there
    (a deep net with random weights, the MLPerf Tiny ResNet-8 shape: 204 of 654 test cells with
    the same integers, 2 of them two steps away). So the build fails when the top-1 agreement
    misses the bar (as every build's does against its reference) or a score is more than
    QDQ_MAX_STEPS steps away, and warns beyond one."""
    from .qdq_in import CONSTANT_BITS

    theirs = onnxruntime_integers(ctx.canonical, ctx.source.onnx_path, check.pixels, ctx.source.spec)
    ours = integer.astype(np.int64)
    diff = np.abs(ours - theirs)
    flips = int(np.sum(ours.argmax(1) != theirs.argmax(1)))
    ctx.report["onnxruntime_check"] = {
        "n": len(check), "bit_exact_images": int(np.all(diff == 0, axis=1).sum()), "max_abs_diff_steps": int(diff.max()),
        "images_more_than_one_step_away": int(np.sum(diff.max(axis=1) > 1)),
        "top1_agreement": float(np.mean(ours.argmax(1) == theirs.argmax(1))),
        "folded_weight_bits": CONSTANT_BITS, "max_steps_allowed": QDQ_MAX_STEPS,
        "reference": "ONNX Runtime (default session) on the source QDQ file, its scores as output integers"}
    if diff.max() > QDQ_MAX_STEPS or flips > allowed_flips(len(check), ctx.cfg.agreement):
        raise ConversionError(f"check failed: the integer model differs from ONNX Runtime on the QDQ model by up to "
                              f"{int(diff.max())} output steps and on {flips} of {len(check)} top-1 decisions on "
                              f"calibration images (allowed: {QDQ_MAX_STEPS} steps, the {ctx.cfg.agreement:.2%} bar); "
                              "please report this model")
    if diff.max() > 1:
        ctx.log(f"[convert]   warning: the integer model is {int(diff.max())} steps from ONNX Runtime's output "
                f"integers on {ctx.report['onnxruntime_check']['images_more_than_one_step_away']} of {len(check)} "
                "images (roundings within a hair of a tie, carried through the layers after them)")


def allowed_flips(n: int, bar: float) -> int:
    """Disagreements a sample of ``n`` may show by chance when the true rate meets ``bar``."""
    expected = (1 - bar) * n
    return int(np.ceil(expected + 3 * np.sqrt(expected * bar)))


def step_generate_rtl(ctx: BuildContext) -> None:
    """Open Verilog for the same design (rtl/src, rtl/manifest.json): no vendor tool needed."""
    from .rtlgen import write_rtl

    manifest = write_rtl(ctx.canonical, ctx.precisions, ctx.plan, ctx.out / "rtl", safe_name(ctx.source.name),
                         str(ctx.source.onnx_path), __version__)
    ctx.report["rtl"] = {"manifest": "rtl/manifest.json", "top": manifest["top"],
                         "multipliers": sum(st["multipliers"] for st in manifest["stages"]),
                         "dsp_multipliers": sum(st["multipliers"] for st in manifest["stages"] if st["dsp"]),
                         "slowest_stage_cycles": max(st["cycles_per_frame"] for st in manifest["stages"]),
                         "target_interval_cycles": ctx.plan.interval,
                         "fifos": {st["name"]: st["params"]["DEPTH"] for st in manifest["stages"]
                                   if st["module"] == "ef_fifo"},
                         "predicted_fit": predicted_fit(manifest, ctx.board, ctx.cfg.budget_share)}
    fit = ctx.report["rtl"]["predicted_fit"]
    if not fit["fits"]:
        raise PlanError(f"check failed: the generated RTL is predicted over budget ({format_fit(fit)}); "
                        "please report this model")


def predicted_fit(manifest: dict, board: Board, budget_share: float = BUDGET_SHARE) -> dict:
    """The fit of a generated design, every stage priced by its hardware model from the manifest's
    own parameters (what `edgefpga verify` checks without Yosys)."""
    from .layers.estimate import design_resources
    from .plan import fit_summary

    return fit_summary(design_resources(manifest), board, budget_share)


def step_generate_overlay(ctx: BuildContext) -> None:
    """The PYNQ overlay pieces (overlay/): AXI-DMA wrapper, hardware handoff, stream format."""
    from .overlay import write_overlay

    overlay = write_overlay(ctx.out, ctx.board.to_dict(), __version__)
    ctx.report["overlay"] = {"folder": "overlay", "wrapper": overlay["wrapper"], "hwh": overlay["hwh"]}


def safe_name(name: str) -> str:
    """A Verilog identifier from a model name."""
    text = "".join(ch if ch.isalnum() else "_" for ch in name)
    return text if text[:1].isalpha() else f"m_{text}"


def layer_rows(ctx: BuildContext) -> list[dict]:
    costs = ctx.plan.layers
    rows = []
    for node in ctx.canonical.graph.node:
        out = node.output[0]
        row = {"node": node.name, "op": node.op_type, "shape": ctx.canonical.get_tensor_shape(out),
               "types": {k: v.to_dict() for k, v in ctx.precisions.layers.get(node.name, {}).items()},
               "range": ctx.ranges[out].to_dict()}
        if node.name in costs:
            row["plan"] = {k: v for k, v in costs[node.name].to_dict().items() if k != "node"}
        rows.append(row)
    return rows


def step_report(ctx: BuildContext) -> None:
    """report.json, a readable report.md and the range plot."""
    from .report import plot_ranges, write_markdown

    src = ctx.source
    ctx.report.update({
        "edgefpga_version": __version__, "name": src.name,
        "model": {"name": src.name, "source": str(src.onnx_path), "classes": src.classes, "input": src.spec.to_dict(),
                  "defect_classes": defect_classes_of(src.card or {}, src.classes, str(src.onnx_path)),
                  "dataset": (src.card or {}).get("dataset", {}).get("name"), "assumed": src.assumed,
                  **({"output": src.card["output"]} if (src.card or {}).get("output") else {})},
        "board": ctx.board.to_dict(),
        "hls": {**ctx.report["hls"], "input_type": str(ctx.precisions.tensors[ctx.canonical.graph.input[0].name]),
                "output_type": str(output_type(ctx))},
        "totals": {"params": sum(c.params for c in ctx.plan.layers.values()),
                   "macs": sum(c.macs for c in ctx.plan.layers.values())},
        "layers": layer_rows(ctx), "timings_s": ctx.timings})
    ctx.write_json(REPORT_FILE, ctx.report)
    write_markdown(ctx.report, ctx.out / "report.md")
    plot_ranges(ctx.report, ctx.out / "ranges.png")


def step_fingerprint(ctx: BuildContext) -> None:
    """fingerprints.json: what `edgefpga verify` checks the folder against (edited or half-written builds)."""
    from .integrity import write_fingerprints

    write_fingerprints(ctx.out)


STEPS: list[Callable[[BuildContext], None]] = [
    step_check_onnx, step_canonicalize, step_check_fit, step_load_calibration, step_profile, step_search_precision,
    step_plan_parallelism, step_hls_project, step_compile_emulator, step_check_emulator, step_generate_rtl, step_generate_overlay,
    step_report, step_fingerprint,
]


@contextmanager
def build_folder(out: Path, force: bool):
    """Write into ``out``; on failure remove it and put back what was there before."""
    out = out.resolve()
    backup = out.with_name(out.name + ".previous")
    if out.exists():
        if not force:
            raise ConversionError(f"{out}: already exists; pass --force to replace it")
        shutil.rmtree(backup, ignore_errors=True)
        out.rename(backup)
    out.mkdir(parents=True)
    try:
        yield out
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        if backup.exists():
            backup.rename(out)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def convert(source: str, out: str | Path, cfg: ConvertConfig | None = None, force: bool = False,
            log: Callable[[str], None] = print) -> dict:
    """Run every step into ``out``; return the report."""
    cfg = cfg or ConvertConfig()
    with build_folder(Path(out), force) as folder:
        ctx = BuildContext(source, folder, cfg, log=log)
        for step in STEPS:
            name = step.__name__.removeprefix("step_")
            log(f"[convert] {name}: {(step.__doc__ or '').strip().splitlines()[0]}")
            start = time.perf_counter()
            step(ctx)
            ctx.timings[name] = round(time.perf_counter() - start, 2)
    return ctx.report


def load_report(build_dir: str | Path) -> dict:
    path = Path(build_dir) / REPORT_FILE
    if not path.is_file():
        raise ConversionError(f"{build_dir}: not a build folder (no {REPORT_FILE}); run `edgefpga convert` first")
    return json.loads(path.read_text())


__all__ = ["ConvertConfig", "convert", "load_report", "STEPS", "ModelCardError", "MODEL_FILE"]


def stale_reason(build: Path, model_dir: Path) -> str | None:
    """Why ``build`` must be (re)converted from ``model_dir``: missing, or converted from other
    weights of the same model (after an update of the zoo), or with other Verilog than this
    version's hw/rtl (a benchmark would otherwise place, count or simulate the old RTL and record
    this commit). A build of another model is kept."""
    report = Path(build) / "report.json"
    if not report.is_file():
        return "no build folder"
    try:
        name = json.loads(report.read_text())["model"].get("name")
    except (json.JSONDecodeError, KeyError, AttributeError):
        return None
    if name != load_card(model_dir).name:
        return None
    source, model = Path(build) / "model" / "source.onnx", Path(model_dir) / MODEL_FILE
    if source.is_file() and source.read_bytes() != model.read_bytes():
        return f"built from other weights than {model}"
    changed = changed_rtl(Path(build) / "rtl" / "src")
    return f"built with other Verilog than hw/rtl ({', '.join(changed)})" if changed else None


def changed_rtl(src: Path) -> list[str]:
    """The module files in a build's ``rtl/src`` that differ from this version's hw/rtl."""
    from .rtlgen import RTL_DIR

    return sorted(f.name for f in src.glob("*.v*") if (RTL_DIR / f.name).is_file()
                  and f.read_bytes() != (RTL_DIR / f.name).read_bytes())


def ensure_converted(build: str | Path, model_dir: str | Path, progress: bool = True) -> Path:
    """``build``, converted from ``model_dir`` first when missing or stale (the demo and the
    benchmarks: `make demo` on a fresh clone converts the shipped model once)."""
    build, model_dir = Path(build), Path(model_dir)
    reason = stale_reason(build, model_dir)
    if reason:
        print(f"{build}: {reason}; converting {model_dir.name} into it (about 2 minutes)")
        convert(str(model_dir), build, ConvertConfig(progress=progress), force=True,
                log=print if progress else (lambda _m: None))
    return build
