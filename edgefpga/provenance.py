"""Which code a measurement came from: the commit that bench/ and the collab demo write into their JSON."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# what measurements write: a result file left by an earlier benchmark of the same `make bench` is no
# code change, so it does not make the next one "dirty"
OUTPUTS = ("bench/results",)


def git_commit(root: Path = ROOT) -> str:
    """The short HEAD commit, ``+dirty`` when a tracked file other than the measurements' own
    outputs differs from it; ``unknown`` outside a git checkout."""
    excluded = [f":(exclude){path}" for path in OUTPUTS]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded],
                               cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")
