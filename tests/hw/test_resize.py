"""Nearest upsampling by integer factors (issue 30, item 4): ONNX ``Resize`` as the ef_resize stage
(each pixel sent kw times, each row kh times from a row buffer; a copy, the input's type).

``torch.onnx.export`` writes ``nn.Upsample(scale_factor=k)`` as ``Resize`` with mode nearest,
asymmetric coordinates, floor and constant scales [1, 1, kh, kw] at opset 13 and 17 (TorchScript),
and the default torch.export-based exporter (opset 20) the same plus its spelled-out defaults
(antialias 0, keep_aspect_ratio_policy stretch, exclude_outside 0, extrapolation_value 0);
``F.interpolate(size=...)`` as constant sizes (default) or sizes computed from the map's Shape
(TorchScript). One small net with a 2x2 upsample and a height-only one, trained briefly on 16x16
false-color ELPV cells, gives one canonical graph from all three exports and an RTL bit-exact to
the integer model; hls4ml 1.3 misreads the 2x1 factors, so the integer model stands in for its
emulator and each conversion takes seconds; the three builds have the same RTL, so Verilator
builds it once. A segmentation net (a skip through a 2x2 upsample, its 16x16 class map upsampled
as the output) checks the FIFO sizing, the map output and hls4ml's emulator where it is right."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
import torch
from brief_training import train_briefly
from onnx import TensorProto, helper
from test_default_exporter import constants
from test_habits import cells  # noqa: F401  (the module's fixture)
from three_ways import (REFERENCE, WAYS, assert_one_design, assert_one_graph, canonical, convert_every_way, export,
                        export_every_way, float_scores, train_on)
from torch import nn

from edgefpga.hw.graph import onnx_session
from edgefpga.hw.layers.resize import is_repetition
from edgefpga.hw.onnx_check import ConversionError, check_onnx

pytestmark = [pytest.mark.xdist_group("resize"), pytest.mark.timeout(300)]  # the trained net is made once


class Upsampling(nn.Module):
    """A FOMO / segmentation-head shape: a stride-2 conv, upsampled x2 back to 16x16, a stride-2
    conv, upsampled x2 on the height only (16x8), a global pool and a dense layer."""

    def __init__(self, size: bool = False):
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())
        self.size = size
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = self.conv(self.up(self.down(x / 255.0)))
        x = nn.functional.interpolate(x, size=(16, 8)) if self.size else \
            nn.functional.interpolate(x, scale_factor=(2, 1), mode="nearest")
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.fixture(scope="module")
def trained(cells):  # noqa: F811
    return train_on(Upsampling, cells)


@pytest.fixture(scope="module")
def exports(trained, tmp_path_factory):
    return export_every_way(trained, tmp_path_factory.mktemp("resize"), "upsample.onnx")


def resizes(path) -> list[dict]:
    return [{a.name: helper.get_attribute_value(a) for a in n.attribute}
            for n in onnx.load(str(path)).graph.node if n.op_type == "Resize"]


def test_exports_give_one_canonical_graph(trained, cells, exports, tmp_path):  # noqa: F811
    """The three exports, and F.interpolate(size=) as TorchScript writes it (sizes computed from the
    map's Shape, a constant at a fixed input size) and as the default exporter does (constant
    sizes), give one canonical graph (opset 13, Resize with scales [1, 1, kh, kw], asymmetric, floor) computing
    what PyTorch computes."""
    _, _, test, *_ = cells
    with torch.no_grad():
        expected = trained(torch.from_numpy(test.astype(np.float32))).numpy()
    for way, path in exports.items():
        written = resizes(path)
        assert [(r["mode"], r["coordinate_transformation_mode"], r["nearest_mode"]) for r in written] == \
            [(b"nearest", b"asymmetric", b"floor")] * 2, way
        assert ("antialias" in written[0]) == (way == "default"), way
    sized = Upsampling(size=True)
    sized.load_state_dict(trained.state_dict())
    by_size = {f"{way}_sizes": export(sized.eval(), tmp_path / way / "size.onnx", nhwc=False, **WAYS[way])
               for way in ("opset13", "default")}
    for path in by_size.values():
        assert any(len(n.input) == 4 and n.input[3] for n in onnx.load(str(path)).graph.node if n.op_type == "Resize")
    assert "Shape" in [n.op_type for n in onnx.load(str(by_size["opset13_sizes"])).graph.node]
    graphs = {}
    for way, path in {**exports, **by_size}.items():
        graphs[way] = graph = canonical(path)
        np.testing.assert_allclose(float_scores(graph, test), expected, atol=1e-4, err_msg=way)
    reference = graphs["opset13"]
    assert [n.op_type for n in reference.graph.node] == ["BatchNormalization", "Conv", "Relu", "Resize", "Conv", "Relu",
                                                         "Resize", "AveragePool", "Flatten", "MatMul", "Add"]
    scales = [constants(reference)[n.input[2]].tolist() for n in reference.graph.node if n.op_type == "Resize"]
    assert scales == [[1, 1, 2, 2], [1, 1, 2, 1]]
    assert_one_graph(graphs)
    assert (expected.argmax(1) == 1).mean() not in (0.0, 1.0)  # trained: not one class for every cell


def test_resize_is_bit_exact(trained, cells, exports, tmp_path):  # noqa: F811
    """Each export converts to the same precisions, integer model and RTL (file for file), with
    two ef_resize stages planned at their output pixels per frame; the RTL is bit-exact to the
    integer model on held-out cells (random idle input and backpressure), each stage busy exactly
    its planned cycles."""
    from edgefpga.sim.verify import verify

    for way, report in convert_every_way(exports, cells, tmp_path).items():
        assert report["hls"]["project"] is None, way  # hls4ml's Resize would swap the 2x1 factors: the integer
        assert [why.split(":")[0] for why in report["hls"]["not_generated_because"]] == ["Resize_1"], way  # model
    reference = tmp_path / f"build_{REFERENCE}"
    manifest = onnx_free_manifest(reference)
    stages = {s["name"]: s for s in manifest["stages"] if s["module"] == "ef_resize"}
    assert [(s["params"]["KH"], s["params"]["KW"], s["cycles_per_frame"]) for s in stages.values()] == \
        [(2, 2, 16 * 16), (2, 1, 16 * 8)]
    result = verify(reference, images=str(tmp_path / "test.npz"), sample=4, progress=False, agreement=0.9)
    assert result["rtl"]["bit_exact_frames"] == result["rtl"]["n"] == 4
    assert result["emulator"]["top1_agreement"] >= 0.9  # the integer model against the float one
    assert result["failed"] == []
    busy = {row["stage"]: row for row in result["rtl"]["stages"]}
    for name, stage in stages.items():  # one output pixel per busy cycle, as planned
        assert busy[name]["busy_cycles"] == busy[name]["planned_cycles"] == stage["cycles_per_frame"], busy[name]
    assert_one_design(cells, tmp_path)  # the other exports' verify would repeat the one above


def onnx_free_manifest(build) -> dict:
    import json

    return json.loads((build / "rtl" / "manifest.json").read_text())


class SkipSegmenter(nn.Module):
    """A small segmentation net: a stride-2 stem (8x8), a U-Net-style skip (the map downsampled by
    a stride-2 conv and upsampled x2, added back to it), 1x1 class scores, upsampled x2 to the
    input's 16x16 as the output (the map streams out of ef_resize, cell by cell)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())
        self.up = nn.Upsample(scale_factor=2)
        self.classes = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        x = self.stem(x / 255.0)
        return self.up(self.classes(x + self.up(self.down(x))))


def test_upsampled_skip_map_is_bit_exact(cells, tmp_path):  # noqa: F811
    """The segmentation net trained briefly on per-pixel classes (brighter than the cell's mean):
    the skip's FIFO on the identity branch is sized from ef_resize's window (output pixel (y, x)
    needs input pixel (y // kh, x // kw)); the RTL streams the 16x16x2 map out of the last
    ef_resize bit-exact to the integer model with random stalls, and hls4ml's emulator equals it
    too (square maps upsampled 2x2, which hls4ml 1.3 reads right). Cells near the class boundary
    are near ties, so the float agreement has a loose bar; bit-exactness is the point."""
    from edgefpga.hw.convert import ConvertConfig, convert
    from edgefpga.sim.verify import verify

    pixels, _, _, calib_raw, test_raw = cells
    x = torch.from_numpy(pixels.astype(np.float32))
    trained = train_briefly(SkipSegmenter, x, (x.mean(1) > x.mean((1, 2, 3))[:, None, None]).long())
    path = export(trained, tmp_path / "segment.onnx", nhwc=False)
    np.savez(tmp_path / "calib.npz", images=calib_raw)
    np.savez(tmp_path / "test.npz", images=test_raw)
    report = convert(str(path), tmp_path / "build", ConvertConfig(
        calibration=str(tmp_path / "calib.npz"), calibration_images=32, emulator_images=8, progress=False,
        agreement=0.5), log=lambda _m: None)
    assert report["hls"]["project"] == "hls"
    assert report["emulator_on_calibration"]["integer_model_mismatched_images"] == 0
    manifest = onnx_free_manifest(tmp_path / "build")
    modules = [s["module"] for s in manifest["stages"]]
    assert modules.count("ef_resize") == 2 and modules[-1] == "ef_resize"
    assert next(s for s in manifest["stages"] if s["module"] == "ef_fifo")["params"]["DEPTH"] > 8
    assert {k: manifest["output"]["map"][k] for k in ("height", "width", "classes")} == \
        {"height": 16, "width": 16, "classes": 2}
    result = verify(tmp_path / "build", images=str(tmp_path / "test.npz"), sample=2, progress=False, agreement=0.5)
    assert result["rtl"]["bit_exact_frames"] == result["rtl"]["n"] == 2 and result["failed"] == []


MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "asymmetric", "align_corners")
ROUNDINGS = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def resize_model(scales=None, sizes=None, shape=(1, 1, 5, 5), opset: int = 19, **attributes) -> onnx.ModelProto:
    """One Resize node on an input of ``shape``, its scales or sizes as initializers."""
    inputs, inits = ["x", ""], []
    for name, value, kind in (("scales", scales, TensorProto.FLOAT), ("sizes", sizes, TensorProto.INT64)):
        if value is not None:
            inits.append(helper.make_tensor(name, kind, [len(value)], value))
            inputs.append(name)
        elif name == "scales":
            inputs.append("")
    node = helper.make_node("Resize", inputs, ["y"], name="up", **attributes)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * 4)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    return model


def test_repetition_modes_agree_with_onnxruntime():
    """The capability rule's reading of ONNX's coordinate and rounding modes (is_repetition: which
    combinations repeat each pixel k times) is what ONNX Runtime computes, for every combination at
    factors 1-4 on maps of 1, 3 and 5 pixels. Repetition: asymmetric + floor (PyTorch's), the
    half_pixel family with either rounding, asymmetric + round_prefer_floor at 2 only."""
    accepted = set()
    for mode, rounding, k, n in itertools.product(MODES, ROUNDINGS, (1, 2, 3, 4), (1, 3, 5)):
        model = resize_model([1, 1, k, k], shape=(1, 1, n, n), mode="nearest",
                             coordinate_transformation_mode=mode, nearest_mode=rounding)
        x = np.arange(n * n, dtype=np.float32).reshape(1, 1, n, n)
        y = onnx_session(model).run(None, {"x": x})[0]
        repeated = np.repeat(np.repeat(x, k, 2), k, 3)
        runtime = y.shape == repeated.shape and np.array_equal(y, repeated)
        assert is_repetition(mode, rounding, n, k) == runtime, (mode, rounding, k, n)
        if runtime and k > 1 and n > 1 and mode != "align_corners":
            accepted.add((mode, rounding) if (mode, rounding) != ("asymmetric", "round_prefer_floor") else (mode, k))
    assert accepted == {("asymmetric", "floor"), ("asymmetric", 2)} | {
        (m, r) for m in ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel")
        for r in ("round_prefer_floor", "round_prefer_ceil")}


REFUSED = {  # what is wrong -> (the node, the attribute the one line names, a word of its reason)
    "linear": (dict(scales=[1, 1, 2, 2], mode="linear"), "mode", "linear"),
    "cubic": (dict(scales=[1, 1, 2, 2], mode="cubic"), "mode", "cubic"),
    "factor 1.5": (dict(scales=[1, 1, 1.5, 1.5], mode="nearest"), "scales (input 2)", "1.5"),
    "shrinking": (dict(scales=[1, 1, 0.5, 0.5], mode="nearest"), "scales (input 2)", "0.5"),
    "channels": (dict(scales=[1, 2, 2, 2], mode="nearest"), "scales (input 2)", "channel"),
    "sizes 1.5": (dict(sizes=[1, 1, 7, 7], mode="nearest"), "sizes (input 3)", "1.4"),
    "align_corners": (dict(scales=[1, 1, 3, 3], mode="nearest", coordinate_transformation_mode="align_corners"),
                      "coordinate_transformation_mode", "align_corners"),
    "ceil": (dict(scales=[1, 1, 2, 2], mode="nearest", coordinate_transformation_mode="asymmetric",
                  nearest_mode="ceil"), "coordinate_transformation_mode", "ceil"),
    "antialias": (dict(scales=[1, 1, 2, 2], mode="nearest", antialias=1), "antialias", "antialias"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_other_resizes_are_refused(case, tmp_path):
    """Linear and cubic modes, fractional, shrinking or channel factors, modes that do not repeat
    pixels: refused in one line naming the file, the node, Resize and the attribute."""
    how, attribute, word = REFUSED[case]
    path = tmp_path / "resize.onnx"
    onnx.save(resize_model(**how), str(path))
    with pytest.raises(ConversionError) as refused:
        check_onnx(path)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{path}: node 'up' (Resize), {attribute}: "), message
    assert word in message, message
    onnx.save(resize_model(scales=[1, 1, 3, 2], mode="nearest", coordinate_transformation_mode="asymmetric",
                           nearest_mode="floor"), str(path))
    check_onnx(path)  # the same node with PyTorch's modes and integer factors: accepted


class Interpolate(nn.Module):
    def __init__(self, **how):
        super().__init__()
        self.conv, self.how, self.fc = nn.Conv2d(3, 4, 3), how, nn.Linear(4, 2)

    def forward(self, x):
        x = nn.functional.interpolate(self.conv(x), **self.how)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.mark.parametrize("way", list(WAYS))
def test_pytorch_bilinear_and_fractional_upsampling_are_refused(way, tmp_path):
    """What PyTorch's exporters write for a bilinear upsample and for a factor of 1.5: refused in
    one line naming the Resize node and mode / scales."""
    for how, needle in ((dict(scale_factor=2, mode="bilinear"), "(Resize), mode: linear"),
                        (dict(scale_factor=1.5, mode="nearest"), "(Resize), scales (input 2): [1.0, 1.0, 1.5, 1.5]")):
        path = export(Interpolate(**how).eval(), tmp_path / f"{how['mode']}.onnx", nhwc=False, **WAYS[way])
        with pytest.raises(ConversionError) as refused:
            check_onnx(path)
        message = str(refused.value)
        assert "\n" not in message and needle in message and message.startswith(f"{path}: node '"), message
