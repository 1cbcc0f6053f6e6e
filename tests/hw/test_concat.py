"""The channel join of two branches (issue 30, item 4): a SqueezeNet fire module's two expands
concatenated along the channels, built like a residual block (a fork, a FIFO on the branch that
runs ahead sized from both branches' latency, and the join: ``ef_concat``, each branch widened
exactly to one type, a's channels first).

``torch.onnx.export`` writes ``torch.cat(dim=1)`` as a Concat at opset 13 and 17 (TorchScript) and
with the default torch.export-based exporter (opset 20). One small net, trained briefly on 16x16
false-color ELPV cells (random nets leave near-tie logits), gives one canonical graph from all
three and an RTL bit-exact to the integer model. Concat has no hls4ml emulator here (qonnx's
channels-last conversion has none: the integer model stands in), so each conversion takes
seconds; the three builds have the same RTL, so Verilator builds it once."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from test_default_exporter import form
from test_habits import cells  # noqa: F401  (the module's fixture)
from three_ways import (REFERENCE, assert_one_design, assert_one_graph, canonical, convert_every_way, export,
                        export_every_way, float_scores, train_on)
from torch import nn

from edgefpga.hw.onnx_check import ConversionError, check_onnx

pytestmark = [pytest.mark.xdist_group("concat"), pytest.mark.timeout(300)]  # the trained net is made once


class FireNet(nn.Module):
    """stem conv -> a fire module (squeeze 1x1, expands 1x1 and 3x3 pad 1 concatenated, then
    ReLU) -> conv -> ReLU -> global average pool -> dense. The 3x3 expand has its own ReLU too, so
    the join meets a signed branch and an unsigned one (the output type gains a sign bit for the
    unsigned one), and the ReLU after it is a stage of its own (ef_act: a Concat casts nothing)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.squeeze = nn.Sequential(nn.Conv2d(8, 4, 1), nn.ReLU())
        self.expand1 = nn.Conv2d(4, 6, 1)
        self.expand3 = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Conv2d(12, 8, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = self.squeeze(self.stem(x / 255.0))
        x = self.head(torch.relu(torch.cat([self.expand1(x), self.expand3(x)], 1)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.fixture(scope="module")
def trained(cells):  # noqa: F811
    return train_on(FireNet, cells)


@pytest.fixture(scope="module")
def exports(trained, tmp_path_factory):
    return export_every_way(trained, tmp_path_factory.mktemp("concat"), "fire.onnx")


def test_exports_give_one_canonical_graph(trained, cells, exports):  # noqa: F811
    """Each export's Concat survives canonicalization; the three canonical graphs are one (opset
    13) and compute what PyTorch computes."""
    _, _, test, *_ = cells
    with torch.no_grad():
        expected = trained(torch.from_numpy(test.astype(np.float32))).numpy()
    graphs = {}
    for way, path in exports.items():
        assert "Concat" in [n.op_type for n in onnx.load(str(path)).graph.node], way
        graphs[way] = graph = canonical(path)
        np.testing.assert_allclose(float_scores(graph, test), expected, atol=1e-4, err_msg=way)
    reference = graphs["opset13"]
    ops = [n.op_type for n in reference.graph.node]
    assert ops.count("Concat") == 1 and ops.count("Conv") == 5 and ops[ops.index("Concat") + 1] == "Relu", ops
    assert form(reference)["opset"] == [("", 13)]
    assert_one_graph(graphs)
    assert (expected.argmax(1) == 1).mean() not in (0.0, 1.0)  # trained: not one class for every cell


def join_stages(build) -> dict[str, list[dict]]:
    manifest = json.loads((build / "rtl" / "manifest.json").read_text())
    modules = ("ef_concat", "ef_fork", "ef_fifo", "ef_act")
    return {m: [s for s in manifest["stages"] if s["module"] == m] for m in modules}


def test_fire_module_is_bit_exact(trained, cells, exports, tmp_path):  # noqa: F811
    """Each export converts to the same precisions, integer model and RTL (file for file), the
    integer model within the agreement bar of the float model; the fire module is one fork, one
    FIFO (on the 1x1 expand, which runs a row ahead of the 3x3 one) and one ef_concat whose
    output type holds both expands, then the ReLU; the RTL is bit-exact to the integer model on held-out cells."""
    from edgefpga.hw.precision import Precisions
    from edgefpga.sim.verify import verify

    for way, report in convert_every_way(exports, cells, tmp_path).items():
        assert report["hls"]["project"] is None, way  # no channels-last Concat: the integer model stands in
    reference = tmp_path / f"build_{REFERENCE}"
    joins = join_stages(reference)
    assert [len(joins[m]) for m in ("ef_concat", "ef_fork", "ef_fifo")] == [1, 1, 1], joins
    concat = joins["ef_concat"][0]["params"]
    assert (concat["C_A"], concat["C_B"], concat["ASIGNED"], concat["BSIGNED"]) == (6, 6, 1, 0)
    assert len(join_stages(reference)["ef_act"]) == 1  # the ReLU after the join
    assert joins["ef_fifo"][0]["params"]["DEPTH"] > 8  # a lead of at least one row beyond the slack
    p = Precisions.from_dict(json.loads((reference / "precisions.json").read_text()))
    node = next(n for n in canonical(exports[REFERENCE]).graph.node if n.op_type == "Concat")
    a, b, out = (p.tensors[t] for t in (*node.input, node.output[0]))
    for t in (a, b):  # every value of both branches is a value of the output type
        assert out.frac >= t.frac and out.low <= t.low and out.high >= t.high, (t, out)
    result = verify(reference, images=str(tmp_path / "test.npz"), sample=4, progress=False, agreement=0.9)
    assert result["rtl"]["bit_exact_frames"] == result["rtl"]["n"] == 4
    assert result["emulator"]["top1_agreement"] >= 0.9  # the integer model against the float one
    assert result["failed"] == []
    assert_one_design(cells, tmp_path)  # the other exports' verify would repeat the one above


class Joined(nn.Module):
    """Two or three 1x1 conv branches of the input concatenated along ``dim``."""

    def __init__(self, dim: int = 1, branches: int = 2):
        super().__init__()
        self.dim = dim
        self.branches = nn.ModuleList(nn.Conv2d(3, 4, 1) for _ in range(branches))
        self.fc = nn.Linear(4 * branches if dim == 1 else 4, 2)

    def forward(self, x):
        x = torch.cat([b(x) for b in self.branches], self.dim)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.mark.parametrize("dim, branches, needle", [(2, 2, "(Concat), axis: axis=2"), (3, 2, "(Concat), axis: axis=3"),
                                                   (1, 3, "(Concat), inputs: 3 inputs")])
def test_other_concats_are_refused(dim, branches, needle, tmp_path):
    """A Concat along the height or width, or of three branches, is refused in one line naming
    the file, the node, Concat and what is wrong; two branches on the channels are accepted."""
    check_onnx(export(Joined().eval(), tmp_path / "channels.onnx", nhwc=False, opset_version=13, dynamo=False))
    path = export(Joined(dim, branches).eval(), tmp_path / "other.onnx", nhwc=False, opset_version=13, dynamo=False)
    with pytest.raises(ConversionError) as refused:
        check_onnx(path)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{path}: node '"), message
    assert needle in message, message


def test_constant_branch_is_refused(tmp_path):
    """A Concat of a computed map and a constant block is refused by name (only two computed
    branches are joined)."""
    model = onnx.load(str(export(Joined().eval(), tmp_path / "joined.onnx", nhwc=False, opset_version=13,
                                 dynamo=False)))
    concat = next(n for n in model.graph.node if n.op_type == "Concat")
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros((1, 4, 16, 16), np.float32), "block"))
    concat.input[1] = "block"
    path = tmp_path / "constant.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ConversionError) as refused:
        check_onnx(path)
    message = str(refused.value)
    assert "\n" not in message, message
    assert f"node '{concat.name}' (Concat), inputs: a constant input ('block')" in message, message


class DenseBlock(nn.Module):
    """DenseNet's join: the block's input (signed: a conv without ReLU) next to what a 3x3 conv
    grows from it, then ReLU: one branch is the fork's stream itself."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.grow = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = self.stem(x / 255.0)
        x = torch.relu(torch.cat([x, self.grow(x)], 1))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_identity_branch_is_bit_exact(cells, tmp_path):  # noqa: F811
    """A join one of whose branches is the fork's stream itself gets its FIFO on that branch (the
    3x3 conv's lead of a row and a pixel) and stays bit-exact."""
    from edgefpga.hw.convert import ConvertConfig, convert
    from edgefpga.sim.verify import verify

    *_, calib_raw, test_raw = cells
    net = train_on(DenseBlock, cells)
    np.savez(tmp_path / "calib.npz", images=calib_raw)
    np.savez(tmp_path / "test.npz", images=test_raw)
    path = export(net, tmp_path / "dense.onnx", nhwc=False, opset_version=13, dynamo=False)
    build = tmp_path / "build"
    convert(str(path), build, ConvertConfig(calibration=str(tmp_path / "calib.npz"), calibration_images=64,
                                            emulator_images=8, progress=False, agreement=0.9), log=lambda _m: None)
    joins = join_stages(build)
    concat, fifo = joins["ef_concat"][0], joins["ef_fifo"][0]
    assert fifo["name"] == f"fifo_{concat['name']}" and fifo["params"]["DEPTH"] == 9 + 8, fifo
    assert concat["params"]["ASIGNED"] == 1 and concat["params"]["BSIGNED"] == 0
    result = verify(build, images=str(tmp_path / "test.npz"), sample=4, progress=False, agreement=0.9)
    assert result["rtl"]["bit_exact_frames"] == result["rtl"]["n"] == 4 and result["failed"] == []
