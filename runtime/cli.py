"""The ``edgefpga`` command: one subcommand per step of the road (see ``edgefpga --help``).

Heavy libraries (torch, onnxruntime) are imported inside the subcommands so that ``--help`` and
error messages are instant. Every failure the user can fix (bad folder, bad card, bad image)
ends with one line naming the input and the reason, and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgefpga import __version__
from edgefpga.models.card import resolve_model_dir


class UserError(Exception):
    """An error in what the user asked for; printed without a traceback."""


def given(args: argparse.Namespace, *names: str) -> dict:
    """The options the user set; the rest keep the defaults of the config dataclasses."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def recorded_configs(model: str) -> dict:
    """Architecture, training and augmentation settings recorded in a model's card."""
    from edgefpga.models.card import ModelCardError, load_card

    card = load_card(resolve_model_dir(model))
    try:
        arch = dict(card.raw["architecture"])
        arch["widths"] = tuple(arch["widths"])
        return {"arch": arch, "train": card.raw["training"]["config"], "augment": card.raw["training"]["augment"]}
    except (KeyError, TypeError) as exc:
        raise ModelCardError(f"{card.path}: no training record to copy ({exc})") from exc


def cmd_train(args: argparse.Namespace) -> int:
    from edgefpga.models.arch import ArchConfig
    from edgefpga.models.augment import AugmentConfig
    from edgefpga.models.train import TrainConfig
    from edgefpga.models.zoo_build import build_zoo_model

    if args.dataset != "elpv":
        raise UserError(f"unknown dataset {args.dataset!r}: only 'elpv' is built in")
    base = recorded_configs(args.like) if args.like else {"arch": {}, "train": {}, "augment": {}}
    widths = {"widths": tuple(args.widths)} if args.widths else {}
    arch = ArchConfig(**base["arch"] | given(args, "size", "stem_stride") | widths)
    teachers = {"teachers": tuple(args.teacher)} if args.teacher else {}
    cfg = TrainConfig(**base["train"] | given(args, "epochs", "seed", "threads", "limit", "teacher_weight") | teachers)
    build = build_zoo_model(args.out, arch, cfg, AugmentConfig(**base["augment"]), name=args.name)
    print(f"wrote {build.out}/model.onnx and card.json: test accuracy {build.facts['test']['accuracy']:.4f}, "
          f"balanced {build.facts['test']['balanced_accuracy']:.4f}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from edgefpga.models.card import REFERENCE_SHAPE, load_card
    from edgefpga.models.evaluate import evaluate, format_report

    model_dir = resolve_model_dir(args.model)
    card = load_card(model_dir)
    if card.raw.get("purpose") == REFERENCE_SHAPE:
        raise UserError(f"{card.name} is a reference shape with random weights (no task to evaluate): convert and "
                        "verify it instead (edgefpga convert, edgefpga verify)")
    metrics = evaluate(model_dir, args.subset, progress=not args.quiet, confusion_png=args.confusion_png)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(format_report(card.name, metrics, card.classes))
        if args.confusion_png:
            print(f"confusion matrix plot: {args.confusion_png}")
    if args.subset == "test":
        expected = {k: card.test_metrics[k] for k in ("accuracy", "balanced_accuracy", "f1_defective", "n")}
        got = {k: metrics[k] for k in expected}
        if got != expected and not args.json:
            print(f"note: the card records {expected}; this run gives {got}")
    return 0


def run_demo(demo_args: list[str]) -> int:
    """The end-to-end job lives with the ROS nodes (``edgefpga-demo``); run it as its own process,
    since nothing imports ``ros_nodes``. Its options pass through unchanged."""
    import os

    script = Path(sys.executable).parent / "edgefpga-demo"
    if not script.is_file():
        print(f"edgefpga demo: error: {script}: missing (the demo comes with the ROS 2 extra: make setup "
              "installs it)", file=sys.stderr)
        return 2
    os.execv(str(script), [str(script), *demo_args])
    return 0  # not reached


def cmd_convert(args: argparse.Namespace) -> int:
    from edgefpga.hw.convert import ConvertConfig, convert
    from edgefpga.hw.report import summary_lines

    source = resolve_model_dir(args.model)
    out = args.out or Path("build") / source.stem
    cfg = ConvertConfig(board=args.board, calibration=args.calibration, calibration_images=args.calibration_images,
                        agreement=args.agreement, max_accuracy_drop=args.max_accuracy_drop, overrides=args.overrides,
                        scale=args.scale, mean=args.mean, std=args.std, classes=args.classes,
                        progress=not args.quiet)
    report = convert(str(source), out, cfg, force=args.force, log=(lambda _m: None) if args.quiet else print)
    print("\n".join(summary_lines(report)))
    print(f"wrote {out}/ (report.json, report.md, ranges.png, hls/); next: edgefpga verify {out} --emulator-only")
    return 0


def verify_lines(result: dict) -> list[str]:
    """What `edgefpga verify` prints: one line per check that ran."""
    lines = [f"integrity: {result['integrity']['detail']}"]
    emu = result.get("emulator")
    if emu:
        line = (f"{emu['model']} vs float on {emu['n']} images ({emu['images']}): top-1 agreement "
                f"{emu['top1_agreement']:.2%} (bar {result['agreement_bar']:.2%})")
        if "accuracy" in emu:
            line += f", accuracy {emu['accuracy']:.4f} (float {emu['float_accuracy']:.4f})"
        if "integer_model_bit_exact_images" in emu:
            line += f"; bit-exact with the integer model on {emu['integer_model_bit_exact_images']} of {emu['n']}"
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
                     f"{rtl['fps_at_clock']:,} frames/s at the board clock")
    res = result.get("resources")
    if res:
        fits = "yes" if res.get("fits") else "no"
        verdict = f"; within {res['limit_share']:.0%} of each: {fits}" if "fits" in res else ""
        lines.append("Yosys estimate: " + ", ".join(f"{k} {res['used'][k]:,.0f} of {res['available'][k]:,} "
                                                   f"({res['share'][k]:.0%})" for k in res["used"])
                     + f"{verdict} ({res['seconds']} s)")
    return lines


def cmd_verify(args: argparse.Namespace) -> int:
    from edgefpga.sim.verify import VerifyFailed, verify

    try:
        result = verify(args.build, images=args.images, limit=args.limit, emulator_only=args.emulator_only,
                        progress=not args.quiet, resources=args.resources, jobs=args.jobs,
                        accept_edits=args.accept_edits, agreement=args.agreement)
    except VerifyFailed as failed:
        print("\n".join(verify_lines(failed.result)))
        for check in failed.result["failed"]:
            print(f"edgefpga verify: FAILED {check['check']}: {check['detail']}", file=sys.stderr)
        print(f"wrote {Path(args.build) / 'verify.json'}")
        return 1
    print("\n".join(verify_lines(result)))
    print(f"all checks passed; wrote {Path(args.build) / 'verify.json'}")
    return 0


def format_results_table(results: list, rows: int) -> list[str]:
    """The first ``rows`` results as an aligned table."""
    lines = [f"{'image':<34} {'label':<12} {'score':>6} {'defective':>9} {'ms':>8} {'cycles':>8}"]
    for r in results[:rows]:
        cycles = f"{r.cycles:,}" if r.cycles is not None else "-"
        lines.append(f"{r.source[-34:]:<34} {r.label:<12} {r.score:>6.3f} {str(r.defective):>9} "
                     f"{r.latency_ms:>8.2f} {cycles:>8}")
    if len(results) > rows:
        lines.append(f"... {len(results) - rows} more (--rows N to show them, --csv FILE to save all)")
    return lines


def summary_lines(results: list, labels, classes: list[str]) -> list[str]:
    import numpy as np

    from edgefpga.models.metrics import classification_metrics

    ms = np.array([r.latency_ms for r in results])
    counts = ", ".join(f"{c} {sum(r.label == c for r in results)}" for c in classes)
    lines = [f"{len(results)} images: {counts}; latency per image median {np.median(ms):.2f} ms, "
             f"p99 {np.percentile(ms, 99):.2f} ms (wall time, preprocessing included)"]
    cycles = [r.cycles for r in results if r.cycles is not None]
    if cycles:
        lines.append(f"accelerator: median {int(np.median(cycles)):,} cycles per frame, first pixel in to last score out")
    if labels is not None:
        m = classification_metrics(labels, np.array([r.label_index for r in results]), len(classes))
        lines.append(f"against the labels: accuracy {m['accuracy']:.4f}, balanced accuracy {m['balanced_accuracy']:.4f}, "
                     f"F1 (defective) {m['f1_defective']:.4f}")
    return lines


def cmd_infer(args: argparse.Namespace) -> int:
    import csv

    from tqdm import tqdm

    import edgefpga.runtime as rt
    from edgefpga.runtime.inputs import collect_inputs

    with rt.open(args.model, backend=args.backend, defect_threshold=args.threshold) as engine:
        print(f"model {engine.describe()}", file=sys.stderr)
        inputs = collect_inputs(args.images, engine.classes)
        stream = engine.stream(inputs.images, batch_size=args.batch)
        results = list(tqdm(stream, total=len(inputs), unit="img", desc=engine.backend_name, disable=args.quiet))
    for r, name in zip(results, inputs.names):
        r.source = name
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=1))
        return 0
    print("\n".join(format_results_table(results, args.rows)))
    print("\n".join(summary_lines(results, inputs.labels, engine.classes)))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(results[0].to_dict()))
            writer.writeheader()
            writer.writerows(r.to_dict() for r in results)
        print(f"wrote {args.csv}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from edgefpga.runtime.bench import bench_runtime

    result = bench_runtime(args.model, n_images=args.images, out=args.out, pynq_sim=not args.no_pynq_sim,
                           progress=not args.quiet)
    for name, row in result["backends"].items():
        print(f"{name:<10} {row['images_per_s']:>10,.1f} images/s   per image median {row['latency_ms']['median']:>9.2f} ms, "
              f"p99 {row['latency_ms']['p99']:>9.2f} ms   {row['note']}")
    proj = result["projection"]
    print(f"board projection: {proj['fps']:,.0f} frames/s at {proj['clock_mhz']:g} MHz ({proj['ii_cycles']:,} cycles "
          f"per frame), {proj['ratio_vs_onnx_cpu']:.1f}x ONNX Runtime on this CPU")
    print(f"wrote {args.out}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from edgefpga.hw.vendor_build import build

    files = build(args.build, bitfile=not args.no_bitfile)
    for path in files:
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgefpga", description=(
        "Small CNN (ONNX) -> hls4ml -> FPGA accelerator -> PYNQ runtime -> ROS 2, "
        "with simulation standing in for the board."))
    parser.add_argument("--version", action="version", version=f"edgefpga {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model on a built-in dataset and write a model folder")
    p.add_argument("dataset", help="dataset name (elpv)")
    p.add_argument("--out", required=True, type=Path, help="model folder to write (model.onnx, card.json)")
    p.add_argument("--name", help="model name in the card (default: the folder name)")
    p.add_argument("--like", metavar="MODEL", help="start from the settings recorded in MODEL's card "
                   "(e.g. elpv_defect to retrain the shipped model); other options override them")
    p.add_argument("--epochs", type=int, help="training epochs (default: the shipped model's)")
    p.add_argument("--size", type=int, help="input height and width in pixels")
    p.add_argument("--widths", type=int, nargs="+", help="conv block widths, 2x2 max-pool between blocks")
    p.add_argument("--stem-stride", type=int, choices=[1, 2],
                   help="stride of the first conv (2: full-resolution input at half the compute)")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="CPU threads for PyTorch")
    p.add_argument("--limit", type=int, help="train on the first N images only (quick checks)")
    p.add_argument("--teacher", action="append", metavar="MODEL",
                   help="distil from this model folder or zoo name (repeat for an ensemble)")
    p.add_argument("--teacher-weight", type=float, help="weight of the teachers' term in the loss (default 0.5)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a model folder on ELPV with ONNX Runtime")
    p.add_argument("model", help="model folder (model.onnx + card.json) or zoo name")
    p.add_argument("--subset", default="test", choices=["test", "val", "fit", "train"])
    p.add_argument("--confusion-png", type=Path, help="also save the confusion matrix as a PNG")
    p.add_argument("--json", action="store_true", help="print metrics as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("convert", help="ONNX model -> hls4ml accelerator project with automatic fixed point")
    p.add_argument("model", help="model folder (model.onnx + card.json), zoo name, or a bare .onnx file")
    p.add_argument("--board", default="pynq-z2", help="pynq-z2 (default), zcu102, zcu104 or kv260")
    p.add_argument("--out", type=Path, help="build folder to write (default: build/<model name>)")
    p.add_argument("--force", action="store_true", help="replace an existing build folder")
    p.add_argument("--calibration", help="calibration images: folder, .npz, or elpv:<subset> "
                   "(default for ELPV models: elpv:train)")
    p.add_argument("--calibration-images", type=int, default=1024, help="how many to use (default 1024)")
    p.add_argument("--agreement", type=float,
                   help="top-1 agreement bar (default: the card's convert.agreement, else 0.995)")
    p.add_argument("--max-accuracy-drop", type=float, default=0.005, help="accuracy drop bar (default 0.005)")
    p.add_argument("--overrides", type=Path, help="JSON of fixed types, e.g. {\"Conv_0.weight\": \"ap_fixed<8,3>\"}")
    p.add_argument("--scale", type=float, help="bare .onnx: input scale (x = (pixel*scale - mean)/std)")
    p.add_argument("--mean", type=float, help="bare .onnx: input mean")
    p.add_argument("--std", type=float, help="bare .onnx: input std")
    p.add_argument("--classes", nargs="+", help="bare .onnx: class names")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("verify", help="check a build folder (integrity, emulator, RTL bit for bit, resources); "
                       "writes verify.json, exits 1 naming each failed check")
    p.add_argument("build", type=Path, help="build folder from `edgefpga convert`")
    p.add_argument("--emulator-only", action="store_true", help="only the hls4ml emulator check")
    p.add_argument("--resources", action="store_true",
                   help="also estimate LUT/FF/DSP/BRAM with Yosys, layer by layer (minutes: see docs/rtl.md)")
    p.add_argument("--jobs", type=int, default=1, help="Yosys processes at a time for --resources (default 1)")
    p.add_argument("--images", help="images to verify on: folder, .npz or elpv:<subset> (ELPV models: elpv:test)")
    p.add_argument("--limit", type=int, help="use a fixed random sample of N images")
    p.add_argument("--agreement", type=float, help="top-1 agreement bar (default: the build's, 0.995)")
    p.add_argument("--accept-edits", action="store_true",
                   help="go on when files changed since convert (to see what an edit does to the other checks)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("build", help="run Vivado/Vitis on a build folder (bitstream + .hwh); needs AMD tools")
    p.add_argument("build", type=Path, help="build folder from `edgefpga convert`")
    p.add_argument("--no-bitfile", action="store_true", help="stop after HLS synthesis and IP export")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("infer", help="classify images with a model on a backend (board, RTL, emulator or ONNX)")
    p.add_argument("images", nargs="+", help="image files, folders (class subfolders give labels) or elpv:<subset>[:N]")
    p.add_argument("--model", default="elpv_defect", help="build folder, model folder or zoo name (default elpv_defect)")
    p.add_argument("--backend", default="auto", help="auto (default), pynq, rtl, emulator or onnx")
    p.add_argument("--threshold", type=float, default=0.5, help="defect probability threshold (default 0.5)")
    p.add_argument("--batch", type=int, help="images per backend call (default: the backend's)")
    p.add_argument("--rows", type=int, default=20, help="table rows to print (default 20)")
    p.add_argument("--csv", type=Path, help="write every result to this CSV file")
    p.add_argument("--json", action="store_true", help="print every result as JSON instead of the table")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser("bench", help="images/s and latency per backend, board projection; writes runtime.json")
    p.add_argument("--model", default="build/elpv_defect",
                   help="build folder (default build/elpv_defect, converted from the shipped model if missing)")
    p.add_argument("--images", type=int, default=32, help="ELPV test cells per backend (default 32)")
    p.add_argument("--out", type=Path, default=Path("bench/results/runtime.json"))
    p.add_argument("--no-pynq-sim", action="store_true", help="skip the pynq backend on the simulated PS-PL")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_bench)

    sub.add_parser("demo", help="the end-to-end job: ELPV cells through the ROS 2 inspection node on the "
                   "RTL simulation, with a report (options: edgefpga demo --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from edgefpga.models.arch import ArchitectureError
    from edgefpga.models.card import ModelCardError
    from edgefpga.models.preprocess import ImageError

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo"]:
        return run_demo(argv[1:])
    args = build_parser().parse_args(argv)
    errors: tuple[type[Exception], ...] = (UserError, ModelCardError, ImageError, ArchitectureError)
    if args.command in ("convert", "verify", "build", "infer", "bench"):
        from edgefpga.runtime.backends import EngineError

        errors += (EngineError,)
    if args.command in ("convert", "verify", "build", "infer", "bench"):
        from edgefpga.hw.hls import EmulatorError
        from edgefpga.hw.onnx_check import ConversionError
        from edgefpga.sim.verilator import SimulatorError

        errors += (ConversionError, EmulatorError, SimulatorError)
    try:
        return args.func(args)
    except errors as exc:
        print(f"edgefpga {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
