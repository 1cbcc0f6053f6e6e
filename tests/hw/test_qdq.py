"""Quantized models in: ONNX QDQ from ONNX Runtime's ``quantize_static`` (issue 30, item 2).

A small CNN (two 3x3 convs, a max pool, a global average pool, a dense layer) trained 300 steps
on 16x16 ELPV cells (random nets leave near-tie logits), exported with ``torch.onnx.export`` as a
user calls it (PyTorch's default exporter: ``ReduceMean`` for the average pool) and as the
TorchScript exporter writes it (``GlobalAveragePool``), then quantized with
``onnxruntime.quantization.quantize_static`` (QDQ format) on 64 training cells, as its docs show:
int8 per tensor (the defaults), uint8 activations with per-channel weights, symmetric int8
activations on a twin that averages with ``x.mean((2, 3))`` (ReduceMean, keepdims=0), a
residual net (two joins, a strided shortcut, asymmetric zero points before the joins), a fire
module (a channel Concat of two branches) and the first net ending in a Softmax (the runtime
applies it to the scores before it). ``convert``
builds each with its own scales (no precision search); its integer model gives ONNX Runtime's
output integers on held-out cells, to one step (the folded weights' last bit), with
the same top-1; the RTL is bit-exact to the integer model, and the runtime's scores are ONNX
Runtime's. What the flow cannot build is refused in one line naming the node.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime.quantization")

from brief_training import train_briefly  # noqa: E402
from small_builds import convert_cells  # noqa: E402
from torch import nn  # noqa: E402

from edgefpga.hw.onnx_check import ConversionError, check_onnx  # noqa: E402
from edgefpga.models.card import InputSpec  # noqa: E402
from edgefpga.models.preprocess import normalize, resize_batch  # noqa: E402

pytestmark = [pytest.mark.timeout(300), pytest.mark.xdist_group("qdq")]

SPEC = InputSpec(1, 16, 16, "gray", "area", 1 / 255, 0.5, 0.25)
STEPS = 300
# name -> (net, exporter, quantize_static options)
VARIANTS = {"int8_per_tensor": ("pooled", "default", {}),
            "uint8_per_channel": ("pooled", "torchscript", {"per_channel": True, "activation_type": "QUInt8"}),
            "int8_symmetric_mean": ("mean", "default", {"extra_options": {"ActivationSymmetric": True}}),
            "int8_residual": ("residual", "default", {}),
            "int8_fire": ("fire", "default", {}),
            "int8_softmax": ("pooled+softmax", "default", {})}


def small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 2))


class MeanNet(nn.Module):
    """``x.mean((2, 3))`` (the default exporter's ReduceMean with keepdims=0) into a dense layer."""

    def __init__(self):
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                   nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        return self.head(self.convs(x).mean((2, 3)))


class Residual(nn.Module):
    """Two residual joins, one with a strided 1x1 shortcut, the branches without a ReLU before the
    join: ONNX Runtime gives them asymmetric zero points."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.branch = nn.Conv2d(8, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.shortcut = nn.Conv2d(8, 16, 1, stride=2)
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        x = torch.relu(x + self.branch(x))
        x = torch.relu(self.down(x) + self.shortcut(x))
        return self.head(x.mean((2, 3)))


class Fire(nn.Module):
    """A channel Concat of two branches (SqueezeNet's fire module)."""

    def __init__(self):
        super().__init__()
        self.squeeze = nn.Conv2d(1, 4, 1)
        self.left, self.right = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        x = torch.relu(self.squeeze(x))
        x = torch.cat([torch.relu(self.left(x)), torch.relu(self.right(x))], 1)
        return self.head(x.mean((2, 3)))


NETS = {"pooled": small_net, "mean": MeanNet, "residual": Residual, "fire": Fire}


@pytest.fixture(scope="module")
def cells(elpv_data):
    """16x16 pixels and labels of 1024 training cells; 64 training and 64 test cells as the files
    hold them (300x300)."""
    from edgefpga.models import elpv

    parts = elpv.split(elpv_data)
    rng = np.random.default_rng(0)
    train, test = rng.choice(parts.train, 1024, replace=False), rng.choice(parts.test, 64, replace=False)
    labels = elpv.binary_labels(elpv_data.proba[train])
    return resize_batch(elpv_data.images[train], SPEC), labels, elpv_data.images[train[:64]], elpv_data.images[test]


def export(model: nn.Module, path: Path, exporter: str, example: torch.Tensor | None = None) -> Path:
    """``torch.onnx.export`` as a user calls it: the default (PyTorch 2.9+: torch.export-based) or
    the TorchScript exporter."""
    example = torch.zeros(1, 1, SPEC.height, SPEC.width) if example is None else example
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example, str(path), input_names=["input"], output_names=["scores"],
                          **({"dynamo": False} if exporter == "torchscript" else {}))
    return path


def quantize(float_path: Path, path: Path, calibration: np.ndarray, input_name: str = "input", **options) -> Path:
    """``quantize_static`` in QDQ format, calibrated on normalized cells."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Cells(CalibrationDataReader):
        def __init__(self):
            self.batches = iter({input_name: calibration[i:i + 1]} for i in range(len(calibration)))

        def get_next(self):
            return next(self.batches, None)

    for key in ("activation_type", "weight_type"):  # by name: QuantType loads with onnxruntime.quantization
        if key in options:
            options[key] = getattr(QuantType, options[key])
    options["quant_format"] = getattr(QuantFormat, options.get("quant_format", "QDQ"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(str(float_path), str(path), Cells(), **options)
    return path


@pytest.fixture(scope="module")
def quantized(cells, tmp_path_factory):
    """variant -> its QDQ file, from one trained net."""
    pixels, labels, *_ = cells
    folder = tmp_path_factory.mktemp("qdq")
    x, y = torch.from_numpy(normalize(pixels, SPEC)), torch.from_numpy(labels).long()
    models = {net: train_briefly(build, x, y, STEPS) for net, build in NETS.items()}
    calibration = x[:64].numpy()
    files = {}
    models["pooled+softmax"] = nn.Sequential(models["pooled"], nn.Softmax(dim=1)).eval()  # a final Softmax
    for name, (net, exporter, options) in VARIANTS.items():
        float_path = export(models[net], folder / f"{name}_float.onnx", exporter)
        files[name] = quantize(float_path, folder / f"{name}.onnx", calibration, **dict(options))
    return files


def convert_net(path: Path, cells, out: Path) -> dict:
    return convert_cells(path, cells[2], out, SPEC)


def onnxruntime_scores(path: Path, pixels: np.ndarray) -> np.ndarray:
    from edgefpga.hw.graph import onnx_session

    session = onnx_session(onnx.load(str(path)))
    x = normalize(pixels, SPEC)
    return np.concatenate([session.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])


@pytest.mark.parametrize("name", list(VARIANTS))
def test_qdq_converts_and_matches_onnxruntime(name, quantized, cells, tmp_path):
    """No search: every type is the model's, each weight a 25-bit constant (8-bit weight x the
    requantization multiplier). On 64 held-out cells the integer model gives ONNX Runtime's output integers to
    one step, with the same top-1; the report says how to turn them into ONNX Runtime's scores."""
    from edgefpga.sim.verify import integer_scores

    path = quantized[name]
    report = convert_net(path, cells, tmp_path / name)
    build = tmp_path / name
    precisions = json.loads((build / "precisions.json").read_text())
    assert set(precisions["sources"].values()) == {"model"}
    assert not (build / "calibration" / "search.json").exists()
    weights = [fields["weight"]["width"] for fields in precisions["layers"].values() if "weight" in fields]
    assert len(weights) >= 3 and max(weights) == 25, weights
    check = report["onnxruntime_check"]
    assert check["top1_agreement"] == 1.0 and check["max_abs_diff_steps"] <= 1, check
    dequantize = report["output_dequantize"]
    _, _, _, test_raw = cells
    test = resize_batch(test_raw, SPEC)
    ours, frac = integer_scores(build, test)
    assert frac == 0
    theirs = onnxruntime_scores(path, test)
    ours_scores = dequantize["scale"] * (ours - dequantize["zero_point"])
    if report["output_activation"] == "softmax":  # the runtime applies it to the scores before it
        assert name.endswith("softmax")
        e = np.exp(ours_scores - ours_scores.max(1, keepdims=True))
        probabilities = e / e.sum(1, keepdims=True)
        softmax_step = float(onnx.numpy_helper.to_array(next(
            i for i in onnx.load(str(path)).graph.initializer if i.name.startswith("scores") and
            i.name.endswith("_scale"))))
        assert np.abs(probabilities - theirs).max() <= 2 * softmax_step  # ONNX Runtime's, quantized
        assert np.array_equal(probabilities.argmax(1), theirs.argmax(1))
        return
    steps = np.abs(ours_scores - theirs) / dequantize["scale"]
    assert steps.max() <= 1 + 1e-3, steps.max()
    assert np.array_equal(ours.argmax(1), theirs.argmax(1))
    assert np.mean(steps < 1e-3) >= 0.9, np.mean(steps < 1e-3)  # most scores identical


def test_qdq_rtl_is_bit_exact_and_scores_are_onnxruntimes(quantized, cells, tmp_path):
    """The residual net's RTL (its joins, the branches' requantizing 1x1 convs, the clamps of
    asymmetric zero points) against its integer model on held-out cells (a Verilator build), and
    the rtl backend's scores against ONNX Runtime's on the QDQ file."""
    from edgefpga.runtime.backends.rtl import RtlBackend
    from edgefpga.runtime.source import ModelRef
    from edgefpga.sim.verify import verify

    build = tmp_path / "residual"
    convert_net(quantized["int8_residual"], cells, build)
    _, _, _, test_raw = cells
    np.savez(tmp_path / "test.npz", images=test_raw)
    result = verify(build, images=str(tmp_path / "test.npz"), sample=4, progress=False)
    assert result["rtl"]["bit_exact_frames"] == result["rtl"]["n"] == 4
    assert result["emulator"]["top1_agreement"] == 1.0  # against ONNX Runtime on the file
    assert result["failed"] == []
    backend = RtlBackend(ModelRef.from_build(build))
    try:
        frames = resize_batch(test_raw[:4], SPEC)
        scores = backend.run(frames).scores
    finally:
        backend.close()
    theirs = onnxruntime_scores(quantized["int8_residual"], frames)
    scale = json.loads((build / "report.json").read_text())["output_dequantize"]["scale"]
    assert np.abs(scores - theirs).max() <= scale * (1 + 1e-3), (scores, theirs)


def refusal(path: Path) -> str:
    with pytest.raises(ConversionError) as refused:
        check_onnx(path)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    return message


def test_what_is_not_built_is_refused_by_name(cells, tmp_path):
    """uint8 weights (a zero point), a ReLU6
    (a Clip between quantizers: it would clip integers in units of the scale) and ONNX Runtime's
    other format (QOperator): one line each, naming the node and the reason; nothing is built."""
    from edgefpga.hw.convert import ConvertConfig, convert

    pixels = normalize(cells[0][:16], SPEC)
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2)).eval()
    relu6 = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2)).eval()
    cases = (("uint8_weights", plain, {"weight_type": "QUInt8", "activation_type": "QUInt8"}, "x_zero_point: "),
             ("relu6", relu6, {"extra_options": {"ActivationSymmetric": True}}, "(Clip), op: Clip between quantizers"),
             ("qoperator", plain, {"quant_format": "QOperator"}, "QOperator format is not read"))
    for label, net, options, needle in cases:
        float_path = export(net, tmp_path / f"{label}_float.onnx", "default")
        path = quantize(float_path, tmp_path / f"{label}.onnx", pixels, **options)
        message = refusal(path)
        assert "node '" in message and needle in message, (label, message)
    with pytest.raises(ConversionError):
        convert(str(tmp_path / "relu6.onnx"), tmp_path / "build", ConvertConfig(progress=False, scale=SPEC.scale),
                log=lambda _m: None)
    assert not (tmp_path / "build").exists()


def test_onnx_zoo_mnist_quantized_by_onnxruntime(elpv_data, tmp_path):
    """A file we did not write: the ONNX model zoo's MNIST-8 from the qonnx wheel (opset 8, IR 3),
    through ONNX Runtime's own recipe (``quant_pre_process``, then ``quantize_static`` on 100 ELPV
    cells resized to 28x28, raw 0..255 as the zoo model takes them). ONNX Runtime keeps the IR-3
    version on a file whose constants are no longer graph inputs, and the opset upgrade must keep
    the quantized types: the build is the QDQ route (every type the model's), and gives ONNX
    Runtime's output integers."""
    import qonnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgefpga.hw.convert import ConvertConfig, convert
    from edgefpga.models import elpv

    mnist = Path(qonnx.__file__).parent / "data" / "onnx" / "mnist-conv" / "model.onnx"
    cells = elpv_data.images[elpv.split(elpv_data).train[:200]]
    np.savez(tmp_path / "cells.npz", images=cells)
    spec = InputSpec(1, 28, 28, "gray", "area", 1.0, 0.0, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quant_pre_process(str(mnist), str(tmp_path / "pre.onnx"))
    x = normalize(resize_batch(cells[:100], spec), spec)
    path = quantize(tmp_path / "pre.onnx", tmp_path / "mnist_int8.onnx", x, input_name="Input3")
    assert onnx.load(str(path)).ir_version == 3
    report = convert(str(path), tmp_path / "mnist", ConvertConfig(calibration=str(tmp_path / "cells.npz"),
                                                                  calibration_images=64, emulator_images=64,
                                                                  progress=False, emulator=False), log=lambda _m: None)
    precisions = json.loads((tmp_path / "mnist" / "precisions.json").read_text())
    assert set(precisions["sources"].values()) == {"model"}
    check = report["onnxruntime_check"]
    assert check["top1_agreement"] == 1.0 and check["max_abs_diff_steps"] <= 1, check
