"""The `edgefpga` command as a user runs it: a real subprocess, real exit codes."""

import subprocess
import sys
from pathlib import Path

EDGEFPGA = [str(Path(sys.executable).parent / "edgefpga")]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(EDGEFPGA + list(args), capture_output=True, text=True, cwd=cwd, timeout=600)


def test_help_lists_the_steps():
    result = run("--help")
    assert result.returncode == 0
    for command in ("train", "eval", "demo"):
        assert command in result.stdout


def test_eval_by_zoo_name_matches_folder(zoo_model):
    by_name = run("eval", "elpv_defect", "--json", "--quiet")
    by_path = run("eval", str(zoo_model), "--json", "--quiet")
    assert by_name.returncode == 0 and by_name.stdout == by_path.stdout


def test_missing_model_folder_exits_2_naming_it(tmp_path):
    result = run("eval", str(tmp_path / "no_such_model"))
    assert result.returncode == 2
    assert "no_such_model: model folder does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_progress_in_a_log_is_whole_lines():
    """Off a terminal (a pipe here, a log file or CI for a user) the evaluation's progress comes as
    plain lines, not tqdm's carriage-return redraws piled into one line."""
    result = run("eval", "elpv_defect")
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr
    bar_lines = [line for line in result.stderr.splitlines() if line.startswith("onnxruntime:")]
    assert bar_lines and "654/654" in bar_lines[-1], result.stderr
