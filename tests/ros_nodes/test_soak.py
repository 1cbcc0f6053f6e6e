"""Thirty seconds at 30 Hz through the inspection node (onnx backend, reliable QoS, queue_policy
all), as bench/ros_soak.py runs it for ten (`make bench`): every image answered once, the node's
counters account for all of them, resident memory flat within 5 % after warm-up, /diagnostics at
its rate throughout. The script exits non-zero when a check fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SOAK = Path(__file__).resolve().parents[2] / "bench" / "ros_soak.py"


@pytest.mark.timeout(240)
def test_soak_at_30_hz_loses_nothing_and_does_not_grow(tmp_path):
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_DOMAIN_ID=str(10 + (zlib.crc32(b"soak") + os.getpid()) % 80))
    run = subprocess.run([sys.executable, str(SOAK), "--minutes", "0.5", "--out", str(tmp_path / "soak.json"), "--quiet"],
                         capture_output=True, text=True, timeout=220, env=env)
    result = json.loads((tmp_path / "soak.json").read_text())
    assert run.returncode == 0, (run.stderr[-2000:], result["checks"])
    assert result["sent"] == 900 and result["answered"] == 900
    assert result["diagnostics"]["messages"] >= 25
