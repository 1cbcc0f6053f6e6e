"""The hardware models' resource estimates (hw/layers, fitted on Yosys by sim/calibrate.py):
structure that must hold for any fit, Yosys's own memory and DSP mapping rules, and every
calibration point predicted within the error its calibration file records. No Yosys runs here
(tests/sim/test_resources.py compares a whole design with Yosys)."""

import json

import pytest

from edgefpga.hw.layers.base import CALIBRATION_DIR, Resources
from edgefpga.hw.layers.estimate import (KEYS, SMALL, design_resources, dsp_per_product, map_memory, model_of,
                                         observed, predict, stage_resources)
from edgefpga.sim.calibrate import MODULES, conv, dense, grid, rtl_digest, verilog_logic


def test_every_module_has_a_calibration_with_its_grid():
    for module in MODULES:
        data = json.loads((CALIBRATION_DIR / f"{module}.json").read_text())
        assert data["module"] == module and data["coefficients"]
        assert len(data["points"]) >= len(grid(module)) >= 4
        assert set(data["quality"]) == set(KEYS)


@pytest.mark.parametrize("module", MODULES)
def test_every_calibration_is_of_the_rtl_as_it_is(module):
    """A module's Verilog changed (comments aside) since its calibration was synthesized: rerun
    ``python -m edgefpga.sim.calibrate --modules <module>``, or its model prices other logic."""
    data = json.loads((CALIBRATION_DIR / f"{module}.json").read_text())
    assert data["rtl_digest"] == rtl_digest(module), f"{module}: calibrated on other RTL; recalibrate it"


def test_a_comment_is_not_a_change_of_the_rtl():
    text = "module m; // a comment\n  /* two\n lines */ assign y = a;   // b\nendmodule\n"
    assert verilog_logic(text) == verilog_logic("module m;\nassign y = a;\nendmodule") != verilog_logic(
        text.replace("a;", "b;"))


@pytest.mark.parametrize("module", MODULES)
def test_every_calibration_point_within_its_recorded_error(module):
    """The fit reproduces its own data: each point's prediction from today's code is within the
    largest error the calibration file states (relative, or absolute under ``small``)."""
    data = json.loads((CALIBRATION_DIR / f"{module}.json").read_text())
    for point in data["points"]:
        got = predict(module, model_of(module, point["params"]), data["coefficients"])
        truth = observed(point["cells"])
        for key in KEYS:
            quality = data["quality"][key]
            allowed = quality["max_rel_err"] * max(truth[key], SMALL[key]) + 0.51
            assert abs(getattr(got, key) - truth[key]) <= allowed, (module, key, point["params"])


def test_conv_grows_with_its_lanes():
    """More lanes, more of the fabric: DSP48s one per multiplier; with LUT multipliers, LUTs with
    every lane (input channels CI, outputs PO, window positions KP); with DSPs, LUTs and FFs with
    the output lanes PO (requantization, accumulators). More CI with DSPs may take fewer LUTs: the
    chunk multiplexer in front of the multipliers shrinks (C/CI inputs)."""
    lut_lanes = [(1, 1, 1), (2, 1, 1), (2, 2, 1), (2, 2, 3), (4, 2, 3), (4, 4, 3), (8, 4, 3)]
    previous = None
    for ci, po, kp in lut_lanes:  # each with its own memory layout (read_regs), as a build sets it
        r = stage_resources("ef_conv2d", conv(24, 24, 16, 32, 3, ci, po, kp, dsp=0))
        if previous is not None:
            assert r.lut > previous.lut and r.dsp == 0
        previous = r
    for ci in (1, 4, 16):
        previous = None
        for po in (1, 2, 4, 8):
            r = stage_resources("ef_conv2d", conv(24, 24, 16, 32, 3, ci, po))
            assert r.dsp == ci * po
            if previous is not None:
                assert r.ff > previous.ff
                # a weight ROM that leaves block RAM for logic trades BRAM for LUTs
                assert r.lut > previous.lut or r.bram18 > previous.bram18
            previous = r


def test_lut_multipliers_trade_dsps_for_luts():
    base = conv(16, 16, 16, 16, 3, 4, 4, 1)
    with_dsp = stage_resources("ef_conv2d", base)
    with_luts = stage_resources("ef_conv2d", dict(base, USE_DSP=0))
    assert with_dsp.dsp == 16 and with_luts.dsp == 0
    assert with_luts.lut > with_dsp.lut + 16 * 40  # a 9 x 8 shift-and-add multiplier is tens of LUTs


def test_dsp_count_is_the_multipliers():
    """One DSP48E1 per product that fits 25 x 18 signed (XW+1 x WW), for conv and dense."""
    for ci, po, kp in ((1, 1, 1), (3, 8, 1), (16, 4, 1), (1, 8, 3)):
        assert stage_resources("ef_conv2d", conv(12, 12, 48, 16, 3, ci, po, kp, xw=16, ww=16)).dsp == ci * po * kp
    assert stage_resources("ef_dense", dense(1, 64, 10, 8, 2, xw=12, ww=14)).dsp == 16
    assert dsp_per_product(17, 20) == 1 and dsp_per_product(25, 18) == 1
    # a product under 9 bits is built in LUTs (synth_xilinx: 5 x 3 bits, 19 LUTs; 5 x 4, a DSP48E1)
    assert dsp_per_product(5, 3) == 0 and dsp_per_product(5, 4) == 1
    assert dsp_per_product(27, 20) > 1 and dsp_per_product(19, 19) > 1


def test_a_distributed_line_buffer_holds_only_the_steps_slice():
    """Where the line buffer is distributed RAM the RTL registers its address, not its C*XW-bit
    word (LB_WORD_REG=0), and holds only the step's slice: that many fewer flip-flops; block RAM
    keeps its own read register (LB_WORD_REG=1) and its output register (LB_OUT_REG=1)."""
    from edgefpga.hw.layers.conv import line_buffer, line_buffer_word_reg

    small = conv(6, 6, 128, 128, 3, 1, 8, dw=1)  # a late depthwise layer of 8 lanes: 4 rows x 8 x 1024 bits
    assert line_buffer(small).kind == "distributed" and small["LB_WORD_REG"] == 0 == small["LB_SLICED"]
    # stage B2 off in both: stage B's registers alone (the step's slice: 8 lanes' channels)
    registered = stage_resources("ef_conv2d", dict(small, LB_WORD_REG=1, WROM_OUT_REG=0))
    held = stage_resources("ef_conv2d", dict(small, WROM_OUT_REG=0))
    assert registered.ff - held.ff == pytest.approx(128 * 8 - (8 * 8 + 1))
    wide = conv(96, 96, 8, 16, 3, 8, 8)  # ELPV's first layers: block RAM
    assert line_buffer(wide).kind == "block" and line_buffer_word_reg(wide) == 1 == wide["LB_WORD_REG"]
    assert wide["LB_OUT_REG"] == 1 and small["LB_OUT_REG"] == 0  # stage B2 only behind block RAM


def test_a_wide_slice_multiplexer_becomes_a_sliced_block_ram_line_buffer():
    """Where a pixel-wide distributed line buffer would be read through a slice multiplexer of more
    than 16 ways, or through several read ports, the line buffer holds one slice per word in block
    RAM (LB_SLICED, its word registered twice), when the engine has the cycles to write a pixel's
    slices one per cycle; the LUT RAM goes, block RAM comes."""
    from edgefpga.hw.layers.conv import SLICE_MUX_WAYS, line_buffer

    depthwise = conv(6, 6, 128, 128, 3, 1, 1, dw=1)  # MobileNet's late depthwise layers: 128 ways
    assert depthwise["LB_SLICED"] == depthwise["LB_WORD_REG"] == depthwise["LB_OUT_REG"] == 1
    lb = line_buffer(depthwise)
    assert lb.kind == "block" and lb.lutram == 0 and lb.width == 8 and lb.depth == 4 * 8 * 128
    whole = dict(depthwise, LB_SLICED=0, LB_WORD_REG=0, LB_OUT_REG=0)
    assert line_buffer(whole).kind == "distributed" and line_buffer(whole).lutram > 0
    assert stage_resources("ef_conv2d", depthwise).bram18 > stage_resources("ef_conv2d", whole).bram18
    assert conv(6, 6, 128, 128, 3, 1, 128 // SLICE_MUX_WAYS, dw=1)["LB_SLICED"] == 0  # 16 ways stay
    # three read ports of a two-way multiplexer (ELPV's Conv_3): sliced as well
    assert conv(12, 12, 32, 48, 3, 16, 1, 3, xw=14, ww=9, accw=32, ow=12, dsp=0)["LB_SLICED"] == 1
    # one output group: 32 cycles to write a pixel against the engine's 32 steps, so not sliced
    assert conv(6, 6, 128, 8, 1, 4, 8)["LB_SLICED"] == 0


def test_a_block_ram_weight_rom_is_registered_again():
    """Where the weight ROM is block RAM the RTL registers its word again (WROM_OUT_REG=1, stage
    B2) whatever the line buffer's form, and the model counts the stage's flip-flops (with a
    distributed line buffer the step's slice, not the word, waits); a ROM in logic has no B2 of its own."""
    from edgefpga.hw.layers.conv import weight_rom

    conv8 = conv(8, 8, 64, 64, 3, 32, 1, xw=11, ww=11)  # ResNet-8's Conv_8: 1152 steps of 32 weights
    assert weight_rom(conv8).kind == "block" and conv8["WROM_OUT_REG"] == 1 and conv8["LB_WORD_REG"] == 0
    assert stage_resources("ef_conv2d", conv8).ff > stage_resources("ef_conv2d", dict(conv8, WROM_OUT_REG=0)).ff
    first = conv(32, 32, 3, 16, 3, 3, 8)  # 9 steps: the weights in logic
    assert weight_rom(first).kind == "logic" and first["WROM_OUT_REG"] == 0


def test_a_deep_weight_rom_is_folded():
    """A block-RAM weight ROM deeper than WROM_MUX_WAYS banks is read as WFOLD words side by side
    (one bank, no multiplexer after the RAM's read), its lines packed as the RTL reads them: step s
    in row s mod WROWS at position s // WROWS; three banks stay as they are."""
    from edgefpga.hw.layers.conv import WROM_BANK_ROWS, fold_rom, weight_rom

    conv5 = conv(3, 3, 64, 80, 3, 4, 5, xw=13, ww=7, accw=30)  # ELPV's Conv_5: 2304 steps of 20 weights
    assert conv5["WROM_OUT_REG"] == 1 and conv5["WFOLD"] == 5
    rom = weight_rom(conv5)
    assert rom.kind == "block" and (rom.depth, rom.width) == (WROM_BANK_ROWS, 5 * 140) and rom.mux_bits == 0
    assert weight_rom(dict(conv5, WFOLD=1)).mux_bits > 0  # five banks by depth, multiplexed
    assert conv(8, 8, 64, 64, 3, 32, 1, xw=11, ww=11)["WFOLD"] == 1  # 1152 steps: three banks
    assert conv(32, 32, 3, 16, 3, 3, 8)["WFOLD"] == 1  # 9 steps in logic
    words = [format(step, "x") for step in range(9)]
    assert fold_rom(words, 3, 8) == ["80400", "501", "602", "703"]  # 4 rows: 0|4|8, 1|5, 2|6, 3|7
    assert fold_rom(words, 1, 8) == words


def test_flow_control_by_credit_where_a_stall_would_enable_thousands():
    """OUT_CREDIT where one stall would enable more than CREDIT_MIN_ENABLES registers and a pixel
    takes CREDIT_MIN_STEPS steps or more; it costs the output register (OC*OW flip-flops)."""
    from edgefpga.hw.layers.conv import CREDIT_MIN_ENABLES, stall_enables

    conv3 = conv(12, 12, 32, 48, 3, 16, 1, 3, xw=14, ww=9, accw=32, ow=12, dsp=0)  # ELPV's Conv_3
    assert conv3["OUT_CREDIT"] == 1 and stall_enables(conv3) > CREDIT_MIN_ENABLES
    extra = stage_resources("ef_conv2d", conv3).ff - stage_resources("ef_conv2d", dict(conv3, OUT_CREDIT=0)).ff
    assert 0.9 * 48 * 12 < extra < 1.1 * 48 * 12
    assert conv(16, 16, 16, 16, 3, 4, 4)["OUT_CREDIT"] == 0  # a small net
    wide_and_fast = conv(40, 40, 12, 24, 3, 12, 3, 3, xw=11, ww=11, accw=29, ow=11)  # 24 steps a pixel
    assert stall_enables(wide_and_fast) > CREDIT_MIN_ENABLES and wide_and_fast["OUT_CREDIT"] == 0


def test_frames_overlap_where_the_freed_rows_only_grow():
    """FRAME_OVERLAP (the next frame's rows enter while a window stage ends a frame) wherever
    (OH-1)*SH <= H, so every stage of an ordinary net; its few registers are in the model: the
    ahead flag and two row bounds, and three row slots where R (here 4) does not divide H."""
    from edgefpga.hw.layers.stage import frame_overlap, overlap_registers
    from edgefpga.sim.calibrate import pool

    assert conv(8, 8, 64, 64, 3, 32, 1)["FRAME_OVERLAP"] == 1 and pool(6, 6, 8, 2, 2)["FRAME_OVERLAP"] == 1
    assert frame_overlap(4, 6, 1) == 0  # a 3x3 window, pads of 2 on a 4-row map: 6 rows out
    conv10, conv12 = conv(10, 10, 8, 8, 3, 8, 1), conv(12, 12, 8, 8, 3, 8, 1)  # both 7-bit positions
    assert overlap_registers(conv10) == overlap_registers(conv12) + 3 * 2 == 1 + 2 * 7 + 3 * 2
    assert overlap_registers(pool(8, 8, 8, 2, 2)) == overlap_registers(pool(12, 12, 8, 2, 2)) == 1 + 2 * 7
    assert overlap_registers(dict(conv12, FRAME_OVERLAP=0)) == 0


def test_block_ram_of_known_geometries():
    """memory_libmap's choices for xc7, as Yosys made them in the calibration (ef_fifo)."""
    assert map_memory(4000, 8).bram18 == 2  # one RAMB36 as 4K x 9
    assert map_memory(72, 128).bram18 == 4  # two RAMB36 as 512 x 72 (simple dual port)
    assert map_memory(1100, 64).bram18 == 6  # three RAMB36 deep, their outputs multiplexed
    fifo = map_memory(40, 256)
    assert fifo.kind == "distributed" and fifo.lutram == 86 and fifo.bram18 == 0  # RAM64M as 64 x 3
    assert map_memory(512, 15, reads=3).bram18 == 3  # a line buffer read at three positions: one copy each
    assert map_memory(288, 72, rom=True).kind == "block"  # 20 kbit of weights: a RAMB36
    assert map_memory(9, 72, rom=True).kind == "logic"  # 648 bits: LUTs


def test_design_is_the_sum_of_its_units():
    manifest = {"input": {"height": 16, "width": 16, "channels": 1},
                "output": {"outputs": 2, "width": 16, "tdata_bits": 16},
                "stages": [{"name": "c", "module": "ef_conv2d", "params": conv(16, 16, 1, 4, 3, 1, 2, 1)},
                           {"name": "d", "module": "ef_dense", "params": dense(256, 4, 2, 4, 1)}]}
    total = design_resources(manifest)
    parts = [stage_resources(s["module"], s["params"]) for s in manifest["stages"]]
    parts += [stage_resources("ef_axis_in", {"H": 16, "W": 16, "C": 1}),
              stage_resources("ef_axis_out", {"N": 2, "OW": 16, "TW": 16, "P": 1})]
    assert total == sum(parts, Resources())
    assert set(total.board_use()) == {"LUT", "FF", "DSP", "BRAM36"}


def test_every_module_the_capability_table_builds_has_a_hardware_model():
    """The table's RTL column, the Verilog modules and the hardware models name the same kinds:
    an op that is built has a module whose cost the planner and verify can predict."""
    import re

    from edgefpga.hw.capabilities import CAPABILITIES
    from edgefpga.hw.layers.estimate import _module_table
    from edgefpga.hw.rtlgen import RTL_DIR

    named = {m for cap in CAPABILITIES if cap.built for m in re.findall(r"ef_\w+", cap.rtl)}
    modelled = set(_module_table())
    assert named and named <= modelled, named - modelled
    for module in modelled:
        assert (RTL_DIR / f"{module}.v").is_file(), module
