"""A second CNN, shaped unlike ours and written the way other exporters write graphs, for the
conversion tests: 3-channel (BGR) 40x40 input, opset 11, a Conv without bias followed by a
separate bias Add, an unfused BatchNormalization, 5x5 / 1x1 / 3x3 kernels, average pooling, a
global average pool, Reshape instead of Flatten, MatMul + Add instead of Gemm and a final
Softmax. The weights are random (seeded) but scaled like a trained net's, so the three classes
all occur; images are real ELPV cells in false color (cv2.applyColorMap)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIZE = 40
CLASSES = ["ok", "scratch", "stain"]


def he(rng: np.random.Generator, *shape: int) -> np.ndarray:
    fan_in = int(np.prod(shape[1:]))
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def build_foreign_cnn(path: Path, seed: int = 7) -> Path:
    rng = np.random.default_rng(seed)
    inits = {
        "w1": he(rng, 8, 3, 5, 5), "b1": (0.1 * rng.standard_normal((1, 8, 1, 1))).astype(np.float32),
        "bn_g": rng.uniform(0.5, 1.5, 8).astype(np.float32), "bn_b": rng.uniform(-0.2, 0.2, 8).astype(np.float32),
        "bn_m": rng.uniform(-0.5, 0.5, 8).astype(np.float32), "bn_v": rng.uniform(0.5, 2.0, 8).astype(np.float32),
        "w2": he(rng, 16, 8, 1, 1), "b2": (0.1 * rng.standard_normal(16)).astype(np.float32),
        "w3": he(rng, 24, 16, 3, 3), "b3": (0.1 * rng.standard_normal(24)).astype(np.float32),
        "shape": np.array([1, -1], np.int64),
        "fc_w": (2.0 * he(rng, 24, 3)).astype(np.float32), "fc_b": np.array([0.8, 5.0, -0.45], np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["image", "w1"], ["c1"], kernel_shape=[5, 5], pads=[2, 2, 2, 2], name="conv5x5"),
        helper.make_node("Add", ["c1", "b1"], ["c1b"], name="conv5x5_bias"),
        helper.make_node("BatchNormalization", ["c1b", "bn_g", "bn_b", "bn_m", "bn_v"], ["n1"], epsilon=1e-5,
                         name="bn"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("AveragePool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="avgpool"),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], kernel_shape=[1, 1], name="conv1x1"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2],
                         name="conv3x3s2"),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        helper.make_node("GlobalAveragePool", ["r3"], ["g"], name="gap"),
        helper.make_node("Reshape", ["g", "shape"], ["flat"], name="reshape"),
        helper.make_node("MatMul", ["flat", "fc_w"], ["mm"], name="fc"),
        helper.make_node("Add", ["mm", "fc_b"], ["logits"], name="fc_bias"),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax"),
    ]
    graph = helper.make_graph(
        nodes, "foreign_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], producer_name="hand-written")
    model.ir_version = 6
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def false_color(gray_cells: np.ndarray) -> np.ndarray:
    """ELPV cells (N, H, W) uint8 as BGR images (N, H, W, 3)."""
    return np.stack([cv2.applyColorMap(cell, cv2.COLORMAP_VIRIDIS) for cell in gray_cells])
