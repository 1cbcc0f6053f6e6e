"""Graph canonicalization: models written the way other exporters write them come out in the one
form the flow handles, computing the same function (checked with ONNX Runtime)."""

import numpy as np
import onnx
import pytest
from foreign_cnn import SIZE, build_foreign_cnn
from test_onnx_check import conv_net

from edgefpga.hw.graph import OUTPUT_ACTIVATION, canonical_graph, channels_last
from edgefpga.hw.precision import run_logits
from edgefpga.hw.profile import with_outputs
from edgefpga.hw.convert import run_source, softmax


def ops(model):
    return [n.op_type for n in model.graph.node]


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    path = build_foreign_cnn(tmp_path_factory.mktemp("g") / "foreign.onnx")
    return onnx.load(str(path))


def test_foreign_graph_is_canonicalized(foreign):
    canon = canonical_graph(foreign, "foreign.onnx", 1 / 255, [0.5] * 3, [0.25] * 3)
    assert ops(canon) == ["BatchNormalization", "Conv", "Relu", "AveragePool", "Conv", "Relu", "Conv", "Relu",
                          "AveragePool", "Flatten", "MatMul", "Add"]
    assert canon.graph.node[0].name == "BatchNormalization_0"  # the card's normalization, in front
    assert canon.get_metadata_prop(OUTPUT_ACTIVATION) == "softmax"
    assert next(o.version for o in canon.model.opset_import if o.domain == "") == 13


def test_canonical_graph_computes_the_source_function(foreign):
    pixels = np.random.default_rng(1).integers(0, 256, (8, 3, SIZE, SIZE)).astype(np.float32)
    canon = canonical_graph(foreign, "foreign.onnx", 1 / 255, [0.5] * 3, [0.25] * 3)
    ours = softmax(run_logits(with_outputs(canon, []), pixels))
    theirs = run_source(foreign, (pixels / 255 - 0.5) / 0.25)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_opset8_flatten_over_space_and_split_biases(tmp_path):
    model = onnx.load(str(conv_net(tmp_path / "old.onnx", opset=8)))
    canon = canonical_graph(model, "old.onnx")
    assert ops(canon) == ["Conv", "Relu", "Flatten", "MatMul", "Add"]  # identity normalization: no BN
    pixels = np.random.default_rng(2).integers(0, 256, (4, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(run_logits(with_outputs(canon, []), pixels), run_source(model, pixels), rtol=1e-5)
    cl = channels_last(canon)
    assert "Transpose" not in ops(cl)
    assert cl.get_tensor_shape(cl.graph.input[0].name) == [1, 8, 8, 1]


def test_channels_last_keeps_names_and_drops_every_transpose(foreign):
    canon = canonical_graph(foreign, "foreign.onnx", 1 / 255, [0.5] * 3, [0.25] * 3)
    cl = channels_last(canon)
    assert "Transpose" not in ops(cl)
    assert [n.name for n in cl.graph.node] == [n.name for n in canon.graph.node]
    assert cl.get_tensor_shape(cl.graph.input[0].name) == [1, SIZE, SIZE, 3]  # pixels with channels interleaved
    assert all(n.domain == "qonnx.custom_op.channels_last" for n in cl.graph.node if n.op_type == "AveragePool")
