"""Every feature of the capability table through the whole road, on CNNs exported by PyTorch's own
torch.onnx.export: convert (precision search, plan, hls4ml where it can represent the model),
then `edgefpga verify`: the integer model against the float model, the hls4ml emulator bit for
bit where there is one, and the RTL bit for bit under random idle input and backpressure."""

from __future__ import annotations

import json

import numpy as np
import pytest
from torch_nets import FEATURE_NETS, convert_feature_net, feature_cells

from edgefpga.sim.verify import verify

pytestmark = pytest.mark.slow

FRAMES = 24  # held-out images for the agreement bar
SAMPLE = 12  # of them, through the emulator and the RTL bit for bit


@pytest.fixture(scope="module")
def feature_builds(tmp_path_factory, elpv_data):
    """name -> (build folder, test images .npz, canonical ops), converted when first asked for (so
    `-k post_add_bn` converts one net), once per net."""
    from qonnx.core.modelwrapper import ModelWrapper

    from edgefpga.models import elpv

    parts = elpv.split(elpv_data)
    rng = np.random.default_rng(0)
    calib, test = rng.choice(parts.train, 300, replace=False), rng.choice(parts.test, FRAMES, replace=False)
    builds = {}

    def build(name: str):
        if name in builds:
            return builds[name]
        folder = tmp_path_factory.mktemp(name)
        np.savez(folder / "test.npz", images=feature_cells(name, elpv_data.images[test]))
        out = convert_feature_net(name, elpv_data.images[calib], folder, emulator_images=32)
        builds[name] = (out, folder / "test.npz", ModelWrapper(str(out / "model" / "canonical.onnx")))
        return builds[name]

    return build


def stages(build) -> dict[str, list[dict]]:
    manifest = json.loads((build / "rtl" / "manifest.json").read_text())
    by_module: dict[str, list[dict]] = {}
    for st in manifest["stages"]:
        by_module.setdefault(st["module"], []).append(st)
    return by_module


def attrs(node) -> dict:
    from edgefpga.hw.graph import attr

    return {a.name: attr(node, a.name) for a in node.attribute}


def check_convs(build, canonical, report):
    convs = {n.name: attrs(n) for n in canonical.graph.node if n.op_type == "Conv"}
    assert convs["Conv_0"]["kernel_shape"] == [3, 5] and convs["Conv_0"]["strides"] == [1, 2]
    assert convs["Conv_1"]["group"] == 8  # depthwise
    pool = next(attrs(n) for n in canonical.graph.node if n.op_type == "MaxPool" and attrs(n)["kernel_shape"] != [5, 5])
    assert pool["kernel_shape"] == [3, 2]
    modules = stages(build)
    assert [s["params"]["DW"] for s in modules["ef_conv2d"]] == [0, 1, 0]
    assert modules["ef_gpool"][0]["params"]["MODE"] == 0  # global max pool
    assert report["hls"]["project"] is None and any("Clip" in g for g in report["hls"]["not_generated_because"])


def check_vgg_rgb(build, canonical, report):
    pools = [attrs(n) for n in canonical.graph.node if n.op_type == "MaxPool"]
    assert pools[0] == {**pools[0], "kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    ops = [n.op_type for n in canonical.graph.node]
    assert ops[-5:] == ["MatMul", "Add", "Relu", "MatMul", "Add"]  # Dense -> ReLU -> Dense
    dense = stages(build)["ef_dense"]
    assert len(dense) == 2 and dense[0]["params"]["OMIN"] == 0  # the ReLU fused into the first
    assert dense[0]["params"]["CI"] > 1  # its products summed in ef_dense's registered tree


def check_gray_48x80(build, canonical, report):
    modules = stages(build)
    assert modules["ef_gpool"][0]["params"]["H"] == 12 and modules["ef_gpool"][0]["params"]["W"] == 20
    assert modules["ef_act"][0]["params"]["MODE"] == 1  # LeakyReLU
    assert any(s["params"]["PT"] == 1 for s in modules["ef_pool2d"])  # the padded 3x3 average pool
    assert report["output_activation"] == "softmax"


def check_post_add_bn(build, canonical, report):
    modules = stages(build)
    # two residual joins, each with a FIFO on the branch that runs ahead; the second's shortcut is a
    # 1x1 stride-2 conv (ResNet-8's downsampling block; bench/reference_models.py runs ResNet-8 itself)
    assert len(modules["ef_add"]) == 2 and len(modules["ef_fork"]) == 2 and len(modules["ef_fifo"]) == 2
    # the joins are paced (a few channels a cycle, hw/layers/add.py): the RTL check below runs them so
    assert all(s["params"]["CP"] < s["params"]["C"] for s in modules["ef_add"])
    shortcut = [n for n in canonical.graph.node if n.op_type == "Conv" and attrs(n)["kernel_shape"] == [1, 1]]
    assert len(shortcut) == 1 and attrs(shortcut[0])["strides"] == [2, 2]
    assert len(modules["ef_affine"]) == 2  # the input normalization and the BatchNorm after the first Add
    assert report["output_activation"] == "sigmoid"
    assert report["hls"]["project"] == "hls"


CHECKS = {"convs": check_convs, "vgg_rgb": check_vgg_rgb, "gray_48x80": check_gray_48x80,
          "post_add_bn": check_post_add_bn}


def on_its_worker(name: str) -> str:
    """The xdist group of a net's tests: each net is converted on one worker, once."""
    return f"feature_{name}"


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xdist_group(on_its_worker(n))) for n in FEATURE_NETS])
def test_feature_is_bit_exact(name, feature_builds):
    build, images, canonical = feature_builds(name)
    report = json.loads((build / "report.json").read_text())
    CHECKS[name](build, canonical, report)
    result = verify(build, images=str(images), progress=False, agreement=0.9, sample=SAMPLE)
    assert result["failed"] == []
    assert result["rtl"]["bit_exact_frames"] == result["rtl"]["n"] == SAMPLE
    assert result["rtl"]["backpressure_percent"] > 0 and result["rtl"]["idle_percent"] > 0
    # the plan knows each engine's bound (one window row per cycle): the measured interval keeps to it
    assert result["rtl"]["ii_cycles"] <= 1.1 * result["rtl"]["planned_ii_cycles"]
    if report["hls"]["project"]:
        assert result["emulator"]["integer_model_bit_exact_images"] == SAMPLE
    else:
        assert result["emulator"]["stand_in"]


@pytest.mark.xdist_group(on_its_worker("post_add_bn"))
def test_sigmoid_model_gives_per_class_probabilities(feature_builds):
    """The accelerator returns the scores before the Sigmoid; the Engine applies it, so the RTL
    and the float model give the same probabilities (up to the fixed point)."""
    import edgefpga.runtime as rt

    build, images, _ = feature_builds("post_add_bn")
    frames = np.load(images)["images"][:3]
    with rt.open(build, backend="rtl") as engine:
        rtl = [r.probabilities for r in engine.infer(list(frames))]
    with rt.open(build, backend="onnx") as engine:
        flt = [r.probabilities for r in engine.infer(list(frames))]
    np.testing.assert_allclose(rtl, flt, atol=0.05)
    assert not np.allclose(np.sum(flt, axis=1), 1.0)  # independent per class, not a softmax


@pytest.mark.xdist_group(on_its_worker("convs"))
def test_depthwise_stage_with_a_sliced_line_buffer_is_bit_exact(feature_builds, tmp_path):
    """The depthwise stage of `convs` with its line buffer sliced (LB_SLICED: one group's channels
    per block-RAM word, the group in the read address, each pixel written a group per cycle while
    its source holds it), whatever the build chose: bit-exact on real images under random idle
    input and output backpressure, frames back to back."""
    from edgefpga.hw.images import load_image_set
    from edgefpga.models.card import InputSpec
    from edgefpga.sim.layer_check import check_stage

    build, images, _ = feature_builds("convs")
    stage = next(s for s in stages(build)["ef_conv2d"] if s["params"]["DW"])
    groups = stage["params"]["OC"] // stage["params"]["PO"]
    assert groups > 1, f"{stage['name']} has one group of {stage['params']['PO']} lanes: nothing to slice"
    report = json.loads((build / "report.json").read_text())
    pixels = load_image_set(str(images), InputSpec.from_dict(report["model"]["input"], "report"),
                            report["model"]["classes"]).take(2).pixels
    result = check_stage(build, stage["name"], pixels, tmp_path / "dw",
                         params={"LB_SLICED": 1, "LB_WORD_REG": 1, "LB_OUT_REG": 1})
    assert result["frames"] == 2 and result["mismatches"] == []


@pytest.mark.xdist_group(on_its_worker("post_add_bn"))
@pytest.mark.timeout(300)
def test_a_join_adds_every_channel_at_once_too(feature_builds, tmp_path):
    """The join's other form, every channel in one cycle (CP = C: where a design's interval is
    short), alone in cocotb + Verilator: both branches' streams from the integer model on held-out
    images, each with its own random idle cycles, the output under backpressure, two frames back
    to back. (The paced form the build chose runs in the whole network above.)"""
    from edgefpga.hw.images import load_image_set
    from edgefpga.models.card import InputSpec
    from edgefpga.sim.layer_check import check_stage

    build, images, _ = feature_builds("post_add_bn")
    join = stages(build)["ef_add"][0]
    model = json.loads((build / "report.json").read_text())["model"]
    pixels = load_image_set(str(images), InputSpec.from_dict(model["input"], "report"), model["classes"]).take(2).pixels
    result = check_stage(build, join["name"], pixels, tmp_path / "join", params={"CP": join["params"]["C"]})
    assert result["frames"] == 2 and result["mismatches"] == []
