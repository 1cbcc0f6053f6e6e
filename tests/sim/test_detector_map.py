"""A detector's map output through the hardware flow: a tiny FOMO-style net (conv blocks, a 1x1 conv
head, no flatten or dense layer) converted for a PYNQ-Z2, its hls4ml emulator and its Verilog
equal to the integer model over the whole streamed map, and the Engine decoding the map the RTL
returns into exactly the integer model's detections."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow

CALIBRATION, IMAGES = "modules:fit:48", "modules:test:2"


@pytest.fixture(scope="module")
def detect_build(tmp_path_factory):
    """A random-weight map model at 32x32 (output stride 4: an 8x8 map of two scores), its card
    and its build folder."""
    import torch

    from edgefpga.hw.convert import ConvertConfig, convert
    from edgefpga.models.arch import ArchConfig
    from edgefpga.models.card import REFERENCE_SHAPE, write_card
    from edgefpga.models.export import export_onnx
    from edgefpga.models.modules import CLASSES

    root = tmp_path_factory.mktemp("detector")
    arch = ArchConfig(size=32, widths=(4, 8), stem_stride=2, head="map", num_classes=2)
    torch.manual_seed(0)
    model = arch.build_model().eval()
    with torch.no_grad():
        model.classifier.bias[:] = torch.tensor([0.0, -0.5])  # some cells above 0.5, some below
    export_onnx(model, (1, 32, 32), root / "model" / "model.onnx")
    write_card(root / "model", {
        "name": "tiny_detect", "purpose": REFERENCE_SHAPE, "task": "detect", "classes": CLASSES,
        "input": {"shape": [1, 1, 32, 32], "color": "gray", "resize": "area", "scale": 1 / 255, "mean": 0.5,
                  "std": 0.25},
        "output": {"kind": "map", "stride": arch.output_stride, "background_class": 0},
        "dataset": {"name": "ELPV modules"}, "metrics": {}, "params": 0, "macs": 0,
        "calibration": CALIBRATION, "verification": IMAGES, "convert": {"agreement": 0.97}})
    convert(str(root / "model"), root / "build", ConvertConfig(calibration_images=48, emulator_images=8,
                                                               progress=False), log=lambda _m: None)
    return root / "model", root / "build"


@pytest.mark.timeout(600)
def test_the_map_streams_out_bit_exact_in_rtl(detect_build):
    from edgefpga.sim.verify import verify

    _, build = detect_build
    report = json.loads((build / "report.json").read_text())
    assert report["emulator_on_calibration"]["integer_model_mismatched_images"] == 0  # hls4ml == integer model
    manifest = json.loads((build / "rtl" / "manifest.json").read_text())
    assert manifest["output"]["map"] == {"height": 8, "width": 8, "classes": 2, "order": manifest["output"]["map"]["order"]}
    assert manifest["output"]["outputs"] == 8 * 8 * 2  # every cell's scores, one per beat, tlast on the last
    result = verify(build, progress=False)
    assert result["emulator"]["map_cells"] == 64 and result["emulator"]["n"] == 2
    assert result["emulator"]["integer_model_bit_exact_images"] == 2
    assert result["rtl"]["bit_exact_frames"] == result["rtl"]["n"] == 2 and result["rtl"]["framing_errors"] == 0
    assert result["rtl"]["ii_cycles"] > 0


@pytest.mark.timeout(300)
def test_the_engine_decodes_the_rtl_map_as_the_integer_model_gives_it(detect_build):
    """The RTL backend's map, decoded by the Engine, gives exactly the detections of the integer
    model's map (the specification the RTL implements), centres in the source image's pixels."""
    import edgefpga.runtime as rt
    from edgefpga.models import modules
    from edgefpga.models.detect import decode, map_probabilities, unstream
    from edgefpga.models.preprocess import resize_batch
    from edgefpga.runtime.source import ModelRef
    from edgefpga.sim.verify import integer_scores

    _, build = detect_build
    found = modules.select(IMAGES)
    images = [m.image for m in found]
    ref = ModelRef.resolve(build)
    ints, frac = integer_scores(build, resize_batch(images, ref.spec))
    maps = [unstream(row * 2.0 ** -frac, 2, ref.cells) for row in ints]
    # random weights: a threshold between the cells' defect probabilities, so some cells pass and some not
    threshold = float(np.quantile([map_probabilities(g)[1] for g in maps], 0.8))
    with rt.open(build, backend="rtl") as engine:
        rtl = engine.infer(images, defect_threshold=threshold)
    assert any(r.detections for r in rtl)
    for r, grid, m in zip(rtl, maps, found):
        expected = decode(grid, ref.classes, 4, m.image.shape[:2], threshold)
        assert r.detections == [d.to_dict() for d in expected]
        assert r.image_size == m.image.shape[:2] and r.cycles > 0 and r.backend == "rtl"
        assert r.defective == bool(r.detections) and len(r.probabilities) == 2
        assert all(0 <= d["x"] < m.image.shape[1] and 0 <= d["y"] < m.image.shape[0] for d in r.detections)
