"""The generated RTL of whole networks, against the hls4ml emulator bit for bit (`edgefpga verify`,
Verilator harness, random idle input and backpressure), with exact cycle counts; and through its
AXI-Stream ports in cocotb for the protocol cases."""

import json

import pytest
from conftest import VERIFY_SAMPLE

from edgefpga.hw.images import load_image_set
from edgefpga.models.card import InputSpec
from edgefpga.sim.axis_check import check_axis_top, frame_beats

pytestmark = pytest.mark.slow


def test_elpv_rtl_is_bit_exact_and_near_the_roofline(elpv_verify, elpv_build):
    rtl = elpv_verify["rtl"]
    assert rtl["n"] == rtl["bit_exact_frames"] == VERIFY_SAMPLE and rtl["framing_errors"] == 0
    assert rtl["idle_percent"] > 0 and rtl["backpressure_percent"] > 0
    assert rtl["ii_cycles"] <= 1.25 * rtl["roofline_cycles"]
    intervals = rtl["interval_cycles_per_frame"]  # frame to frame; the II is the largest of them
    assert len(intervals) == rtl["timing_frames"] - 1 and max(intervals) == rtl["ii_cycles"]
    # a frame's first pixel in to its last score out: the first layer takes the frame's pixels over
    # one interval, and the planner lets the small last layers take a whole interval each (fewer
    # multipliers, docs/rtl.md): latency is a little over two intervals, never a frame per layer
    assert rtl["latency_cycles"] <= 2.5 * rtl["roofline_cycles"]
    manifest = json.loads((elpv_build / "rtl" / "manifest.json").read_text())
    assert manifest["input"] == {"prefix": "s_axis", "tdata_bits": 8, "height": 96, "width": 96, "channels": 1}
    assert manifest["reset"] == {"name": "rst_n", "active_low": True}
    assert all((elpv_build / "rtl" / src).is_file() for src in manifest["sources"])


def test_foreign_rtl_is_bit_exact(foreign_verify):
    rtl = foreign_verify["rtl"]
    assert rtl["bit_exact_frames"] == rtl["n"] == VERIFY_SAMPLE


def test_axis_protocol_cases(tiny_build, tmp_path):
    """Framing on the stream's input (ef_axis_in): frames back to back, a short and a long one
    flagged and the next right again, a reset between frames. A property of the stream's ends, not
    of the network: on the tiny net's build (16x16 frames of 256 beats), which compiles in seconds."""
    report = json.loads((tiny_build / "report.json").read_text())
    spec = InputSpec.from_dict(report["model"]["input"], "report")
    pixels = load_image_set(str(tiny_build.parent / "calib.npz"), spec, report["model"]["classes"]).take(5).pixels
    f = [frame_beats(x) for x in pixels]
    sequence = [{"beats": f[0]}, {"beats": f[1]},                      # back to back
                {"beats": f[2][: len(f[2]) // 2]},                     # short: tlast halfway
                {"beats": f[3]},                                       # must be right again
                {"beats": f[4] + f[0][:100]},                          # long: 100 beats too many
                {"beats": f[1]},                                       # right again
                {"beats": f[2], "reset_before": True}, {"beats": f[3]}]  # reset between frames
    result = check_axis_top(tiny_build, sequence, tmp_path / "axis")
    assert [frame["ok"] for frame in result["frames"]] == [True] * len(sequence)
    assert result["err_short_pulses"] == 1 and result["err_long_pulses"] == 1
