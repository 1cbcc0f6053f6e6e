"""`edgefpga convert` and `verify --emulator-only` end to end (real hls4ml, real g++ C simulation):
the shipped ELPV model and a differently shaped foreign CNN meet the agreement bar on held-out
images; bad input is refused without leaving a build folder behind."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import TINY_SPEC, VERIFY_SAMPLE, convert_tiny
from foreign_cnn import CLASSES
from onnx import TensorProto, helper
from test_onnx_check import conv_net

from edgefpga.hw.convert import ConvertConfig, convert
from edgefpga.hw.onnx_check import ConversionError
from edgefpga.hw.precision import WEIGHT_BITS

pytestmark = pytest.mark.slow


def test_elpv_meets_the_bar_on_all_654_test_cells(elpv_verify, elpv_build, zoo_model):
    emu = elpv_verify["emulator"]
    assert emu["n"] == 654 and emu["bit_exact_checked"] == emu["integer_model_bit_exact_images"] == VERIFY_SAMPLE
    assert emu["top1_agreement"] >= 0.995
    card_accuracy = json.loads((zoo_model / "card.json").read_text())["metrics"]["test"]["accuracy"]
    assert emu["float_accuracy"] == pytest.approx(card_accuracy, abs=1e-4)
    assert emu["accuracy_drop"] <= 0.005
    assert json.loads((elpv_build / "verify.json").read_text()) == elpv_verify


def test_elpv_report_and_project_files(elpv_build):
    report = json.loads((elpv_build / "report.json").read_text())
    assert report["totals"] == {"params": 93_794, "macs": 9_372_832}
    assert report["hls"]["input_type"].startswith("ap_ufixed<8,8")
    types = {row["node"]: row["types"] for row in report["layers"]}
    assert all(types[f"Conv_{i}"]["weight"]["width"] < WEIGHT_BITS[1] for i in range(6))  # the search narrowed each
    emu = report["emulator_on_calibration"]
    assert emu["max_abs_diff_vs_proxy"] == 0.0  # the ONNX proxy the search used is bit-exact
    assert report["estimate"]["dsp_multipliers"] <= report["estimate"]["dsp_budget"]
    planned, generated = report["estimate"]["fit"], report["rtl"]["predicted_fit"]
    assert planned["fits"] and generated["fits"]  # the planner's prediction, then the generated stages'
    for k, used in generated["used"].items():  # the plan priced the design the generator wrote
        assert used == pytest.approx(planned["used"][k], rel=0.05, abs=2), k
    plan = json.loads((elpv_build / "plan.json").read_text())
    assert plan["fit"] == planned and all(row["resources"]["lut"] >= 0 for row in plan["layers"])
    hls = elpv_build / "hls"
    for name in ("firmware/myproject.cpp", "firmware/myproject_axi.cpp", "build_prj.tcl", "design.tcl",
                 "axi_stream_driver.py", "hls4ml_config.yml"):
        assert (hls / name).is_file(), name
    axi = (hls / "firmware" / "myproject_axi.h").read_text()
    assert "typedef ap_uint<8> T_in;" in axi and "typedef ap_fixed<16," in axi
    assert "xc7z020clg400-1" in (hls / "project.tcl").read_text()
    for name in ("report.md", "ranges.png", "model/canonical.onnx", "model/channels_last.onnx",
                 "calibration/ranges.json", "calibration/search.json"):
        assert (elpv_build / name).is_file(), name


def test_foreign_cnn_meets_the_same_bar(foreign_verify, foreign_build):
    result = foreign_verify
    assert result["emulator"]["n"] == 654
    assert result["emulator"]["integer_model_bit_exact_images"] == VERIFY_SAMPLE
    assert result["emulator"]["top1_agreement"] >= 0.995
    report = json.loads((foreign_build / "report.json").read_text())
    assert report["model"]["classes"] == CLASSES
    assert any("color = bgr" in a for a in report["model"]["assumed"])
    assert report["notes"] == ["the final Softmax was removed: the accelerator returns the scores before it (same "
                               "ranking); the runtime applies it"]
    assert report["output_activation"] == "softmax"


def bad_models(tmp_path):
    elu = helper.make_node("Elu", ["y0"], ["y"], name="gate")
    yield "unsupported", conv_net(tmp_path / "elu.onnx", extra_nodes=[elu]), "'gate' (Elu)"
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage")
    yield "corrupt", corrupt, "not a valid ONNX model"
    extra = helper.make_tensor_value_info("x2", TensorProto.FLOAT, [1, 1, 8, 8])
    yield "two inputs", conv_net(tmp_path / "two.onnx", extra_inputs=[extra]), "2 inputs"
    yield "dynamic", conv_net(tmp_path / "dyn.onnx", in_shape=(1, 1, "h", "w")), "dynamic shape"


def test_refusals_leave_no_build_folder(tmp_path):
    for label, path, message in bad_models(tmp_path):
        out = tmp_path / f"build_{label.replace(' ', '_')}"
        with pytest.raises(ConversionError, match=re.escape(message)):
            convert(str(path), out, ConvertConfig(calibration="elpv:val", progress=False), log=lambda _m: None)
        assert not out.exists(), label


def test_failed_rebuild_restores_the_previous_folder(foreign_dir, tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("old build")
    with pytest.raises(ConversionError, match="already exists"):
        convert(str(foreign_dir / "foreign.onnx"), out, ConvertConfig(), log=lambda _m: None)
    with pytest.raises(ConversionError, match="no calibration images"):
        convert(str(foreign_dir / "foreign.onnx"), out, ConvertConfig(progress=False), force=True,
                log=lambda _m: None)
    assert (out / "keep.txt").read_text() == "old build"
    assert not (tmp_path / "b.previous").exists()


def test_old_opset_model_converts(tmp_path, elpv_data):
    """opset 8, bias as a separate Add, Flatten over a 6x6 map before MatMul + Add; converted without
    the emulator (``--no-emulator``): the integer model stands in for convert's check, no g++ build."""
    from edgefpga.models import elpv

    model = conv_net(tmp_path / "old.onnx", opset=8)
    cells = elpv_data.images[elpv.split(elpv_data).train[:300]]
    np.savez(tmp_path / "cal.npz", images=cells)
    report = convert(str(model), tmp_path / "old", ConvertConfig(calibration=str(tmp_path / "cal.npz"),
                                                                  calibration_images=300, emulator_images=32,
                                                                  progress=False, emulator=False),
                     log=lambda _m: None)
    assert report["emulator_on_calibration"]["agreement"] >= 0.995
    assert report["hls"]["project"] and "--no-emulator" in report["emulator_on_calibration"]["stand_in_for_emulator"]
    assert "emulator_compile_s" not in report and not list((tmp_path / "old" / "hls").rglob("*.so"))
    assert report["model"]["input"]["scale"] == 1.0  # bare .onnx: pixels as they are, recorded as assumed
    assert any("input.scale" in a for a in report["model"]["assumed"])


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "edgefpga.cli", *args], capture_output=True, text=True,
                          env=env)


def test_verify_without_rtl_asks_for_emulator_only(foreign_build, tmp_path):
    import shutil

    copy = tmp_path / "no_rtl"
    shutil.copytree(foreign_build, copy, ignore=shutil.ignore_patterns("rtl", "sim"))
    run = run_cli("verify", str(copy))
    assert run.returncode == 1 and "FAILED integrity: missing: rtl/manifest.json" in run.stderr
    run = run_cli("verify", str(copy), "--accept-edits")  # an older build without RTL: check the emulator alone
    assert run.returncode == 2 and "--emulator-only" in run.stderr


def test_a_moved_build_folder_gets_its_own_emulator(elpv_data, tmp_path):
    """hls4ml's C simulation reads its weights from the folder it was compiled in: a build folder
    copied elsewhere (and the original removed) must build its own library, not load one that
    reads the removed folder's weights (the process would exit inside the C++). On the smallest
    build with an emulator: the property is the folder's, not the model's. Built for a KV260, so
    that it is also the Vitis board's project (hls4ml's Vitis backend, the board's part)."""
    import shutil

    from edgefpga.hw.hls import Emulator
    from edgefpga.models.card import InputSpec
    from edgefpga.models.preprocess import resize_batch

    report = convert_tiny(elpv_data, tmp_path / "work", "tiny_relu", board="kv260")
    assert report["hls"]["project"] == "hls"  # an emulator was compiled in the build's hls/
    first, shape = tmp_path / "work" / "build", report["model"]["input"]["shape"]
    assert report["hls"]["backend"] == "Vitis"
    assert "xck26-sfvc784-2LV-c" in (first / "hls" / "hls4ml_config.yml").read_text()
    pixels = resize_batch(np.load(tmp_path / "work" / "calib.npz")["images"][:3], InputSpec(**TINY_SPEC))
    expected = Emulator.load(first / "hls", shape).predict(pixels, workers=1)
    moved = tmp_path / "moved"
    shutil.copytree(first, moved)
    shutil.rmtree(first)
    np.save(tmp_path / "in.npy", pixels)
    script = ("import sys, numpy as np; from edgefpga.hw.hls import Emulator; "
              f"e = Emulator.load(sys.argv[1], {shape}); np.save(sys.argv[3], e.predict(np.load(sys.argv[2]), workers=1))")
    run = subprocess.run([sys.executable, "-c", script, str(moved / "hls"), str(tmp_path / "in.npy"),
                          str(tmp_path / "out.npy")], capture_output=True, text=True)  # a process the C++ may end
    assert run.returncode == 0, run.stdout[-500:] + run.stderr[-1500:]
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)
