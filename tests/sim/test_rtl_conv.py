"""Single generated RTL stages (hw/rtl/*.v with a build's parameters and ROMs) are bit-exact with
the integer model (which is bit-exact with the hls4ml emulator) on real images, in cocotb +
Verilator, under random input idle cycles and output backpressure, with frames back to back."""

import pytest

from edgefpga.hw.images import load_image_set
from edgefpga.models.card import InputSpec
from edgefpga.sim.layer_check import check_stage

pytestmark = pytest.mark.slow


def images(build, source, n=2):
    import json

    report = json.loads((build / "report.json").read_text())
    return load_image_set(source, InputSpec.from_dict(report["model"]["input"], "report"),
                          report["model"]["classes"]).take(n).pixels


OTHER = "the other value than the build's"


def stage_params(build, name: str) -> dict:
    import json

    manifest = json.loads((build / "rtl" / "manifest.json").read_text())
    return next(st for st in manifest["stages"] if st["name"] == name)["params"]


# the foreign Conv_2 (3x3 stride 2, 20x20x16 map) in the build's own form over two frames is
# test_frames_overlap_at_full_rate[1]'s; here the forms it did not choose (the build's other stages,
# its 1x1 conv and global average pool among them, are checked in the network by foreign_verify,
# 32 frames under idle input and backpressure)
@pytest.mark.parametrize("stage, params", [# the forms the build did not choose, independent parts of
                                           # the datapath in one Verilator build (each build is about
                                           # 30 s of the suite): multipliers as LUT logic (USE_DSP);
                                           # the line buffer's read address registered (distributed
                                           # RAM) where the build registers its word, and again (block
                                           # RAM): LB_WORD_REG, LB_OUT_REG = OTHER, both 0 here; stage
                                           # B2 for the weight ROM alone (WROM_OUT_REG) in that address
                                           # form, the selected slice waiting in B2 (in the word form
                                           # it builds the RTL of LB_OUT_REG=1, the build's own, in the
                                           # two-frame run above); flow control by credit or by one
                                           # stall, the other than the build's (OUT_CREDIT)
                                           ("Conv_2", {"USE_DSP": 0, "LB_WORD_REG": OTHER, "WROM_OUT_REG": 1,
                                                       "OUT_CREDIT": OTHER})])
def test_foreign_stages(foreign_build, foreign_dir, tmp_path, stage, params):
    """Another form of the datapath (params) over one frame, its boundary being the build's form's
    (and ELPV's Conv_3, by credit, below); a case without params runs the build's own form over
    two frames back to back."""
    frames = 1 if params else 2
    if params.get("LB_WORD_REG") is OTHER:
        other = 1 - stage_params(foreign_build, stage)["LB_WORD_REG"]  # block RAM's form with its stage B2
        params = dict(params, LB_WORD_REG=other, LB_OUT_REG=other)
    if params.get("OUT_CREDIT") is OTHER:
        params = dict(params, OUT_CREDIT=1 - stage_params(foreign_build, stage)["OUT_CREDIT"])
    result = check_stage(foreign_build, stage, images(foreign_build, str(foreign_dir / "test.npz"), frames),
                         tmp_path / stage, params=params)
    assert result["frames"] == frames and result["mismatches"] == []


def test_elpv_conv_layer_with_signed_input(elpv_build, tmp_path):
    import json

    manifest = json.loads((elpv_build / "rtl" / "manifest.json").read_text())
    conv = next(st for st in manifest["stages"] if st["name"] == "Conv_3")
    # three read ports of a two-chunk pixel: its line buffer is sliced (LB_SLICED), block RAM;
    # about 9 k registers past the issue: flow control by credit (OUT_CREDIT), no stall
    assert conv["params"]["LB_SLICED"] == 1 and conv["params"]["KP"] == 3 and conv["params"]["OUT_CREDIT"] == 1
    result = check_stage(elpv_build, "Conv_3", images(elpv_build, "elpv:test"), tmp_path / "c3", idle=0.3, stall=0.3,
                         seed=7)
    assert result["mismatches"] == []
    gap = result["last_output_cycle"][1] - result["last_output_cycle"][0]
    assert gap >= conv["cycles_per_frame"]  # one engine step per cycle at most


def test_elpv_folded_weight_rom(elpv_build, tmp_path):
    """ELPV's Conv_5 reads its 2304-step weight ROM folded (WFOLD words a row, the step's word
    chosen after stage B2's register), by the build's own choice, bit-exact under backpressure.
    Its 3-row map in a line buffer of 4 rows overlaps frames with rows counted in slots across
    frames (R does not divide H, and R > H): four frames go through."""
    params = stage_params(elpv_build, "Conv_5")
    assert params["WFOLD"] > 1 and params["FRAME_OVERLAP"] == 1 and params["H"] == 3
    result = check_stage(elpv_build, "Conv_5", images(elpv_build, "elpv:test", 4), tmp_path / "c5", idle=0.3,
                         stall=0.3, seed=3)
    assert result["frames"] == 4 and result["mismatches"] == []


def test_elpv_pool_overlaps_frames(elpv_build, tmp_path):
    """ELPV's MaxPool_4 (a 6-row map, a line buffer of 4 rows: row slots across frames) with
    frames overlapping, four frames under random idle input and backpressure."""
    assert stage_params(elpv_build, "MaxPool_4")["FRAME_OVERLAP"] == 1
    result = check_stage(elpv_build, "MaxPool_4", images(elpv_build, "elpv:test", 4), tmp_path / "p4", idle=0.3,
                         stall=0.3, seed=5)
    assert result["frames"] == 4 and result["mismatches"] == []


@pytest.mark.parametrize("overlap", [1, 0])
def test_frames_overlap_at_full_rate(foreign_build, foreign_dir, tmp_path, overlap):
    """Input as fast as the stage takes it and no backpressure: with FRAME_OVERLAP (the build's
    choice) a frame follows the last one's engine at once, one cycle between them, so frames leave
    cycles_per_frame + 1 apart; without it (the control) the stage's tail after the frame's last
    input pixel is added. The foreign Conv_2: a 3x3 stride-2 window on a 20-row map, R = 8 rows
    that do not divide it (slots)."""
    import json

    stage = next(st for st in json.loads((foreign_build / "rtl" / "manifest.json").read_text())["stages"]
                 if st["name"] == "Conv_2")
    assert stage["params"]["FRAME_OVERLAP"] == 1 and stage["params"]["H"] % 8 != 0
    result = check_stage(foreign_build, "Conv_2", images(foreign_build, str(foreign_dir / "test.npz"), 2),
                         tmp_path / "full", idle=0.0, stall=0.0, params={"FRAME_OVERLAP": overlap})
    assert result["mismatches"] == []
    first, second = result["last_output_cycle"]
    if overlap:
        assert second - first == stage["cycles_per_frame"] + 1
    else:
        assert second - first > stage["cycles_per_frame"] + 1


def test_the_check_can_fail(foreign_build, foreign_dir, tmp_path):
    result = check_stage(foreign_build, "Conv_2", images(foreign_build, str(foreign_dir / "test.npz"), 1),
                         tmp_path / "bad", corrupt=True)
    assert len(result["mismatches"]) == 1
