"""PyTorch's default exporter: since 2.9 ``torch.onnx.export(model, args, path)`` runs the
torch.export-based exporter (opset 18-20, IR 10). It writes global pools as ReduceMean /
ReduceMax (axes as an input), every flatten as Reshape, every Linear as Gemm, and spells out
default attributes (auto_pad NOTSET, storage_order 0). Its files give the same canonical graph as
the TorchScript exporter's (``dynamo=False``), compute what PyTorch computes, and convert to the
same integer model and a bit-exact RTL; reductions that are no global pool stay refused.

The nets are small and trained (a few hundred steps on 16x16 ELPV cells): random nets leave
near-tie logits. Their activations are ReLU6 (Clip), which hls4ml 1.3 cannot read, so no
emulator is compiled: conversion takes seconds (the canonical graph is the same either way, and
test_features.py covers the emulator)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from torch import nn

from edgefpga.hw.graph import canonical_graph, onnx_session
from edgefpga.hw.onnx_check import ConversionError, check_onnx
from edgefpga.models.card import InputSpec
from edgefpga.models.preprocess import normalize, resize_batch
from brief_training import train_briefly
from conftest import false_color

pytestmark = pytest.mark.xdist_group("default_exporter")  # the trained nets are made once, on one worker

SPEC = InputSpec(1, 16, 16, "gray", "area", 1 / 255, 0.5, 0.25)
NORM = dict(scale=SPEC.scale, mean=[SPEC.mean], std=[SPEC.std])


def cbr(cin, cout, stride=1, groups=1):
    return [nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU6()]


class AvgHead(nn.Module):
    """MobileNet's tail: depthwise-separable, AdaptiveAvgPool2d(1), flatten, Linear (ReduceMean
    with keepdims=1, then Reshape and Gemm)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(*cbr(1, 8), *cbr(8, 8, 2, groups=8), nn.Conv2d(8, 16, 1), nn.ReLU6(),
                                      nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(16, 2)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class MaxHead(nn.Module):
    """``x.amax((2, 3))`` into a Linear without bias (ReduceMax with keepdims=0, then Gemm without C)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(*cbr(1, 8), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, 1, 1), nn.ReLU6())
        self.classifier = nn.Linear(16, 2, bias=False)

    def forward(self, x):
        return self.classifier(self.features(x).amax((2, 3)))


class ResMean(nn.Module):
    """A ResNet-style block (identity shortcut) and ``flatten(x.mean((-1, -2)), 1)``: negative axes,
    keepdims=0, and a flatten of what is flat already (the TorchScript exporter writes a Flatten)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(*cbr(1, 8, 2))
        self.body = nn.Sequential(*cbr(8, 8), nn.Conv2d(8, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8))
        self.classifier = nn.Linear(8, 2)

    def forward(self, x):
        x = self.stem(x)
        return self.classifier(torch.flatten(nn.functional.relu6(self.body(x) + x).mean((-1, -2)), 1))


def own_arch():
    """The project's own architecture (models/arch.py), as `edgefpga train` builds it."""
    from edgefpga.models.arch import ArchConfig

    return ArchConfig(size=16, widths=(8, 16), dropout=0.0).build_model()


NETS = {"avg_head": AvgHead, "max_head": MaxHead, "res_mean": ResMean, "own_arch": own_arch}
REDUCTION = {"avg_head": "ReduceMean", "max_head": "ReduceMax", "res_mean": "ReduceMean", "own_arch": None}


@pytest.fixture(scope="module")
def cells(elpv_data):
    """16x16 8-bit pixels and labels of 1024 training cells, 16x16 pixels of 64 test cells, and
    64 training and 64 test cells as the files hold them (300x300) for convert and verify (verify's
    agreement bar on 16 cells allowed one flip of a briefly trained net: it failed CI once)."""
    from edgefpga.models import elpv

    parts = elpv.split(elpv_data)
    rng = np.random.default_rng(0)
    train, test = rng.choice(parts.train, 1024, replace=False), rng.choice(parts.test, 64, replace=False)
    labels = elpv.binary_labels(elpv_data.proba[train])
    return (resize_batch(elpv_data.images[train], SPEC), labels, resize_batch(elpv_data.images[test], SPEC),
            elpv_data.images[train[:64]], elpv_data.images[test])


@pytest.fixture(scope="module")
def trained(cells):
    """name -> the net trained 300 steps (batch 32, Adam) on the 1024 cells, in eval mode."""
    pixels, labels, *_ = cells
    x, y = torch.from_numpy(normalize(pixels, SPEC)), torch.from_numpy(labels).long()
    return {name: train_briefly(build, x, y) for name, build in NETS.items()}


def export(model: nn.Module, path: Path, **how) -> Path:
    """``torch.onnx.export`` as a user calls it: ``how`` empty is PyTorch's default call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 1, SPEC.height, SPEC.width),), str(path), verbose=False, **how)
    return path


LEGACY = dict(opset_version=13, dynamo=False)
WAYS = {"default": {}, "dynamo_18": dict(dynamo=True, opset_version=18)}


def form(model) -> dict:
    """What a canonical graph is, less the values of its constants (compared with a tolerance)."""
    proto = model.model
    return {"opset": [(o.domain, o.version) for o in proto.opset_import], "ir": proto.ir_version,
            "metadata": {p.key: p.value for p in proto.metadata_props},
            "nodes": [(n.name, n.op_type, list(n.input), list(n.output),
                       sorted((a.name, str(helper.get_attribute_value(a))) for a in n.attribute))
                      for n in proto.graph.node],
            "constants": {i.name: (list(i.dims), i.data_type) for i in proto.graph.initializer},
            "annotations": [str(a) for a in proto.graph.quantization_annotation],
            "outputs": [str(o.type) for o in proto.graph.output]}


def constants(model) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.model.graph.initializer}


def canonical(path: Path):
    model, _ = check_onnx(path)
    return canonical_graph(model, str(path), **NORM)


@pytest.mark.parametrize("name", list(NETS))
def test_default_export_gives_the_legacy_canonical_graph(name, trained, cells, tmp_path):
    """Default and dynamo=True (opset 18) exports: the same canonical graph as dynamo=False (ops,
    names, attributes, opset 13, constants within float rounding), computing in ONNX Runtime what
    PyTorch computes on real cells."""
    model = trained[name]
    legacy = canonical(export(model, tmp_path / "legacy.onnx", **LEGACY))
    _, _, test, *_ = cells
    with torch.no_grad():
        expected = model(torch.from_numpy(normalize(test, SPEC))).numpy()
    for way, how in WAYS.items():
        path = export(model, tmp_path / f"{way}.onnx", **how)
        raw = onnx.load(str(path))
        assert raw.opset_import[0].version >= 18, way
        if REDUCTION[name]:  # what the refusal used to stop at
            assert REDUCTION[name] in [n.op_type for n in raw.graph.node], way
        graph = canonical(path)
        assert form(graph) == form(legacy), way
        ours, theirs = constants(graph), constants(legacy)
        for key, value in theirs.items():
            np.testing.assert_allclose(ours[key], value, rtol=1e-5, atol=1e-6, err_msg=f"{way} {key}")
        session = onnx_session(graph.model)
        scores = np.concatenate([session.run(None, {session.get_inputs()[0].name: p[None].astype(np.float32)})[0]
                                 for p in test])
        np.testing.assert_allclose(scores, expected, atol=1e-4, err_msg=way)
        assert (scores.argmax(1) == expected.argmax(1)).all()
    ops = [n.op_type for n in legacy.graph.node]
    assert not {"ReduceMean", "ReduceMax", "GlobalAveragePool", "GlobalMaxPool", "Reshape", "Gemm"} & set(ops)
    if REDUCTION[name]:
        pool = next(n for n in legacy.graph.node if n.op_type in ("AveragePool", "MaxPool") and n.output[0] ==
                    next(f.input[0] for f in legacy.graph.node if f.op_type == "Flatten"))
        assert pool.op_type == {"ReduceMean": "AveragePool", "ReduceMax": "MaxPool"}[REDUCTION[name]]


class Reduce(nn.Module):
    def __init__(self, reduce):
        super().__init__()
        self.conv, self.reduce = nn.Conv2d(1, 4, 3, 1, 1), reduce

    def forward(self, x):
        return self.reduce(torch.relu(self.conv(x)))


REFUSED = {  # a reduction that is no global pool -> what the one line names
    "channels": (lambda x: x.mean(1, keepdim=True), "(ReduceMean), axes: [1] of a rank-4 tensor"),
    "rows": (lambda x: x.amax(2).flatten(1), "(ReduceMax), axes: [2] of a rank-4 tensor"),
    "per_image": (lambda x: x.mean((1, 2, 3)), "(ReduceMean), axes: [1, 2, 3] of a rank-4 tensor"),
    "everything": (lambda x: x.mean(), "(ReduceMean), axes: none given"),
}


@pytest.mark.parametrize("way", ["default", "legacy"])
def test_reductions_over_other_axes_are_refused(way, tmp_path):
    """One line naming the file, the node, the op and the axes, before any work."""
    for label, (reduce, needle) in REFUSED.items():
        path = export(Reduce(reduce).eval(), tmp_path / f"{label}.onnx", **(LEGACY if way == "legacy" else {}))
        with pytest.raises(ConversionError) as refused:
            check_onnx(path)
        message = str(refused.value)
        assert "\n" not in message and message.startswith(f"{path}: node '"), (label, message)
        assert needle in message and "only the" in message and "(2, 3)" in message, (label, message)


CONVERTED = ("avg_head", "max_head", "res_mean")
RTL_NET = "avg_head"  # the one net whose RTL runs (a Verilator build: most of this file's time)


@pytest.mark.slow
def test_default_export_is_bit_exact(trained, cells, tmp_path):
    """Both exports of each net convert, to the same precisions and the same integer model; the
    default export's RTL is bit-exact to it (one net, a sample of held-out cells)."""
    from edgefpga.hw.convert import ConvertConfig, convert
    from edgefpga.sim.verify import integer_scores, verify

    _, _, test, calib_raw, test_raw = cells
    np.savez(tmp_path / "calib.npz", images=calib_raw)
    np.savez(tmp_path / "test.npz", images=test_raw)
    cfg = ConvertConfig(calibration=str(tmp_path / "calib.npz"), calibration_images=64, emulator_images=8,
                        progress=False, scale=SPEC.scale, mean=SPEC.mean, std=SPEC.std, agreement=0.9)
    for name in CONVERTED:
        builds = {}
        for way, how in (("legacy", LEGACY), ("default", {})):
            path = export(trained[name], tmp_path / f"{name}_{way}.onnx", **how)
            builds[way] = tmp_path / f"{name}_{way}"
            report = convert(str(path), builds[way], cfg, log=lambda _m: None)
            assert report["hls"]["project"] is None  # ReLU6: no emulator compiled (seconds, not a minute)
        assert (builds["legacy"] / "precisions.json").read_text() == (builds["default"] / "precisions.json").read_text()
        legacy, frac = integer_scores(builds["legacy"], test)
        default, same_frac = integer_scores(builds["default"], test)
        assert frac == same_frac and np.array_equal(legacy, default), name
    result = verify(tmp_path / f"{RTL_NET}_default", images=str(tmp_path / "test.npz"), sample=4, progress=False,
                    agreement=0.9)
    assert result["rtl"]["bit_exact_frames"] == result["rtl"]["n"] == 4
    assert result["failed"] == []


def shipped_net(name: str, elpv_data) -> tuple[nn.Module, tuple[int, int, int], InputSpec, np.ndarray]:
    """(module, input shape, its input spec, 8 cells as 8-bit pixels): a reference shape with the zoo's weights
    (read back from its model.onnx), or a feature net of tests/torch_nets.py calibrated as
    test_features.py calibrates it."""
    from torch_nets import FEATURE_NETS, calibrate

    from edgefpga.models.card import ZOO
    from edgefpga.models.export import load_folded
    from edgefpga.models.reference import MEAN, REFERENCES, SCALE, STD

    shape = REFERENCES[name].shape if name in REFERENCES else FEATURE_NETS[name][1]
    spec = InputSpec(shape[0], shape[1], shape[2], "gray" if shape[0] == 1 else "bgr", "area", SCALE, MEAN, STD)
    images = elpv_data.images[:64] if shape[0] == 1 else false_color(elpv_data.images[:64])
    pixels = resize_batch(images, spec)
    if name in REFERENCES:
        model = load_folded(ZOO / name / "model.onnx", REFERENCES[name].build())
    else:
        torch.manual_seed(0)
        model = FEATURE_NETS[name][0]()
        calibrate(model, torch.from_numpy(normalize(pixels, spec)))
    return model.eval(), shape, spec, pixels[:8]


@pytest.mark.parametrize("name", ["resnet8_ref", "mobilenet_v1_025_ref", "convs", "vgg_rgb", "gray_48x80",
                                  "post_add_bn"])
def test_shipped_nets_default_export_gives_the_legacy_canonical_graph(name, elpv_data, tmp_path):
    """ResNet-8 and MobileNet-V1 0.25 as the zoo ships them and the feature nets of test_features.py,
    exported with PyTorch's default call: the canonical graph is the `dynamo=False` one (the same
    nodes, names, attributes, opset; constants within float rounding), so convert builds the same
    design (bench/run.py reference_models and test_features.py convert and verify the legacy
    exports bit-exact), and ONNX Runtime computes what PyTorch computes on real cells."""
    from edgefpga.models.reference import MEAN, SCALE, STD

    model, shape, spec, pixels = shipped_net(name, elpv_data)
    norm = dict(scale=SCALE, mean=[MEAN] * shape[0], std=[STD] * shape[0])
    graphs = {}
    for way, how in {"legacy": LEGACY, "default": {}}.items():
        path = tmp_path / f"{way}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.zeros(1, *shape),), str(path), verbose=False, **how)
        checked, _ = check_onnx(path)
        graphs[way] = canonical_graph(checked, str(path), **norm)
    legacy, default = graphs["legacy"], graphs["default"]
    assert form(default) == form(legacy)
    ours, theirs = constants(default), constants(legacy)
    for key, value in theirs.items():
        np.testing.assert_allclose(ours[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    with torch.no_grad():
        # the canonical graph ends before a final Softmax / Sigmoid (the runtime applies it)
        expected = getattr(model, "logits", model)(torch.from_numpy(normalize(pixels, spec))).numpy()
    session = onnx_session(default.model)  # the canonical graph takes 8-bit pixels: it normalizes them itself
    scores = np.concatenate([session.run(None, {session.get_inputs()[0].name: p[None].astype(np.float32)})[0]
                             for p in pixels])
    np.testing.assert_allclose(scores, expected, atol=1e-3)
