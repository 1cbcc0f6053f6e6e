"""The commit written into every benchmark JSON: a result file from an earlier benchmark does not
mark the next measurement dirty, a changed source file does."""

from __future__ import annotations

import subprocess
from pathlib import Path

from edgefpga.provenance import git_commit


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


def test_results_do_not_make_a_checkout_dirty_code_does(tmp_path):
    (tmp_path / "bench" / "results").mkdir(parents=True)
    (tmp_path / "bench" / "results" / "board.json").write_text("{}\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "start")
    head = git(tmp_path, "rev-parse", "--short", "HEAD")
    assert git_commit(tmp_path) == head
    (tmp_path / "bench" / "results" / "board.json").write_text('{"fps": 1}\n')
    assert git_commit(tmp_path) == head
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == head + "+dirty"
    assert git_commit(tmp_path / "nowhere") == "unknown"
