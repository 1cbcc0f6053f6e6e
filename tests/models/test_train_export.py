"""Training learns on real ELPV images; export matches PyTorch under ONNX Runtime."""

import numpy as np
import onnx
import pytest
import torch

from edgefpga.models.arch import ArchConfig, ArchitectureError, build, count_cost
from edgefpga.models.augment import AugmentConfig
from edgefpga.models.export import export_onnx, fold_batchnorm, load_folded, max_abs_difference
from edgefpga.models.train import TrainConfig, train

HLS_STREAM_OPS = {"Conv", "Relu", "MaxPool", "AveragePool", "Flatten", "Gemm"}


@pytest.mark.slow
def test_short_training_really_learns():
    arch = ArchConfig(size=48, widths=(8, 16, 16, 32))
    result = train(arch, TrainConfig(epochs=8, limit=384, lr=5e-3, threads=2), AugmentConfig(), progress=False)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.85 * losses[0], losses
    assert result.val_metrics["n"] > 250


def _model_with_trained_looking_batchnorm() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build(ArchConfig(size=32, widths=(4, 8, 8, 16)))
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-1, 1)
            mod.running_var.uniform_(0.5, 2)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


def test_batchnorm_folding_keeps_outputs():
    model = _model_with_trained_looking_batchnorm()
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fold_batchnorm(model)(x), model(x), atol=1e-5, rtol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fold_batchnorm(model).modules())


def test_onnx_export_matches_pytorch_under_onnxruntime(tmp_path):
    model = _model_with_trained_looking_batchnorm()
    path = export_onnx(model, (1, 32, 32), tmp_path / "model.onnx")
    graph = onnx.load(str(path))
    assert graph.opset_import[0].version == 13
    assert {n.op_type for n in graph.graph.node} <= HLS_STREAM_OPS
    dims = [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 1, 32, 32]
    x = np.random.default_rng(0).normal(size=(8, 1, 32, 32)).astype(np.float32)
    assert max_abs_difference(model, path, x) < 1e-5


def test_folded_model_reloads_from_onnx(tmp_path):
    model = _model_with_trained_looking_batchnorm()
    path = export_onnx(model, (1, 32, 32), tmp_path / "model.onnx")
    fresh = build(ArchConfig(size=32, widths=(4, 8, 8, 16)))
    reloaded = load_folded(path, fresh)
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model(x), atol=1e-5, rtol=1e-5)


def test_default_architecture_fits_the_fpga_budget():
    cost = count_cost(build(ArchConfig()), (1, 96, 96))
    assert cost.params <= 100_000 and cost.macs <= 10_000_000


def test_oversized_architecture_is_refused():
    with pytest.raises(ArchitectureError, match="MACs"):
        build(ArchConfig(size=128, widths=(32, 64, 64, 64, 64)))


def test_unknown_head_is_refused():
    with pytest.raises(ArchitectureError, match="head"):
        build(ArchConfig(head="sum"))


def test_stem_stride_halves_the_first_layer_resolution():
    cost = count_cost(build(ArchConfig(size=192, stem_stride=2)), (1, 192, 192))
    assert cost.layers[0]["out"] == [8, 96, 96]
    assert cost.macs == count_cost(build(ArchConfig(size=96)), (1, 96, 96)).macs
