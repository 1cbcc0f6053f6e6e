"""`make demo` and `make bench` convert the shipped model again when the zoo has new weights or
hw/rtl has other Verilog than the build (hw.convert.ensure_converted), and never replace a build
of another model."""

import json

from edgefpga.models.card import ZOO
from edgefpga.hw.convert import stale_reason
from edgefpga.hw.rtlgen import RTL_DIR

SHIPPED = ZOO / "elpv_defect"


def build_like(tmp_path, name: str, onnx_bytes: bytes):
    """The two files the decision reads, as `edgefpga convert` writes them."""
    build = tmp_path / name
    (build / "model").mkdir(parents=True)
    (build / "report.json").write_text(json.dumps({"model": {"name": name}}))
    (build / "model" / "source.onnx").write_bytes(onnx_bytes)
    return build


def test_missing_build_is_converted(tmp_path):
    assert stale_reason(tmp_path / "nothing", SHIPPED) == "no build folder"


def test_build_of_the_shipped_weights_is_kept(tmp_path):
    build = build_like(tmp_path, "elpv_defect", (ZOO / "elpv_defect" / "model.onnx").read_bytes())
    assert stale_reason(build, SHIPPED) is None


def test_build_of_earlier_shipped_weights_is_converted_again(tmp_path):
    build = build_like(tmp_path, "elpv_defect", (ZOO / "elpv_defect_v1" / "model.onnx").read_bytes())
    assert "other weights" in stale_reason(build, SHIPPED)


def test_a_users_own_build_is_never_replaced(tmp_path):
    build = build_like(tmp_path, "my_model", (ZOO / "elpv_defect_v1" / "model.onnx").read_bytes())
    assert stale_reason(build, SHIPPED) is None


def test_build_with_other_verilog_is_converted_again(tmp_path):
    """A benchmark of a build made before an RTL change would measure the old Verilog under the
    new commit: the module file that differs is named."""
    build = build_like(tmp_path, "elpv_defect", (ZOO / "elpv_defect" / "model.onnx").read_bytes())
    src = build / "rtl" / "src"
    src.mkdir(parents=True)
    (src / "ef_conv2d.v").write_bytes((RTL_DIR / "ef_conv2d.v").read_bytes())
    (src / "Conv_0_WFILE.mem").write_text("00\n")  # a build's own data: not compared
    assert stale_reason(build, SHIPPED) is None
    (src / "ef_conv2d.v").write_text("// an earlier ef_conv2d\n")
    assert stale_reason(build, SHIPPED) == "built with other Verilog than hw/rtl (ef_conv2d.v)"
