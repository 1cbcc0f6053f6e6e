"""``edgefpga verify``: check a build folder and write ``verify.json``; every check that fails is
named in ``failed`` (the command then exits 1).

The checks, in order:

- *integrity*: every file ``convert`` wrote is there and unchanged (``fingerprints.json``,
  hw/integrity.py); an
  edited or half-written build stops here, naming the file (``--accept-edits`` goes on, to see
  what an edit does to the other checks).
- *emulator*: the bit-accurate model on held-out images against the float ONNX model (top-1
  agreement at least the build's bar). The integer model (hw/intmodel.py, what the RTL
  implements) always runs; where the build has an hls4ml project its C simulation runs too and
  must equal the integer model bit for bit. Where hls4ml 1.3 cannot represent the model, the
  integer model stands in, and ``emulator.stand_in`` says so and why.
- *rtl*: the generated Verilog, compiled with Verilator (a native harness, sim/harness), streams
  the same images with random idle cycles and backpressure; every output word must equal the
  integer model's. Then latency, initiation interval and each stage's busy cycles in exact
  cycles at full rate. A design that stops moving (a deadlock) fails here instead of hanging.
- *fit* (always, seconds): every stage of the manifest priced by its hardware model (hw/layers,
  fitted on Yosys) must fit the board's budget (80 % of each resource unless convert was given
  another).
- *resources* (``--resources``): the Yosys count must fit the same budget; beside it, how far the
  prediction was from the count, per resource.
- *timing* (``--timing``, minutes): every distinct stage placed and routed alone with the open
  tools (sim/timing.py: Yosys synth_ecp5 + nextpnr-ecp5 on an LFE5UM-85F, speed 6, not the
  board's part: docs/rtl.md); fails when a stage's fmax is below the board's clock or a stage
  could not be measured.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import onnx

from edgefpga.hw.convert import PRECISIONS_FILE, load_report
from edgefpga.hw.graph import canonical_graph  # noqa: F401  (sets the ONNX IR version qonnx needs)
from edgefpga.hw.hls import Emulator
from edgefpga.hw.images import ImageSet, load_image_set, sample_indices
from edgefpga.hw.integrity import check_integrity
from edgefpga.hw.onnx_check import ConversionError
from edgefpga.hw.precision import as_cells, run_logits
from edgefpga.hw.profile import with_outputs
from edgefpga.models.card import InputSpec
from edgefpga.models.imagefiles import Skips
from edgefpga.models.metrics import classification_metrics

from .verilator import SimulatorError

VERIFY_FILE = "verify.json"


class VerifyFailed(Exception):
    """One or more checks failed; ``result`` holds everything measured (also in verify.json)."""

    def __init__(self, result: dict):
        super().__init__("check(s) failed: " + "; ".join(f"{c['check']}: {c['detail']}" for c in result["failed"]))
        self.result = result


# ---- the bit-accurate models ----------------------------------------------------------------------

def float_logits(build_dir: Path, pixels: np.ndarray) -> np.ndarray:
    """The float model (raw pixels in, normalization inside) in ONNX Runtime; for a QONNX model,
    its own arithmetic as qonnx computes it (model/reference.onnx); for a QDQ model, ONNX Runtime
    on the file itself, its scores as the output quantizer's integers (what the RTL emits)."""
    from qonnx.core.modelwrapper import ModelWrapper

    from edgefpga.hw.qdq_in import is_lowered_qdq

    canonical = ModelWrapper(str(build_dir / "model" / "canonical.onnx"))
    if is_lowered_qdq(canonical):  # ONNX Runtime on the user's QDQ file, as the output integers
        from edgefpga.hw.convert import onnxruntime_integers
        from edgefpga.models.card import InputSpec

        spec = InputSpec.from_dict(load_report(build_dir)["model"]["input"], str(build_dir / "report.json"))
        return onnxruntime_integers(canonical, build_dir / "model" / "source.onnx", pixels, spec).astype(np.float64)
    reference = build_dir / "model" / "reference.onnx"
    if reference.is_file():
        return run_logits(onnx.load(str(reference)), pixels.astype(np.float32))
    return run_logits(with_outputs(canonical, []), pixels.astype(np.float32))


def integer_scores(build_dir: Path, pixels: np.ndarray) -> tuple[np.ndarray, int]:
    """The integer model's output integers (what the RTL must emit) and their fractional bits."""
    from qonnx.core.modelwrapper import ModelWrapper

    from edgefpga.hw.intmodel import IntegerModel
    from edgefpga.hw.precision import Precisions

    model = ModelWrapper(str(build_dir / "model" / "canonical.onnx"))
    precisions = Precisions.from_dict(json.loads((build_dir / PRECISIONS_FILE).read_text()))
    out = IntegerModel(model, precisions).run(pixels)
    return out.q, out.frac


def verify_emulator(build_dir: Path, images: ImageSet, ints: np.ndarray, frac: int,
                    progress: bool = True, checked: np.ndarray | None = None) -> dict:
    """Bit-accurate model vs float on every image: top-1 agreement, accuracy of both, largest score
    difference, from the integer model (which the emulator and the RTL must equal bit for bit);
    then the hls4ml emulator against the integer model where the build has one, on the images
    ``checked`` (indices; default all)."""
    report = load_report(build_dir)
    golden = ints.astype(np.float64) * 2.0 ** -frac
    checked = np.arange(len(images)) if checked is None else checked
    result = {"n": len(images), "images": images.source, "bit_exact_checked": len(checked)}
    if report["hls"].get("project"):
        start = time.perf_counter()
        emulator = Emulator.load(build_dir / "hls", report["model"]["input"]["shape"])
        result["compile_s"] = round(time.perf_counter() - start, 1)
        start = time.perf_counter()
        scores = emulator.predict(images.pixels[checked], progress)
        result["seconds_per_image"] = round((time.perf_counter() - start) / len(checked), 4)
        mismatched = checked[~np.all(scores == golden[checked], axis=1)]
        result.update(model="hls4ml emulator", integer_model_bit_exact_images=int(len(checked) - len(mismatched)),
                      integer_model_mismatches=mismatched.tolist()[:20])
    else:
        result.update(model="integer model", stand_in="; ".join(report["hls"].get("not_generated_because", [])) +
                      ": no hls4ml project, so the integer model (which the RTL must match bit for bit) stands in "
                      "for the emulator")
    reference = float_logits(build_dir, images.pixels)
    result["reference"] = ("ONNX Runtime on the QDQ model (model/source.onnx), as output integers"
                           if "output_dequantize" in report else
                           "the quantized model as qonnx computes it (model/reference.onnx)"
                           if (build_dir / "model" / "reference.onnx").is_file() else "the float model")
    classes = len(report["model"]["classes"])
    # a detector compares whole maps: each output cell is one decision, the disagreements name images
    cell_flips = (as_cells(golden, classes).argmax(1) != as_cells(reference, classes).argmax(1))
    image_flips = cell_flips.reshape(len(golden), -1).any(axis=1)
    result.update({"top1_agreement": float(np.mean(~cell_flips)),
                   "disagreements": np.flatnonzero(image_flips).tolist()[:50],
                   "max_abs_score_diff": float(np.abs(golden - reference).max())})
    if golden.shape[1] != classes:
        result.update(map_cells=golden.shape[1] // classes, decisions=int(cell_flips.size),
                      images_with_a_flipped_cell=int(image_flips.sum()))
    if images.labels is not None:
        emu = classification_metrics(images.labels, golden.argmax(1), classes)
        flt = classification_metrics(images.labels, reference.argmax(1), classes)
        result.update({"accuracy": emu["accuracy"], "float_accuracy": flt["accuracy"],
                       "accuracy_drop": round(flt["accuracy"] - emu["accuracy"], 6),
                       "balanced_accuracy": emu["balanced_accuracy"],
                       "float_balanced_accuracy": flt["balanced_accuracy"]})
    return result


# ---- the RTL --------------------------------------------------------------------------------------

def watchdog_cycles(manifest: dict) -> int:
    """Cycles without a beat in or out after which the design counts as deadlocked: far beyond
    any stage's work on a frame (the last frame drains with no input)."""
    slowest = max([st["cycles_per_frame"] for st in manifest.get("stages", [])] + [1])
    return 20 * slowest + 200_000


def simulated_cycles(run) -> int:
    """Cycles simulated over all parts of a split run (each part restarts its clock count)."""
    ends = run.last_out
    restarts = np.flatnonzero(np.diff(ends) < 0)
    return int(sum(ends[i] for i in restarts) + ends[-1])


def stage_cycles(manifest: dict, busy: np.ndarray | None, frames: int, interval: int) -> list[dict]:
    """Planned engine cycles per frame against the busy cycles measured in simulation."""
    rows = []
    for i, st in enumerate(manifest.get("stages", [])):
        row = {"stage": st["name"], "module": st["module"], "planned_cycles": st["cycles_per_frame"]}
        if busy is not None and i < len(busy):
            row["busy_cycles"] = round(float(busy[i]) / frames, 1)
            row["utilization"] = round(row["busy_cycles"] / interval, 3) if interval else None
        rows.append(row)
    return rows


def verify_rtl(build_dir: Path, images: ImageSet, expected: np.ndarray, idle: int = 10, stall: int = 10,
               seed: int = 1) -> dict:
    """Bit-exactness of the RTL against the integer model on every image under random idle cycles
    and backpressure, then exact latency, interval and stage cycles at full rate."""
    from .rtl_harness import build_harness, measure_timing, run_harness, to_signed

    manifest = json.loads((build_dir / "rtl" / "manifest.json").read_text())
    out = manifest["output"]
    work = build_dir / "sim"
    watchdog = watchdog_cycles(manifest)
    report = load_report(build_dir)
    result = {"n": len(images), "idle_percent": idle, "backpressure_percent": stall, "seed": seed,
              "watchdog_cycles": watchdog}
    try:
        harness = build_harness(build_dir / "rtl", work)
    except SimulatorError as exc:  # an edited RTL that no longer compiles fails the check, it is no crash
        return dict(result, bit_exact_frames=0, error=str(exc)[-1500:])
    program = harness.program
    result.update(verilator_build_s=round(harness.seconds, 1), verilator_cached=harness.cached)
    try:
        stress = run_harness(program, images.pixels, out["outputs"], work, idle, stall, seed, watchdog=watchdog,
                             workers=os.cpu_count() or 1)
        timing = measure_timing(program, images.pixels, out["outputs"], work, watchdog=watchdog)
    except SimulatorError as exc:
        return dict(result, bit_exact_frames=0, error=str(exc))
    rtl = to_signed(stress.scores, out["tdata_bits"])
    exact = (rtl == expected).all(axis=1)
    roofline = report["estimate"]["roofline_cycles"]
    latency, interval = timing.latency_cycles, timing.ii_cycles
    return dict(result, **{
        "bit_exact_frames": int(exact.sum()), "mismatched_frames": np.flatnonzero(~exact).tolist()[:20],
        "framing_errors": stress.framing_errors,
        "latency_cycles": latency, "latency_single_frame_cycles": timing.latency_single_frame_cycles,
        "ii_cycles": interval, "planned_ii_cycles": report["estimate"]["ii_cycles"], "roofline_cycles": roofline,
        "timing_frames": timing.frames, "ii_over_roofline": round(interval / roofline, 3),
        # each frame's first pixel after the one before's: the interval settles once the pipeline is full
        "interval_cycles_per_frame": [int(c) for c in timing.run.interval_cycles],
        "latency_over_roofline": round(latency / roofline, 3), "multipliers": report.get("rtl", {}).get("multipliers"),
        "fps_at_clock": round(report["board"]["clock_mhz"] * 1e6 / interval, 1),
        "stages": stage_cycles(manifest, timing.run.busy, timing.frames, interval),
        "simulated_cycles": simulated_cycles(stress),
        "simulated_cycles_per_s": round(simulated_cycles(stress) / stress.seconds)})


# ---- the command ----------------------------------------------------------------------------------

def judge(result: dict, bar: float) -> list[dict]:
    """Every check that failed: {check, detail}."""
    failed = []
    integrity = result["integrity"]
    if not integrity["ok"]:
        failed.append({"check": "integrity", "detail": integrity["detail"]})
    emu = result["emulator"]
    checked = emu.get("bit_exact_checked", emu["n"])
    if emu.get("integer_model_bit_exact_images", checked) != checked:
        failed.append({"check": "emulator_bit_exact", "detail": f"the hls4ml emulator differs from the integer model "
                       f"on {checked - emu['integer_model_bit_exact_images']} of {checked} images"})
    if emu["top1_agreement"] < bar:
        failed.append({"check": "agreement", "detail": f"top-1 agreement with {emu.get('reference', 'the float model')} "
                       f"{emu['top1_agreement']:.2%} on {emu['n']} images, below the bar {bar:.2%}"})
    rtl = result.get("rtl")
    if rtl is not None:
        if "error" in rtl:
            failed.append({"check": "rtl_runs", "detail": rtl["error"]})
        elif rtl["bit_exact_frames"] != rtl["n"] or rtl["framing_errors"]:
            failed.append({"check": "rtl_bit_exact", "detail": f"{rtl['bit_exact_frames']} of {rtl['n']} frames "
                           f"bit-exact, {rtl['framing_errors']} framing error(s); first mismatched frames "
                           f"{rtl['mismatched_frames'][:5]}"})
    fit = result.get("fit")
    if fit is not None and not fit["fits"]:
        over = {k: f"{fit['used'][k]:,g} of {fit['available'][k]:,} ({fit['share'][k]:.0%})" for k in fit["over"]}
        failed.append({"check": "predicted_fit", "detail": f"predicted over {fit['budget_share']:.0%} of "
                       f"{fit['board']}: {over}"})
    res = result.get("resources")
    if res is not None and not res.get("fits", True):
        over = {k: f"{v:.0%}" for k, v in res["share"].items() if v > res["limit_share"]}
        failed.append({"check": "resources_fit", "detail": f"over {res['limit_share']:.0%} of the board: {over}"})
    tim = result.get("timing")
    if tim is not None:
        slow = [f"{stage} {tim['stages'][stage]} MHz" for stage in tim["below_target"]]
        if slow:
            failed.append({"check": "timing", "detail": f"{len(slow)} stage(s) below {tim['target_mhz']:g} MHz: "
                           f"{', '.join(slow)} ({tim['device']})"})
        if tim["unmeasured"]:
            failed.append({"check": "timing", "detail": "not placed and routed: " + "; ".join(
                f"{stage} ({why})" for stage, why in tim["unmeasured"].items())})
    return failed


def predicted_fit_of(build_dir: Path, report: dict) -> dict:
    """The design's predicted use against the board it was converted for (hw/convert.py
    ``predicted_fit``), with the budget convert planned with."""
    from edgefpga.hw.boards import get_board
    from edgefpga.hw.convert import predicted_fit
    from edgefpga.hw.plan import BUDGET_SHARE

    manifest = json.loads((build_dir / "rtl" / "manifest.json").read_text())
    budget = report.get("estimate", {}).get("fit", {}).get("budget_share", BUDGET_SHARE)
    return predicted_fit(manifest, get_board(report["board"]["name"]), budget)


def default_images(build_dir: Path, report: dict) -> str | None:
    """The card's held-out images (``verification``), the ELPV test split for ELPV models, else None."""
    card_path = build_dir / "model" / "card.json"
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    if card.get("verification"):
        return card["verification"]
    return "elpv:test" if report["model"].get("dataset") == "ELPV" else None


def rate_at_placed_clock(rtl: dict, timing: dict) -> dict:
    """The frame rate at the clock place and route has shown: the slowest stage's fmax, capped at
    the board's nominal clock (issue 29 item 5: never a clock the router has not shown). Empty
    when the RTL run failed or a stage could not be placed."""
    fmax = timing.get("min_fmax_mhz")
    if "ii_cycles" not in rtl or fmax is None or timing.get("unmeasured"):
        return {}
    clock = min(fmax, timing["target_mhz"])
    return {"placed_clock_mhz": clock, "placed_clock_source": f"slowest stage {timing['slowest_stage']} on the "
            f"{timing['device']}", "fps_at_placed_clock": round(clock * 1e6 / rtl["ii_cycles"], 1)}


def verify(build_dir: str | Path, images: str | None = None, limit: int | None = None,
           emulator_only: bool = False, progress: bool = True, resources: bool = False, jobs: int = 1,
           accept_edits: bool = False, agreement: float | None = None, sample: int | None = None,
           timing: bool = False, skips: Skips | None = None) -> dict:
    """Run the checks and write ``<build_dir>/verify.json``; return its content, or raise
    VerifyFailed (after writing it) when a check fails. ``limit``: use a fixed random sample of
    the images for everything; ``sample``: the agreement bar on all of them (the integer model
    takes seconds) but the emulator and the RTL bit for bit on a fixed random sample of this many
    (they take most of the minutes); ``jobs``: Yosys (and nextpnr) processes at a time;
    ``timing``: place and route every distinct stage (sim/timing.py)."""
    build_dir = Path(build_dir)
    report = load_report(build_dir)
    integrity = check_integrity(build_dir)
    result = {"build": str(build_dir), "integrity": integrity}
    if not integrity["ok"] and not accept_edits:
        result["failed"] = [{"check": "integrity", "detail": integrity["detail"]}]
        (build_dir / VERIFY_FILE).write_text(json.dumps(result, indent=2) + "\n")
        raise VerifyFailed(result)
    if not emulator_only and not (build_dir / "rtl" / "manifest.json").is_file():
        raise ConversionError(f"{build_dir}: no RTL to check (rtl/manifest.json is missing: convert it again "
                              "with this version); run with --emulator-only to check the emulator alone")
    source = images or default_images(build_dir, report)
    if source is None:
        raise ConversionError(f"{build_dir}: pass --images (a folder of images or an .npz) to verify against")
    spec = InputSpec.from_dict(report["model"]["input"], str(build_dir / "report.json"))
    image_set = load_image_set(source, spec, report["model"]["classes"], skips).take(limit)
    if skips:
        result["images_skipped"] = skips.record()  # a folder's unusable files, named in verify.json
    ints, frac = integer_scores(build_dir, image_set.pixels)
    checked = sample_indices(len(image_set), sample)
    result["emulator"] = verify_emulator(build_dir, image_set, ints, frac, progress, checked)
    if not emulator_only:
        result["fit"] = predicted_fit_of(build_dir, report)
        result["rtl"] = verify_rtl(build_dir, image_set.subset(checked), ints[checked])
        if resources:
            from .resources import yosys_estimate

            result["resources"] = yosys_estimate(build_dir / "rtl", report["board"], jobs=jobs,
                                                 limit_share=result["fit"]["budget_share"])
            result["resources"]["predicted_over_counted"] = {
                k: round(result["fit"]["used"][k] / v, 3) if v else None
                for k, v in result["resources"]["used"].items()}
        if timing:
            from .timing import timing_report

            result["timing"] = timing_report(build_dir / "rtl", report["board"]["clock_mhz"], jobs=jobs,
                                             progress=progress)
            result["rtl"].update(rate_at_placed_clock(result["rtl"], result["timing"]))
    bar = agreement if agreement is not None else report["precision_search"]["criterion"]["agreement"]
    result["agreement_bar"] = bar
    result["failed"] = judge(result, bar)
    (build_dir / VERIFY_FILE).write_text(json.dumps(result, indent=2) + "\n")
    if result["failed"]:
        raise VerifyFailed(result)
    return result
