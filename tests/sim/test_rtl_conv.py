"""The generated convolution layer (hw/rtl/ef_conv2d.v) is bit-exact with the integer model (which
is bit-exact with the hls4ml emulator) on real images, in cocotb + Verilator, under random input
idle cycles and output backpressure, with frames back to back."""

import pytest

from edgefpga.hw.images import load_image_set
from edgefpga.models.card import InputSpec
from edgefpga.sim.layer_check import check_conv_layer

pytestmark = pytest.mark.slow


def images(build, source, n=2):
    import json

    report = json.loads((build / "report.json").read_text())
    return load_image_set(source, InputSpec.from_dict(report["model"]["input"], "report"),
                          report["model"]["classes"]).take(n).pixels


@pytest.mark.parametrize("node, ci, po, use_dsp", [("Conv_2", 16, 8, True),   # 3x3 stride 2, 20x20x16 map
                                                   ("Conv_1", 8, 4, True),    # 1x1, two chunks, four groups
                                                   ("Conv_2", 8, 4, False)])  # multipliers as LUT logic
def test_foreign_conv_layers(foreign_build, foreign_dir, tmp_path, node, ci, po, use_dsp):
    result = check_conv_layer(foreign_build, node, ci, po, images(foreign_build, str(foreign_dir / "test.npz")),
                              tmp_path / f"{node}_{use_dsp}", use_dsp=use_dsp)
    assert result["frames"] == 2 and result["mismatches"] == []


def test_elpv_conv_layer_with_signed_input(elpv_build, tmp_path):
    result = check_conv_layer(elpv_build, "Conv_3", 16, 4, images(elpv_build, "elpv:test"), tmp_path / "c3",
                              idle=0.3, stall=0.3, seed=7)
    assert result["mismatches"] == []
    assert result["last_output_cycle"][1] - result["last_output_cycle"][0] >= 144 * 216  # 216 steps per pixel


def test_the_check_can_fail(foreign_build, foreign_dir, tmp_path):
    result = check_conv_layer(foreign_build, "Conv_2", 16, 8, images(foreign_build, str(foreign_dir / "test.npz"), 1),
                              tmp_path / "bad", corrupt=True)
    assert len(result["mismatches"]) == 1
