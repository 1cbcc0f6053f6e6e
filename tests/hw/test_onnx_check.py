"""The ONNX check refuses what the FPGA flow cannot stream, naming the file, node and op."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgefpga.hw.onnx_check import ConversionError, check_onnx


def conv_net(path, opset=13, in_shape=(1, 1, 8, 8), extra_nodes=(), extra_inputs=()):
    """Conv -> (Add bias) -> Relu -> Flatten -> MatMul -> Add: the older-exporter style."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(2, in_shape[1], 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(size=(1, 2, 1, 1)).astype(np.float32), "b")
    h, wd = in_shape[2] if isinstance(in_shape[2], int) else 8, in_shape[3] if isinstance(in_shape[3], int) else 8
    fc = numpy_helper.from_array(rng.normal(size=(2 * (h - 2) * (wd - 2), 3)).astype(np.float32), "fc")
    fb = numpy_helper.from_array(np.zeros(3, np.float32), "fb")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv1"),
        helper.make_node("Add", ["c", "b"], ["cb"], name="bias1"),
        helper.make_node("Relu", ["cb"], ["r"], name="relu1"),
        helper.make_node("Flatten", ["r"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "fc"], ["m"], name="dense"),
        helper.make_node("Add", ["m", "fb"], ["y0"], name="dense_bias"),
        *extra_nodes,
    ]
    out = nodes[-1].output[0]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape)), *extra_inputs],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 3])],
        [w, b, fc, fb])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


def test_shipped_model_passes(zoo_model):
    _, shape = check_onnx(zoo_model / "model.onnx")
    assert shape == [1, 1, 96, 96]


def test_old_opset_with_separate_bias_and_matmul_passes(tmp_path):
    _, shape = check_onnx(conv_net(tmp_path / "m.onnx", opset=8))
    assert shape == [1, 1, 8, 8]


def test_symbolic_batch_counts_as_one(tmp_path):
    _, shape = check_onnx(conv_net(tmp_path / "m.onnx", in_shape=("N", 1, 8, 8)))
    assert shape == [1, 1, 8, 8]


def test_dynamic_spatial_shape_is_refused(tmp_path):
    with pytest.raises(ConversionError, match=r"m.onnx: input 'x' has a dynamic shape \(H, W not fixed\)"):
        check_onnx(conv_net(tmp_path / "m.onnx", in_shape=(1, 1, "H", "W")))


def test_unsupported_operator_names_node_and_op(tmp_path):
    extra = [helper.make_node("Elu", ["y0"], ["y"], name="odd_activation")]
    with pytest.raises(ConversionError, match=r"m.onnx: node 'odd_activation' \(Elu\), op: operator not built"):
        check_onnx(conv_net(tmp_path / "m.onnx", extra_nodes=extra))


def test_an_attribute_outside_the_table_is_named(tmp_path):
    extra = [helper.make_node("LeakyRelu", ["y0"], ["y"], name="steep", alpha=1.5)]
    with pytest.raises(ConversionError, match=r"node 'steep' \(LeakyRelu\), alpha: 1.5"):
        check_onnx(conv_net(tmp_path / "m.onnx", extra_nodes=extra))


def test_second_input_is_refused(tmp_path):
    extra_in = [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 3])]
    extra = [helper.make_node("Add", ["y0", "z"], ["y"], name="mix")]
    with pytest.raises(ConversionError, match=r"2 inputs \('x', 'z'\)"):
        check_onnx(conv_net(tmp_path / "m.onnx", extra_nodes=extra, extra_inputs=extra_in))


def test_too_old_opset_is_refused(tmp_path):
    with pytest.raises(ConversionError, match="opset 7 is too old"):
        check_onnx(conv_net(tmp_path / "m.onnx", opset=7))


@pytest.mark.parametrize("content", [b"", b"\x08\x01garbage\xff\xff", b"not onnx at all" * 20])
def test_corrupt_file_is_refused(tmp_path, content):
    path = tmp_path / "broken.onnx"
    path.write_bytes(content)
    with pytest.raises(ConversionError, match="broken.onnx: not a valid ONNX model"):
        check_onnx(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConversionError, match="no such ONNX file"):
        check_onnx(tmp_path / "nope.onnx")
