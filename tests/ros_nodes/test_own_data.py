"""A user's own inspection task end to end (issue 14): real ELPV cells exported by the tool as a
folder of four classes (mono/poly x functional/defective), trained with `edgefpga train <folder>`
sized for a PYNQ-Z2 frame rate, converted, verified in RTL bit for bit with the interval the
sizing projected, and served by the inspection node over DDS with every class's result."""

from __future__ import annotations

import json

import pytest
from ros_helpers import Probe, ros, spin_until, start_node  # noqa: F401  (ros: fixture)

pytestmark = pytest.mark.slow

ORDER = ["mono_functional", "mono_defective", "poly_functional", "poly_defective"]
DEFECTS = ["mono_defective", "poly_defective"]
FPS = 20_000


@pytest.fixture(scope="module")
def own_build(tmp_path_factory):
    """(model folder, build folder): 25 cells per class and part, a few epochs, as a user runs it."""
    from edgefpga.cli import main
    from edgefpga.hw.convert import ConvertConfig, convert
    from edgefpga.models.folder import export_elpv

    root = tmp_path_factory.mktemp("own")
    export_elpv(root / "cells", "type-defect", True, 25, 0)
    model = root / "model"
    assert main(["train", str(root / "cells"), "--out", str(model), "--board", "pynq-z2", "--fps", str(FPS),
                 "--epochs", "8", "--threads", "1", "--classes", *ORDER, "--defect-classes", *DEFECTS]) == 0
    convert(str(model), root / "build", ConvertConfig(calibration_images=256, emulator_images=16, progress=False),
            log=lambda _m: None)
    return model, root / "build"


@pytest.fixture
def probe(ros):
    p = Probe(ros)
    yield p
    p.close()


@pytest.mark.timeout(900)
def test_own_folder_is_bit_exact_in_rtl_at_the_rate_it_was_sized_for(own_build):
    from edgefpga.sim.verify import verify

    model, build = own_build
    card = json.loads((model / "card.json").read_text())
    assert card["sizing"]["board"] == "pynq-z2" and card["sizing"]["chosen"]["fps"] >= FPS
    assert card["verification"] == "elpv:test/type-defect"  # the export knows its cells: no --images needed
    result = verify(build, sample=24, progress=False, agreement=0.9)
    assert result["emulator"]["n"] == 654  # the whole contract test split, in four classes
    assert result["rtl"]["bit_exact_frames"] == result["rtl"]["n"] == 24
    assert result["rtl"]["ii_cycles"] <= card["sizing"]["chosen"]["ii_cycles"]  # meets the projected rate


@pytest.mark.timeout(300)
def test_the_node_publishes_every_class_from_the_rtl(own_build, tmp_path, probe, elpv_data):
    import edgefpga.runtime as rt
    from edgefpga.models import elpv

    _, build = own_build
    cells = list(elpv_data.images[elpv.subset("test", elpv_data)[:6]])
    node = start_node(tmp_path, "own", model=str(build), backend="rtl")
    try:
        node.wait_for("engine:")
        probe.wait_matched()
        for i, cell in enumerate(cells):
            probe.send(cell, sec=500 + i)
        assert spin_until(probe.node, lambda: len(probe.results) == len(cells), 60), node.output()[-2000:]
    finally:
        node.stop()
    with rt.open(build, backend="rtl") as engine:
        expected = engine.infer(cells)
    for msg, ref in zip(sorted(probe.results, key=lambda r: r.header.stamp.sec), expected):
        assert list(msg.class_names) == ORDER and len(msg.class_probabilities) == 4
        assert msg.label == ref.label and msg.backend == "rtl" and msg.accelerator_cycles > 0
        assert list(msg.class_scores) == pytest.approx(ref.scores, abs=1e-6)
        assert msg.score == pytest.approx(ref.probabilities[1] + ref.probabilities[3], abs=1e-5)
        assert msg.defective == (msg.score >= msg.defect_threshold)
