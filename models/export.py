"""Export a trained model to the plain ONNX graph that the hardware flow converts.

BatchNorm is folded into the convolution before export, so the graph holds only Conv, Relu,
MaxPool, AveragePool, Flatten and Gemm: the operators hls4ml streams. Batch size is fixed at one
(the card's ``[1, C, H, W]``) because the accelerator sees one frame at a time and hls4ml needs
static shapes.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

OPSET = 13
INPUT_NAME = "input"
OUTPUT_NAME = "scores"


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every Conv2d+BatchNorm2d pair fused into one Conv2d."""
    model = copy.deepcopy(model).eval()
    for parent in model.modules():
        children = list(parent.named_children())
        for (name, conv), (bn_name, bn) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(parent, name, fuse_conv_bn_eval(conv, bn))
                setattr(parent, bn_name, nn.Identity())
    return model


def export_onnx(model: nn.Module, input_shape: tuple[int, int, int], path: Path, batch_axis: bool = False) -> Path:
    """Write ``model`` (BatchNorm folded) as float ONNX, opset 13, NCHW, batch 1, and check it.
    ``batch_axis``: a symbolic batch dimension instead, for a server that batches requests (the
    cloud model; hls4ml needs the static batch of one)."""
    folded = fold_batchnorm(model)
    dummy = torch.zeros(1, *input_shape)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated, but it writes the plain Conv/Gemm graph that
        # qonnx and hls4ml convert; the dynamo exporter's graph needs more cleanup.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(folded, (dummy,), str(path), opset_version=OPSET, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamo=False, do_constant_folding=True,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if batch_axis else None)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return path


def load_folded(onnx_path: Path, model: nn.Module) -> nn.Module:
    """Rebuild the exported (BatchNorm-folded) PyTorch model from ``onnx_path``, given a model of
    the same architecture: lets a later step work from the model folder alone."""
    folded = fold_batchnorm(model)
    weights = {i.name: torch.from_numpy(onnx.numpy_helper.to_array(i).copy())
               for i in onnx.load(str(onnx_path)).graph.initializer}
    state = folded.state_dict()
    missing = sorted(set(state) - set(weights))
    if missing:
        raise ValueError(f"{onnx_path}: no initializers for {missing}; was it exported from this architecture?")
    folded.load_state_dict({name: weights[name] for name in state})
    return folded.eval()


def max_abs_difference(model: nn.Module, onnx_path: Path, inputs: np.ndarray) -> float:
    """Largest |PyTorch - ONNX Runtime| output difference over ``inputs`` (N, C, H, W) float32."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    model.eval()
    worst = 0.0
    with torch.no_grad():
        for x in inputs:
            ref = model(torch.from_numpy(x[None])).numpy()
            got = session.run(None, {INPUT_NAME: x[None]})[0]
            worst = max(worst, float(np.abs(ref - got).max()))
    return worst
