#!/usr/bin/env python3
"""Build the edgefpga_msgs ROS 2 interface package into a venv that has ROS 2 Kilted from PyPI.

    python ros_nodes/build_interfaces.py --venv .venv

`make setup` runs this after `pip install -e '.[dev,ros]'`. It needs no ROS install: the
`ros-kilted-*` wheels (the `ros` extra in pyproject.toml) bring ament_cmake, the rosidl generators,
std_msgs and sensor_msgs into the venv, which then serves as the CMake prefix and install prefix.

Steps, each with a clear error when it fails:
1. find cmake (>= 3.16), ninja and a C/C++ compiler, and the venv interpreter's Python.h;
2. rewrite the wheels' exported `*__rosidl_generator_pyExport.cmake` files, which name the wheel
   build machine's interpreter (`/opt/python/cp311-cp311/include/python3.11` and its numpy
   include) instead of this venv's; idempotent;
3. configure, build and install edgefpga_msgs with CMake + Ninja into the venv, the build folder
   being `<venv>/var/edgefpga_msgs-build`;
4. check that `from edgefpga_msgs.msg import InspectionResult, InspectionResultArray` works in the
   venv's python.

The build is skipped when the installed package is newer than its sources (msg/*.msg,
package.xml, CMakeLists.txt) and imports; `--force` rebuilds anyway.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

PACKAGE = "edgefpga_msgs"
SOURCE = Path(__file__).resolve().parent / PACKAGE
MESSAGES = ("InspectionResult", "InspectionResultArray", "Detection", "DetectionArray")
MIN_CMAKE = (3, 16)
# what `pip install -e '.[ros]'` should have brought; named in the error when a piece is missing
NEEDED_CMAKE_PACKAGES = ("ament_cmake", "rosidl_default_generators", "std_msgs", "sensor_msgs")


class BuildError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[build_interfaces] {msg}", flush=True)


def child_env(venv: Path) -> dict[str, str]:
    """The environment for the venv's processes.

    ros_wheels_bootstrapper (a .pth in the ROS wheels) re-executes every interpreter of the venv
    once with LD_LIBRARY_PATH extended and `_ROS_WHEELS_BOOTSTRAP_COMPLETE=1` set. When this script
    itself runs in a (possibly other) bootstrapped venv, the guard would stop the target venv's
    interpreter from adding its own library folders, so drop the guard and the running venv's
    folders and let the target venv's interpreter bootstrap itself.
    """
    env = dict(os.environ)
    if env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None) and sys.prefix != sys.base_prefix:
        own = Path(sys.prefix).resolve()
        parts = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
        parts = [p for p in parts if not Path(p).resolve().is_relative_to(own)]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(parts)
        if not parts:
            del env["LD_LIBRARY_PATH"]
    env.pop("PYTHONHOME", None)
    return env


def run(cmd: list[str], env: dict[str, str], log_file: Path | None = None, cwd: Path | None = None) -> str:
    """Run cmd; on failure raise BuildError with the tail of its output (and the log file's name)."""
    proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("a") as fh:
            fh.write(f"$ {' '.join(cmd)}\n{proc.stdout}\n")
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.rstrip().splitlines()[-40:])
        where = f" (full log: {log_file})" if log_file else ""
        raise BuildError(f"`{' '.join(cmd)}` failed with exit code {proc.returncode}{where}:\n{tail}")
    return proc.stdout


def venv_python(venv: Path) -> Path:
    py = venv / "bin" / "python"
    if not py.exists():
        raise BuildError(f"{py} not found: create the venv first (python3.11 -m venv {venv})")
    return py


def venv_info(py: Path, env: dict[str, str]) -> dict[str, str]:
    code = (
        "import sys, sysconfig, site\n"
        "print('version=%d.%d' % sys.version_info[:2])\n"
        "print('include=' + sysconfig.get_paths()['include'])\n"
        "print('purelib=' + sysconfig.get_paths()['purelib'])\n"
        "try:\n"
        "    import numpy; print('numpy=' + numpy.get_include())\n"
        "except ImportError:\n"
        "    print('numpy=')\n"
    )
    out = run([str(py), "-c", code], env)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def find_tool(name: str, venv: Path) -> str | None:
    """The venv's own tool first (the `cmake`/`ninja` wheels), then PATH."""
    own = venv / "bin" / name
    if own.exists():
        return str(own)
    return shutil.which(name)


def check_tools(venv: Path, info: dict[str, str], env: dict[str, str]) -> tuple[str, str]:
    cmake = find_tool("cmake", venv)
    if cmake is None:
        raise BuildError("cmake not found: `pip install cmake ninja` into the venv, or apt-get install cmake ninja-build")
    version = run([cmake, "--version"], env).split()[2]
    if tuple(int(x) for x in re.findall(r"\d+", version)[:2]) < MIN_CMAKE:
        raise BuildError(f"{cmake} is version {version}; {'.'.join(map(str, MIN_CMAKE))} or newer is needed (pip install cmake)")
    ninja = find_tool("ninja", venv)
    if ninja is None:
        raise BuildError("ninja not found: `pip install ninja` into the venv, or apt-get install ninja-build")
    for compiler, env_var in (("c++", "CXX"), ("cc", "CC")):
        wanted = os.environ.get(env_var) or compiler
        if shutil.which(wanted) is None and shutil.which("g++" if compiler == "c++" else "gcc") is None:
            raise BuildError(f"no C/C++ compiler ({wanted}) found: apt-get install g++")
    header = Path(info["include"]) / "Python.h"
    if not header.exists():
        pkg = f"python{info['version']}-dev"
        if os.geteuid() == 0 and shutil.which("apt-get"):
            log(f"{header} missing: apt-get install {pkg}")
            subprocess.run(["apt-get", "update", "-q"], stdout=subprocess.DEVNULL, check=False)
            subprocess.run(["apt-get", "install", "-y", "-q", pkg], stdout=subprocess.DEVNULL, check=False)
        if not header.exists():
            raise BuildError(f"{header} not found: the rosidl Python bindings need the interpreter's headers "
                             f"(apt-get install {pkg})")
    if not info.get("numpy"):
        raise BuildError("numpy is not installed in the venv (the ROS wheels depend on it): pip install numpy")
    return cmake, ninja


def check_ros_wheels(venv: Path) -> None:
    missing = [p for p in NEEDED_CMAKE_PACKAGES if not (venv / "share" / p / "cmake").is_dir()]
    if missing:
        raise BuildError(f"{', '.join(missing)} not found under {venv / 'share'}: install the ROS 2 wheels first "
                         "(pip install -e '.[ros]', the `ros` extra of pyproject.toml)")


# An INTERFACE_INCLUDE_DIRECTORIES entry naming a Python include folder or a numpy include folder.
_PY_INCLUDE = re.compile(r"^.*/include/python3\.\d+$")
_NP_INCLUDE = re.compile(r"^.*/numpy/(_core|core)/include$")
_INCLUDE_LINE = re.compile(r'(INTERFACE_INCLUDE_DIRECTORIES ")([^"]*)(")')


def fix_exported_cmake(venv: Path, info: dict[str, str]) -> int:
    """Point the wheels' exported Python/numpy include folders at this venv's; returns files changed."""
    changed = 0

    def fix(match: re.Match) -> str:
        entries = []
        for entry in match.group(2).split(";"):
            if _PY_INCLUDE.match(entry):
                entry = info["include"]
            elif _NP_INCLUDE.match(entry):
                entry = info["numpy"]
            entries.append(entry)
        return match.group(1) + ";".join(entries) + match.group(3)

    for path in sorted((venv / "share").glob("*/cmake/*.cmake")):
        text = path.read_text()
        if "INTERFACE_INCLUDE_DIRECTORIES" not in text or ("python3" not in text and "numpy" not in text):
            continue
        new = _INCLUDE_LINE.sub(fix, text)
        if new != text:
            path.write_text(new)
            changed += 1
    return changed


def sources() -> list[Path]:
    files = [SOURCE / "package.xml", SOURCE / "CMakeLists.txt", *sorted((SOURCE / "msg").glob("*.msg"))]
    for f in files:
        if not f.exists():
            raise BuildError(f"{f} is missing")
    return files


def installed_marker(info: dict[str, str]) -> Path:
    # the last thing written for the Python side: the generated module of the last message
    return Path(info["purelib"]) / PACKAGE / "msg" / "__init__.py"


def import_check(py: Path, env: dict[str, str]) -> None:
    names = ", ".join(MESSAGES)
    code = (
        f"from {PACKAGE}.msg import {names}\n"
        "m = InspectionResultArray(results=[InspectionResult(label='ok')])\n"
        "assert m.results[0].label == 'ok' and m.results[0].accelerator_cycles == 0\n"
        "from rclpy.serialization import serialize_message, deserialize_message\n"
        "assert deserialize_message(serialize_message(m), InspectionResultArray) == m\n"
    )
    try:
        run([str(py), "-c", code], env)
    except BuildError as exc:
        raise BuildError(f"{PACKAGE} was installed but does not import in {py}:\n{exc}") from None


def up_to_date(py: Path, info: dict[str, str], env: dict[str, str]) -> bool:
    marker = installed_marker(info)
    if not marker.exists():
        return False
    if marker.stat().st_mtime < max(f.stat().st_mtime for f in sources()):
        return False
    try:
        import_check(py, env)
    except BuildError:
        return False
    return True


def stale_cache(build_dir: Path) -> bool:
    """Whether build_dir's CMake cache belongs to another source folder (a moved checkout)."""
    cache = build_dir / "CMakeCache.txt"
    if not cache.exists():
        return False
    for line in cache.read_text(errors="replace").splitlines():
        if line.startswith("CMAKE_HOME_DIRECTORY:"):
            return Path(line.split("=", 1)[1]).resolve() != SOURCE.resolve()
    return True


def build(venv: Path, force: bool = False, jobs: int | None = None) -> None:
    venv = venv.resolve()
    env = child_env(venv)
    py = venv_python(venv)
    info = venv_info(py, env)
    check_ros_wheels(venv)
    n = fix_exported_cmake(venv, info)
    if n:
        log(f"pointed {n} exported cmake file(s) of the ROS wheels at {info['include']} and {info['numpy']}")
    if not force and up_to_date(py, info, env):
        log(f"{PACKAGE} is up to date in {venv}")
        return
    cmake, ninja = check_tools(venv, info, env)
    build_dir = venv / "var" / f"{PACKAGE}-build"
    log_file = build_dir / "build.log"
    if stale_cache(build_dir):
        log(f"{build_dir} was configured for another source folder: starting it afresh")
        shutil.rmtree(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    log_file.write_text("")
    started = time.monotonic()
    log(f"building {PACKAGE} into {venv} (build folder {build_dir}, log {log_file.name})")
    run([cmake, "-S", str(SOURCE), "-B", str(build_dir), "-G", "Ninja",
         f"-DCMAKE_MAKE_PROGRAM={ninja}",
         f"-DCMAKE_INSTALL_PREFIX={venv}", f"-DCMAKE_PREFIX_PATH={venv}",
         f"-DPython3_EXECUTABLE={py}", "-DPython3_FIND_VIRTUALENV=ONLY",
         "-DBUILD_TESTING=OFF", "-DCMAKE_BUILD_TYPE=Release"], env, log_file)
    build_cmd = [cmake, "--build", str(build_dir)]
    if jobs:
        build_cmd += ["--parallel", str(jobs)]
    run(build_cmd, env, log_file)
    run([cmake, "--install", str(build_dir)], env, log_file)
    installed_marker(info).touch()
    import_check(py, env)
    log(f"built and installed {PACKAGE} in {time.monotonic() - started:.0f} s; "
        f"`from {PACKAGE}.msg import {', '.join(MESSAGES)}` works")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--venv", type=Path, default=Path(".venv"), help="the venv holding the ROS 2 wheels (default .venv)")
    ap.add_argument("--force", action="store_true", help="rebuild even when the installed package is up to date")
    ap.add_argument("--jobs", "-j", type=int, default=None, help="parallel compile jobs (default: ninja's)")
    args = ap.parse_args(argv)
    try:
        build(args.venv, force=args.force, jobs=args.jobs)
    except BuildError as exc:
        print(f"[build_interfaces] error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
