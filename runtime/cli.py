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

XC7Z020_DSPS = 220
DEFAULT_ZOO_MODEL = Path(__file__).resolve().parent.parent / "models" / "zoo" / "elpv_defect"


class UserError(Exception):
    """An error in what the user asked for; printed without a traceback."""


def resolve_model_dir(value: str) -> Path:
    """A model folder path, or the name of a shipped zoo model (e.g. ``elpv_defect``)."""
    path = Path(value)
    if path.exists() or "/" in value:
        return path
    zoo = DEFAULT_ZOO_MODEL.parent / value
    return zoo if zoo.exists() else path


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
    cfg = TrainConfig(**base["train"] | given(args, "epochs", "seed", "threads", "limit"))
    build = build_zoo_model(args.out, arch, cfg, AugmentConfig(**base["augment"]), name=args.name)
    print(f"wrote {build.out}/model.onnx and card.json: test accuracy {build.facts['test']['accuracy']:.4f}, "
          f"balanced {build.facts['test']['balanced_accuracy']:.4f}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from edgefpga.models.card import load_card
    from edgefpga.models.evaluate import evaluate, format_report

    model_dir = resolve_model_dir(args.model)
    card = load_card(model_dir)
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


def cmd_demo(args: argparse.Namespace) -> int:
    """The train-free demo: evaluate the shipped model and print what it is and how good it is."""
    from edgefpga.models.card import load_card
    from edgefpga.models.evaluate import evaluate, format_report

    card = load_card(args.model)
    raw = card.raw
    print(f"edgefpga {__version__} demo: shipped model {card.name} ({card.model_path})")
    print(f"  input {card.input.height}x{card.input.width} {card.input.color}, {raw['params']} parameters, "
          f"{raw['macs'] / 1e6:.2f} M multiply-accumulates per image")
    print(f"  data: {raw['dataset']['name']}, license {raw['dataset']['license']}")
    metrics = evaluate(card.folder, "test", progress=True, confusion_png=args.confusion_png)
    print(format_report(card.name, metrics, card.classes))
    for row in raw["metrics"].get("fixed_point_check", []):
        print(f"  fixed point {row['weight_bits']}-bit weights / {row['activation_bits']}-bit activations: "
              f"accuracy {row['accuracy']:.4f}, top-1 agreement with float {row['top1_agreement']:.4f}")
    cycles = max(card.input.height * card.input.width * card.input.channels, raw["macs"] / XC7Z020_DSPS)
    print(f"  accelerator bound on a PYNQ-Z2 (xc7z020, {XC7Z020_DSPS} DSPs, 100 MHz): >= {cycles:,.0f} cycles "
          f"per frame, <= {100e6 / cycles:,.0f} frames/s (roofline; RTL cycle counts come with `edgefpga verify`)")
    print(f"confusion matrix plot: {args.confusion_png}")
    return 0


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


def cmd_verify(args: argparse.Namespace) -> int:
    from edgefpga.sim.verify import verify

    result = verify(args.build, images=args.images, limit=args.limit, emulator_only=args.emulator_only,
                    progress=not args.quiet, resources=args.resources, jobs=args.jobs)
    emu = result["emulator"]
    line = f"emulator vs float on {emu['n']} images ({emu['images']}): top-1 agreement {emu['top1_agreement']:.2%}"
    if "accuracy" in emu:
        line += f", accuracy {emu['accuracy']:.4f} (float {emu['float_accuracy']:.4f})"
    print(line)
    if "rtl" in result:
        rtl = result["rtl"]
        print(f"RTL vs emulator: {rtl['bit_exact_frames']} of {rtl['n']} frames bit-exact "
              f"({rtl['idle_percent']} % idle input, {rtl['backpressure_percent']} % backpressure); "
              f"latency {rtl['latency_cycles']:,} cycles, II {rtl['ii_cycles']:,} cycles "
              f"({rtl['ii_over_roofline']}x roofline), {rtl['fps_at_clock']:,} frames/s at the board clock")
    if "resources" in result:
        res = result["resources"]
        fits = "yes" if res.get("fits") else "no"
        verdict = f"; within {res['limit_share']:.0%} of each: {fits}" if "fits" in res else ""
        print("Yosys estimate: " + ", ".join(f"{k} {res['used'][k]:,.0f} of {res['available'][k]:,} "
                                               f"({res['share'][k]:.0%})" for k in res["used"])
              + f"{verdict} ({res['seconds']} s)")
    print(f"wrote {Path(args.build) / 'verify.json'}")
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
    p.add_argument("--agreement", type=float, default=0.995, help="top-1 agreement bar (default 0.995)")
    p.add_argument("--max-accuracy-drop", type=float, default=0.005, help="accuracy drop bar (default 0.005)")
    p.add_argument("--overrides", type=Path, help="JSON of fixed types, e.g. {\"Conv_0.weight\": \"ap_fixed<8,3>\"}")
    p.add_argument("--scale", type=float, help="bare .onnx: input scale (x = (pixel*scale - mean)/std)")
    p.add_argument("--mean", type=float, help="bare .onnx: input mean")
    p.add_argument("--std", type=float, help="bare .onnx: input std")
    p.add_argument("--classes", nargs="+", help="bare .onnx: class names")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("verify", help="check a build folder against the float model; writes verify.json")
    p.add_argument("build", type=Path, help="build folder from `edgefpga convert`")
    p.add_argument("--emulator-only", action="store_true", help="only the hls4ml emulator check")
    p.add_argument("--resources", action="store_true",
                   help="also estimate LUT/FF/DSP/BRAM with Yosys, layer by layer (minutes: see docs/rtl.md)")
    p.add_argument("--jobs", type=int, default=1, help="Yosys processes at a time for --resources (default 1)")
    p.add_argument("--images", help="images to verify on: folder, .npz or elpv:<subset> (ELPV models: elpv:test)")
    p.add_argument("--limit", type=int, help="use a fixed random sample of N images")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("build", help="run Vivado/Vitis on a build folder (bitstream + .hwh); needs AMD tools")
    p.add_argument("build", type=Path, help="build folder from `edgefpga convert`")
    p.add_argument("--no-bitfile", action="store_true", help="stop after HLS synthesis and IP export")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("demo", help="the main job on the embedded default (no board needed)")
    p.add_argument("--model", type=Path, default=DEFAULT_ZOO_MODEL)
    p.add_argument("--confusion-png", type=Path, default=Path("demo_out/confusion_test.png"))
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    from edgefpga.models.arch import ArchitectureError
    from edgefpga.models.card import ModelCardError
    from edgefpga.models.preprocess import ImageError

    args = build_parser().parse_args(argv)
    errors: tuple[type[Exception], ...] = (UserError, ModelCardError, ImageError, ArchitectureError)
    if args.command in ("convert", "verify", "build"):
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
