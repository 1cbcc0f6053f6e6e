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
        # The TorchScript exporter (deprecated): convert builds the same design from PyTorch's default
        # (torch.export) exporter, but this file is also what the runtime's onnx backend opens on a
        # board, where onnxruntime < 1.18 refuses the default's IR 10 (docs/convert.md).
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


def load_unfolded(onnx_path: Path, model: nn.Module, inputs: np.ndarray) -> dict:
    """A state dict of ``model``'s own (unfolded) architecture that computes what the exported,
    BatchNorm-folded ``onnx_path`` computes: the way to fine-tune a model of which only the
    model folder is left (``edgefpga retrain``).

    Each folded conv ``W'x + b'`` becomes the conv ``W'`` followed by a BatchNorm whose running
    statistics are the per-channel mean ``m`` and spread ``s`` of ``W'x`` on ``inputs``
    (normalized images, N x C x H x W), with scale ``s`` and shift ``m + b'``: in eval mode that
    is exactly ``W'x + b'``; in training mode, where BatchNorm uses the batch's own statistics,
    it is ``W'x + b'`` up to how far a batch strays from ``inputs``, so fine-tuning starts where
    the model is instead of from a re-normalized net."""
    folded = load_folded(onnx_path, model)
    stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = []
    named = dict(folded.named_modules())
    pairs = bn_pairs(model)
    for conv_name, _bn_name in pairs:
        def hook(_mod, _inp, out, name=conv_name):
            raw = out - named[name].bias[None, :, None, None]  # W'x, the conv without its folded bias
            stats[name] = (raw.mean(dim=(0, 2, 3)), raw.var(dim=(0, 2, 3), unbiased=False))
        hooks.append(named[conv_name].register_forward_hook(hook))
    with torch.no_grad():
        folded(torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32)))
    for h in hooks:
        h.remove()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    folded_state = folded.state_dict()
    for key, value in folded_state.items():  # every layer but the BatchNorms, as exported
        if key in state and state[key].shape == value.shape:
            state[key] = value.clone()
    modules = dict(model.named_modules())
    for conv_name, bn_name in pairs:
        bn = modules[bn_name]
        mean, var = stats[conv_name]
        var = var.clamp_min(bn.eps * 2)
        state[f"{conv_name}.weight"] = folded_state[f"{conv_name}.weight"].clone()
        state[f"{bn_name}.running_mean"] = mean
        state[f"{bn_name}.running_var"] = var - bn.eps
        state[f"{bn_name}.weight"] = var.sqrt()
        state[f"{bn_name}.bias"] = mean + folded_state[f"{conv_name}.bias"]
    return state


def bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv, batchnorm) module names of every Conv2d directly followed by a BatchNorm2d: the
    pairs ``fold_batchnorm`` fuses."""
    pairs = []
    for parent_name, parent in model.named_modules():
        children = list(parent.named_children())
        for (name, conv), (bn_name, bn) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                prefix = f"{parent_name}." if parent_name else ""
                pairs.append((prefix + name, prefix + bn_name))
    return pairs


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
