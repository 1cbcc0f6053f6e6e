"""`edgefpga demo` end to end on a slice of the test split (the full run is `make demo`): three
node processes over DDS, the RTL backend, the terminal report and the HTML report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end_and_writes_the_report(elpv_build, tmp_path):
    out = tmp_path / "demo_out"
    result = subprocess.run([str(Path(sys.executable).parent / "edgefpga"), "demo", "--build", str(elpv_build),
                             "--out", str(out), "--source", "elpv:test:24", "--rate", "8"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout
    assert "24 of 24 cells inspected over DDS (0 lost), backend rtl" in text
    assert "accuracy" in text and "cycles per image" in text and "projected board throughput" in text
    assert "CC BY-NC-SA 4.0" in text
    html = (out / "report.html").read_text()
    assert html.count("<figure>") == 8 and "data:image/png;base64," in html
    assert len((out / "results.csv").read_text().splitlines()) == 25
