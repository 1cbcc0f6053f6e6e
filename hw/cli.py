"""``edgefpga convert`` and ``edgefpga build``: the hw part of the command (edgefpga/cli.py).

hls4ml and qonnx load inside the commands (the `convert` extra).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def user_errors() -> tuple[type[Exception], ...]:
    from edgefpga.hw.hls import EmulatorError
    from edgefpga.hw.onnx_check import ConversionError
    from edgefpga.models.card import ModelCardError
    from edgefpga.models.preprocess import ImageError

    return ModelCardError, ImageError, ConversionError, EmulatorError


def cmd_convert(args: argparse.Namespace) -> int:
    from edgefpga.hw.convert import ConvertConfig, convert
    from edgefpga.hw.report import summary_lines
    from edgefpga.models.card import resolve_model_dir
    from edgefpga.models.imagefiles import Skips

    source = resolve_model_dir(args.model)
    out = args.out or Path("build") / source.stem
    cfg = ConvertConfig(board=args.board, calibration=args.calibration, calibration_images=args.calibration_images,
                        agreement=args.agreement, max_accuracy_drop=args.max_accuracy_drop, overrides=args.overrides,
                        scale=args.scale, mean=args.mean, std=args.std, classes=args.classes,
                        progress=not args.quiet, fps=args.fps, plan=args.plan, budget_share=args.budget,
                        emulator=args.emulator,
                        skips=Skips(strict=args.strict, command="edgefpga convert"))
    report = convert(str(source), out, cfg, force=args.force, log=(lambda _m: None) if args.quiet else print)
    print("\n".join(summary_lines(report)))
    print(f"wrote {out}/ (report.json, report.md, ranges.png, hls/); next: edgefpga verify {out} --emulator-only")
    return cfg.skips.exit_status()


def cmd_build(args: argparse.Namespace) -> int:
    import sys

    from edgefpga.hw.vendor_build import VivadoFailed, build

    try:
        files = build(args.build, board=args.board, vivado=args.vivado, jobs=args.jobs)
    except VivadoFailed as exc:
        print(f"edgefpga build: FAILED {exc}", file=sys.stderr)
        return 1
    for path in files:
        print(f"wrote {path}")
    print("next: copy the build folder's report.json, model/, overlay/overlay.json and bitstream/ to the board "
          "(docs/board.md) and run `edgefpga infer ... --model <folder> --backend pynq` there")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--fps", type=float, help="frames per second to plan for: a slower, smaller design than the "
                   "fastest that fits (default: the fastest that fits)")
    p.add_argument("--plan", type=Path, help="plan file pinning layers' lanes: a build's plan.json, or JSON "
                   "{\"Conv_0\": {\"ci\": 1, \"po\": 8, \"kp\": 3}, ...} (FINN's folding config)")
    p.add_argument("--budget", type=float, default=0.8, help="share of each board resource (LUT, FF, DSP, BRAM) "
                   "the design may use (default 0.8)")
    p.add_argument("--no-emulator", dest="emulator", action="store_false",
                   help="skip compiling hls4ml's C simulation (g++, tens of seconds to minutes): convert checks the "
                   "integer model alone; `verify` compiles the emulator when it checks it")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--strict", action="store_true", help="stop at the first unusable calibration image file (exit 2); "
                   "by default each is named and left out (report.json calibration_skipped), exit status 3")
    p.set_defaults(func=cmd_convert, user_errors=user_errors)

    p = sub.add_parser("build", help="the PYNQ overlay's bitstream + .hwh: writes the Vivado Tcl, runs Vivado when it "
                       "is on PATH (exit 2 without it, after writing the Tcl; exit 1 when Vivado fails)")
    p.add_argument("build", type=Path, help="build folder from `edgefpga convert`")
    p.add_argument("--board", help="pynq-z2, zcu102, zcu104 or kv260 (default: the board the build was converted for)")
    p.add_argument("--vivado", help="the vivado executable (default: vivado on PATH)")
    p.add_argument("--jobs", type=int, default=4, help="Vivado implementation jobs (default 4)")
    p.set_defaults(func=cmd_build, user_errors=user_errors)
