"""Quantized models in: QONNX from Brevitas' ``export_qonnx`` (issue 30, item 1).

Small CNNs with Brevitas' fixed-point quantizers (power-of-two scales), W4A4 and W8A8, trained a
few hundred steps on 16x16 ELPV cells (random nets leave near-tie logits), exported with
``export_qonnx`` as a user calls it (PyTorch 2.13's default, the torch.export-based exporter:
opset 20, IR 10, Quant nodes in qonnx's domain). ``convert`` builds them with their own widths
(no precision search, every type in precisions.json marked ``model``); the integer model
computes exactly what ``qonnx.core.onnx_exec.execute_onnx`` computes on the file, and the RTL is
bit-exact to it. A scale that is not a power of two is refused by name, before any work.

The input normalization is ``pixel / 256`` (a power of two): the input quantizer then reads
exactly the values qonnx reads (docs/convert.md says why)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("brevitas")

from brief_training import train_briefly  # noqa: E402
from small_builds import convert_cells  # noqa: E402
from torch import nn  # noqa: E402

from edgefpga.hw.onnx_check import ConversionError, check_onnx  # noqa: E402
from edgefpga.models.card import InputSpec  # noqa: E402
from edgefpga.models.preprocess import normalize, resize_batch  # noqa: E402

pytestmark = pytest.mark.timeout(300)
# the trained nets (the module's `exported`) are made once, on one worker; each test (its fixtures
# included) takes 1-40 s here. The QAT model's test goes with that fixture's group (tests/conftest.py).
ON_THE_NETS_WORKER = pytest.mark.xdist_group("qonnx")

SPEC = InputSpec(1, 16, 16, "gray", "area", 1 / 256, 0.0, 1.0)
STEPS = 300


def quant_net(weight_bits: int, act_bits: int, act_quant=None, output_bits: int | None = None) -> nn.Module:
    """The shape docs/convert.md shows, with the project's one choice of quantizers (models/quant.py)."""
    from edgefpga.models.quant import quant_net as net

    return net(weight_bits, act_bits, act_quant, output_bits, size=SPEC.height)


NETS = {"w4a4": dict(weight_bits=4, act_bits=4), "w8a8": dict(weight_bits=8, act_bits=8, output_bits=16)}


@pytest.fixture(scope="module")
def cells(elpv_data):
    """16x16 pixels and labels of 1024 training cells; 64 training and 64 test cells as the files
    hold them (300x300) for convert and verify."""
    from edgefpga.models import elpv

    parts = elpv.split(elpv_data)
    rng = np.random.default_rng(0)
    train, test = rng.choice(parts.train, 1024, replace=False), rng.choice(parts.test, 64, replace=False)
    labels = elpv.binary_labels(elpv_data.proba[train])
    return resize_batch(elpv_data.images[train], SPEC), labels, elpv_data.images[train[:64]], elpv_data.images[test]


def export(model: nn.Module, path: Path) -> Path:
    """``export_qonnx`` as a user calls it."""
    from brevitas.export import export_qonnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(model, torch.zeros(1, 1, SPEC.height, SPEC.width), str(path))
    return path


@pytest.fixture(scope="module")
def exported(cells, tmp_path_factory):
    """name -> the QONNX file of the net trained STEPS steps, and its training accuracy."""
    pixels, labels, *_ = cells
    folder = tmp_path_factory.mktemp("qonnx")
    x, y = torch.from_numpy(normalize(pixels, SPEC)), torch.from_numpy(labels).long()
    files = {}
    for name, widths in NETS.items():
        model = train_briefly(lambda widths=widths: quant_net(**widths), x, y, STEPS)
        files[name] = export(model, folder / f"{name}.onnx")
    return files


def convert_net(path: Path, cells, out: Path, emulator: bool = True) -> dict:
    return convert_cells(path, cells[2], out, SPEC, emulator)


@pytest.fixture(scope="module")
def builds(exported, cells, tmp_path_factory):
    """name -> (build folder, report) of each exported net, converted once for the module's tests
    (the W4A4 build's emulator is verified; the W8A8 build's tests read its integer model and RTL)."""
    folder = tmp_path_factory.mktemp("qonnx_builds")
    return {name: (folder / name, convert_net(path, cells, folder / name, emulator=name == "w4a4"))
            for name, path in exported.items()}


@ON_THE_NETS_WORKER
@pytest.mark.parametrize("name", list(NETS))
def test_qonnx_converts_with_its_own_types(name, builds, exported, cells):
    """No search: every type is the model's; the integer model equals qonnx's execution of the file
    on 64 held-out cells, score for score."""
    from edgefpga.hw.qonnx_in import qonnx_outputs
    from edgefpga.sim.verify import integer_scores

    build, report = builds[name]
    precisions = json.loads((build / "precisions.json").read_text())
    assert set(precisions["sources"].values()) == {"model"}
    assert not (build / "calibration" / "search.json").exists()
    assert "skipped" in report["precision_search"]
    widths = NETS[name]
    weights = [fields["weight"] for fields in precisions["layers"].values() if "weight" in fields]
    assert len(weights) == 3
    assert {t["width"] for t in weights} == {widths["weight_bits"]}, weights
    relus = [t for k, t in precisions["tensors"].items() if k.startswith("Relu")]
    assert {(t["width"], t["signed"]) for t in relus} == {(widths["act_bits"], False)}, relus
    assert report["qonnx_check"]["bit_exact_images"] == report["qonnx_check"]["n"] == 16  # convert's own check
    _, _, _, test_raw = cells
    test = resize_batch(test_raw, SPEC)
    ours, frac = integer_scores(build, test)
    theirs = qonnx_outputs(str(exported[name]), normalize(test, SPEC))
    assert np.array_equal(ours * 2.0 ** -frac, theirs), np.abs(ours * 2.0 ** -frac - theirs).max()
    assert len(test) >= 64


@ON_THE_NETS_WORKER
@pytest.mark.slow
def test_qonnx_rtl_is_bit_exact(builds, cells, tmp_path):
    """The W4A4 net's RTL against its integer model on a few held-out cells (a Verilator build)."""
    from edgefpga.sim.verify import verify

    build = builds["w4a4"][0]  # verify adds its verify.json; nothing else here reads one
    _, _, _, test_raw = cells
    np.savez(tmp_path / "test.npz", images=test_raw)
    result = verify(build, images=str(tmp_path / "test.npz"), sample=4, progress=False)
    assert result["rtl"]["bit_exact_frames"] == result["rtl"]["n"] == 4
    assert result["emulator"]["top1_agreement"] == 1.0  # against the model's own arithmetic (reference.onnx)
    assert result["failed"] == []


def test_scale_not_a_power_of_two_is_refused(tmp_path):
    """Brevitas' default (float-scaled) weight quantizer: refused in one line naming the node, what it
    quantizes and the scale, before any build folder exists."""
    import brevitas.nn as qnn
    from brevitas.quant import Int8ActPerTensorFixedPoint, Int8WeightPerTensorFloat, Uint8ActPerTensorFixedPoint

    from edgefpga.hw.convert import ConvertConfig, convert

    torch.manual_seed(0)
    net = nn.Sequential(qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, return_quant_tensor=True),
                        qnn.QuantConv2d(1, 4, 3, weight_quant=Int8WeightPerTensorFloat, bias=False),
                        qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint))
    scale = net[1].quant_weight().scale.item()
    path = export(net.eval(), tmp_path / "float_scale.onnx")
    with pytest.raises(ConversionError) as refused:
        check_onnx(path)
    message = str(refused.value)
    assert "\n" not in message, message
    conv = next(n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Conv")
    assert message.startswith(f"{path}: node 'node__symbolic_1' (Quant) on the weight of '{conv}', scale: "
                              f"{scale:.9g} is not a power of two;"), message
    assert "FixedPoint" in message, message
    with pytest.raises(ConversionError):
        convert(str(path), tmp_path / "build", ConvertConfig(progress=False, scale=SPEC.scale), log=lambda _m: None)
    assert not (tmp_path / "build").exists()


def edited(source: Path, path: Path, edit) -> Path:
    """A copy of a QONNX file with ``edit(model, quantizers)`` applied (quantizers: the Quant nodes by
    what they read: 'relu' for the first QuantReLU's, 'weight' for the first conv's weights)."""
    from onnx import helper, numpy_helper

    model = onnx.load(str(source))
    constants = {i.name for i in model.graph.initializer}
    quants = [n for n in model.graph.node if n.op_type == "Quant"]
    producers = {o: n for n in model.graph.node for o in n.output}
    relu = next(q for q in quants if q.input[0] in producers and producers[q.input[0]].op_type == "Relu")
    weight = next(q for q in quants if q.input[0] in constants and q.input[0] != "x" and
                  numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == q.input[0])).ndim == 4)
    edit(model, {"relu": relu, "weight": weight}, helper, numpy_helper)
    onnx.save(model, str(path))
    return path


@ON_THE_NETS_WORKER
def test_other_quantizers_are_refused_by_name(exported, tmp_path):
    """A non-zero activation zero point, a Trunc and a BipolarQuant on an activation: one line each,
    naming the node and what is wrong."""
    def zero_point(model, q, helper, numpy_helper):
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(1.0, np.float32), "zp_one"))
        q["relu"].input[2] = "zp_one"

    def trunc(model, q, helper, numpy_helper):
        q["relu"].op_type = "Trunc"

    def bipolar(model, q, helper, numpy_helper):
        q["relu"].op_type = "BipolarQuant"
        del q["relu"].input[2:]
        del q["relu"].attribute[:]

    for label, edit, needle in (("zeropt", zero_point, "(Quant) on the output of 'node_relu', zeropt: 1: only zero "
                                 "points of 0"), ("trunc", trunc, "(Trunc) on the output of 'node_relu', op: Trunc"),
                                ("bipolar", bipolar, "(BipolarQuant) on the output of 'node_relu', op: BipolarQuant "
                                 "on an activation is not built")):
        path = edited(exported["w4a4"], tmp_path / f"{label}.onnx", edit)
        with pytest.raises(ConversionError) as refused:
            check_onnx(path)
        message = str(refused.value)
        assert "\n" not in message and message.startswith(f"{path}: node '") and needle in message, (label, message)


@ON_THE_NETS_WORKER
def test_bipolar_weights_convert_exactly(exported, cells, tmp_path):
    """BipolarQuant on a conv's weights (+-scale, a power of two): folded into 2-bit weights; the
    integer model still equals qonnx's execution."""
    from edgefpga.hw.qonnx_in import qonnx_outputs
    from edgefpga.sim.verify import integer_scores

    def bipolar(model, q, helper, numpy_helper):
        q["weight"].op_type = "BipolarQuant"
        del q["weight"].input[2:]
        del q["weight"].attribute[:]

    path = edited(exported["w4a4"], tmp_path / "bipolar.onnx", bipolar)
    convert_net(path, cells, tmp_path / "bipolar", emulator=False)
    precisions = json.loads((tmp_path / "bipolar" / "precisions.json").read_text())
    assert precisions["layers"]["Conv_0"]["weight"]["width"] == 2
    _, _, _, test_raw = cells
    test = resize_batch(test_raw, SPEC)
    ours, frac = integer_scores(tmp_path / "bipolar", test)
    assert np.array_equal(ours * 2.0 ** -frac, qonnx_outputs(str(path), normalize(test, SPEC)))


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the shared qat_model fixture trains when this test runs first
def test_qat_model_converts_with_its_own_widths(qat_model, tmp_path):
    """A model folder from `edgefpga train --qat W4A4` (tests/conftest.py): convert reads the trained widths (no search, every type the model's) and its integer model
    equals qonnx's execution of the file."""
    from edgefpga.hw.convert import ConvertConfig, convert

    build = tmp_path / "build"
    report = convert(str(qat_model), build, ConvertConfig(calibration_images=64, emulator_images=16, progress=False,
                                                          emulator=False), log=lambda _m: None)
    precisions = json.loads((build / "precisions.json").read_text())
    assert set(precisions["sources"].values()) == {"model"}
    weights = {f["weight"]["width"] for f in precisions["layers"].values() if "weight" in f}
    assert weights == {4}, weights
    relus = {(t["width"], t["signed"]) for k, t in precisions["tensors"].items() if k.startswith("Relu")}
    assert relus == {(4, False)}, relus
    assert report["qonnx_check"]["bit_exact_images"] == report["qonnx_check"]["n"] >= 16


@ON_THE_NETS_WORKER
@pytest.mark.slow
@pytest.mark.parametrize("stage", ["Conv_0", "Conv_1"])  # a signed input (the input quantizer), an unsigned one
def test_w8a8_conv_packs_two_products_per_dsp_bit_exact(builds, cells, tmp_path, stage):
    """The W8A8 net's 8-bit inputs and weights fit two products in one DSP48E1 (ef_conv2d PACK, issue
    29 item 1). The planner builds pairs only where they shorten the interval, which this small net's
    do not; so each convolution is built here as a paired DSP stage (PACK=1, USE_DSP=1 over the
    build's own parameters) and checked bit for bit against the integer model on held-out cells,
    frames back to back under idle input and backpressure. It fails with the offset left out."""
    from edgefpga.hw.layers.conv import packable
    from edgefpga.sim.layer_check import check_stage

    build = builds["w8a8"][0]
    manifest = json.loads((build / "rtl" / "manifest.json").read_text())
    params = next(st for st in manifest["stages"] if st["name"] == stage)["params"]
    assert params["PO"] > 1 and packable(params["XW"], params["WW"]), params
    _, _, _, test_raw = cells
    result = check_stage(build, stage, resize_batch(test_raw[:2], SPEC), tmp_path / stage,
                         params={"USE_DSP": 1, "PACK": 1})
    assert result["frames"] == 2 and result["mismatches"] == []
