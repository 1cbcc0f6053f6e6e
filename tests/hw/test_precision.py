"""The precision search on the foreign CNN with real (false-color ELPV) calibration images: it
shrinks widths, keeps its bar, honours overrides, and its ONNX proxy casts exactly as declared."""

import json

import numpy as np
import onnx
import pytest
from conftest import convert_tiny
from foreign_cnn import CLASSES
from qonnx.core.modelwrapper import ModelWrapper

from edgefpga.hw.fixed import FixedType
from edgefpga.hw.graph import canonical_graph, onnx_session
from edgefpga.hw.images import load_image_set
from edgefpga.hw import precision
from edgefpga.hw.precision import (ACTIVATION_BITS, WEIGHT_BITS, Criterion, PrecisionError, build_knobs,
                                   failure_budget, held_out_split, load_overrides, proxy_graph, resolve, score,
                                   search_precisions)
from edgefpga.hw.profile import profile_activations, with_outputs
from edgefpga.hw.report import summary_lines
from edgefpga.models.card import InputSpec

SPEC = InputSpec(3, 40, 40, "bgr", "area", 1 / 255, 0.5, 0.25)


@pytest.fixture(scope="module")
def setup(foreign_dir):
    canon = canonical_graph(onnx.load(str(foreign_dir / "foreign.onnx")), "foreign", SPEC.scale, [SPEC.mean] * 3,
                            [SPEC.std] * 3)
    images = load_image_set(str(foreign_dir / "calib.npz"), SPEC, CLASSES)
    pixels = images.pixels.astype(np.float32)
    ranges = profile_activations(canon, pixels)
    return canon, pixels, ranges, build_knobs(canon, ranges)


def test_knobs_cover_weights_biases_and_outputs(setup):
    _, _, _, knobs = setup
    names = {k.name for k in knobs}
    assert {"Conv_0.weight", "Conv_0.bias", "MatMul_0.weight", "MatMul_0.bias", "Relu_0.result",
            "AveragePool_0.result", "Add_0.result", "BatchNormalization_0.result"} <= names
    assert "Conv_0.result" not in names  # a Conv feeding a ReLU takes the ReLU's type plus a sign bit


@pytest.fixture(scope="module")
def searched(setup):
    canon, pixels, ranges, knobs = setup
    return search_precisions(canon, knobs, ranges, pixels, None, Criterion())


def test_search_shrinks_widths_and_keeps_the_bar(setup, searched):
    canon, pixels, ranges, knobs = setup
    criterion, result = Criterion(), searched
    assert criterion.passes(result.score) and criterion.passes(result.held_out)
    assert result.held_out_images == len(pixels) // 4 and result.warning is None
    weights = [result.widths[k.name] for k in knobs if k.field == "weight"]
    activations = [result.widths[k.name] for k in knobs if k.field == "result"]
    # each part on its own allows no guarded flip at 99.9 % (750 and 250 images), where all 1,000
    # together allowed one: a near-tie image keeps two of the four weight tensors at 16 bits
    assert sum(w < WEIGHT_BITS[1] for w in weights) >= len(weights) // 2 and max(activations) < ACTIVATION_BITS[1]
    assert sum(activations) < 0.75 * ACTIVATION_BITS[1] * len(activations)
    conv0 = result.precisions.layers["Conv_0"]["result"]
    relu0 = result.precisions.layers["Relu_0"]["result"]
    assert (conv0.width, conv0.integer, conv0.signed) == (relu0.width + 1, relu0.integer + 1, True)


@pytest.mark.slow  # a search without either shortcut: the slowest way, on purpose
def test_early_stopping_and_prefix_reuse_pick_the_widths_a_full_evaluation_picks(setup, monkeypatch):
    """Rejecting a design as soon as too many images flip, and running the layers before the
    searched knob once per knob, change the work, never the answer (on 400 of the images)."""
    canon, pixels, ranges, knobs = setup
    pixels = pixels[:400]
    fast = search_precisions(canon, knobs, ranges, pixels, None, Criterion())
    monkeypatch.setattr(precision, "EARLY_STOP_BATCH", len(pixels))  # one batch: every image, every time
    monkeypatch.setattr(precision, "REUSE_PREFIX", False)  # the whole network, every time
    full = search_precisions(canon, knobs, ranges, pixels, None, Criterion())
    assert fast.widths == full.widths
    assert [t["passed"] for t in fast.trace] == [t["passed"] for t in full.trace]
    stopped = [t for t in fast.trace if t["images"] < len(pixels)]
    assert stopped and all(not t["passed"] for t in stopped)
    assert sum(t["images"] for t in fast.trace) < 0.8 * sum(t["images"] for t in full.trace)


def test_cut_tensors_carry_a_residual_skip():
    """Cutting a residual block after its fork keeps the skip tensor among the suffix's inputs."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="r0"), helper.make_node("Relu", ["a"], ["b"], name="r1"),
             helper.make_node("Relu", ["b"], ["c"], name="r2"), helper.make_node("Add", ["c", "a"], ["y"], name="add")]
    model = ModelWrapper(helper.make_model(helper.make_graph(nodes, "res", [x], [y])))
    assert precision.cut_tensors(model, 0) == ["x"]
    assert precision.cut_tensors(model, 2) == ["b", "a"]
    assert precision.cut_tensors(model, 3) == ["c", "a"]


def test_failure_budget_matches_the_bar():
    assert failure_budget(1024, 0.999) == 1 and failure_budget(1000, 0.999) == 1
    assert failure_budget(100, 1.0) == 0 and failure_budget(200, 0.99) == 2
    for n, target in ((1024, 0.999), (96, 0.95), (7, 0.5)):
        f = failure_budget(n, target)
        assert Criterion(agreement=target, margin=0).passes(precision.Score(1.0, (n - f) / n, None, None))
        assert not Criterion(agreement=target, margin=0).passes(precision.Score(1.0, (n - f - 1) / n, None, None))


def test_every_4th_image_is_held_out():
    search, held = held_out_split(10)
    assert held.tolist() == [3, 7] and search.tolist() == [0, 1, 2, 4, 5, 6, 8, 9]
    with pytest.raises(PrecisionError, match="at least 4"):
        held_out_split(3)


def test_the_held_out_part_rejects_widths_the_search_part_accepts(setup):
    """On 400 of the images (300 searched, 100 held out) the search part alone accepts some
    designs that flip a held-out image within the guard band; the search refuses them, and each
    knob ends wider than the width the held-out part refused (deterministic: the same net, images
    and order every run)."""
    canon, pixels, _, _ = setup
    pixels = pixels[:400]
    ranges = profile_activations(canon, pixels)  # as convert does: the ranges of the calibration images
    result = search_precisions(canon, build_knobs(canon, ranges), ranges, pixels, None, Criterion())
    refused = [t for t in result.trace if t["search"]["passed"] and not t["held_out"]["passed"]]
    assert refused and all(not t["passed"] for t in refused)
    for t in refused:
        knob, width = t["try"].split("=")
        assert result.widths[knob] > int(width), t["try"]
    assert result.held_out_images == 100 and Criterion().passes(result.held_out)


def test_widest_types_meeting_the_bar_but_not_the_guard_band_are_built_with_a_warning(setup):
    """At a x5 guard band even 16 bits leave a near-tie image of the search part unguarded, while
    every image agrees: the widest design is built (not refused), unsearched, with a warning."""
    canon, pixels, ranges, knobs = setup
    criterion = Criterion(guard=5.0)
    result = search_precisions(canon, knobs, ranges, pixels, None, criterion)
    assert result.warning and "widest types" in result.warning and "x5 guard band" in result.warning
    assert result.widths == {k.name: k.bits[1] for k in knobs} and [t["try"] for t in result.trace] == ["widest"]
    assert not criterion.passes(result.score)
    assert criterion.meets_bar(result.score) and criterion.meets_bar(result.held_out)


def test_widest_types_below_the_users_bar_are_refused(setup):
    """Integer bits from two images' ranges saturate on the others: even 16 bits miss the 99.5 %
    bar, and the search refuses, naming both parts' agreement."""
    canon, pixels, _, _ = setup
    few = profile_activations(canon, pixels[:2])
    with pytest.raises(PrecisionError, match="widest types .* on the held-out part.*below the 99.50% agreement bar"):
        search_precisions(canon, build_knobs(canon, few), few, pixels, None, Criterion())


def test_convert_reports_the_held_out_agreement_and_the_widest_warning(elpv_data, tmp_path):
    """report.json and what convert prints (summary_lines; report.md too) give the agreement on the
    held-out images beside the calibration agreement, and the warning when the widest are built."""
    search = convert_tiny(elpv_data, tmp_path / "searched")["precision_search"]
    assert search["held_out"]["n"] == 16 and "every 4th" in search["held_out"]["rule"] and search["warning"] is None
    assert search["proxy_on_held_out"]["agreement"] >= 0.995
    report = json.loads((tmp_path / "searched" / "build" / "report.json").read_text())
    line = next(x for x in summary_lines(report) if x.startswith("precision search"))
    assert (f"{report['precision_search']['proxy_on_calibration']['agreement']:.2%} on them, "
            f"{report['precision_search']['proxy_on_held_out']['agreement']:.2%} on the 16 held out") in line
    report = convert_tiny(elpv_data, tmp_path / "widest", guard=1e5)  # a guard band no quantized design keeps
    assert report["precision_search"]["warning"].startswith("the widest types")
    assert set(report["precision_search"]["widths"].values()) == {WEIGHT_BITS[1]}
    assert any(x.startswith("warning: the widest types") for x in summary_lines(report))
    assert "warning: the widest types" in (tmp_path / "widest" / "build" / "report.md").read_text()


def test_proxy_casts_every_output_to_its_type(setup):
    canon, pixels, ranges, knobs = setup
    p = resolve(canon, knobs, {k.name: 6 for k in knobs}, ranges)
    proxy = proxy_graph(canon, p)
    names = [t for t, ty in p.tensors.items() if ty is not None and t != canon.graph.input[0].name]
    session = onnx_session(with_outputs(ModelWrapper(proxy), names))
    values = dict(zip([o.name for o in session.get_outputs()], session.run(None, {session.get_inputs()[0].name: pixels[:4]})))
    for name in names:
        t: FixedType = p.tensors[name]
        v = values[name].astype(np.float64)
        assert np.all(v >= t.low) and np.all(v <= t.high), name
        np.testing.assert_array_equal(v / t.step, np.round(v / t.step), err_msg=name)


def test_overrides_fix_types_and_unknown_names_are_refused(setup, tmp_path):
    canon, pixels, ranges, knobs = setup
    path = tmp_path / "over.json"
    path.write_text(json.dumps({"Relu_1.result": "ap_ufixed<16,4>", "Conv_0.weight": 16}))
    overrides = load_overrides(path, knobs)
    result = search_precisions(canon, knobs, ranges, pixels, None, Criterion(), overrides)
    assert result.precisions.layers["Relu_1"]["result"] == FixedType(16, 4, signed=False)
    assert result.precisions.layers["Conv_0"]["weight"].width == 16
    assert "Relu_1.result=" not in str(result.trace)  # overridden knobs are not searched
    path.write_text(json.dumps({"Conv_9.weight": 8}))
    with pytest.raises(PrecisionError, match="Conv_9.weight"):
        load_overrides(path, knobs)
    path.write_text("{not json")
    with pytest.raises(PrecisionError, match="cannot read"):
        load_overrides(path, knobs)


def test_guarded_agreement_counts_near_flips():
    reference = np.array([[1.0, 0.0], [0.0, 1.0], [0.2, 0.0]])
    logits = np.array([[1.0, 0.0], [0.0, 1.0], [0.05, 0.0]])  # third margin shrank 0.2 -> 0.05: no flip yet
    s = score(logits, reference, None, guard=2.0)
    assert s.agreement == 1.0 and s.guarded_agreement == pytest.approx(2 / 3)
