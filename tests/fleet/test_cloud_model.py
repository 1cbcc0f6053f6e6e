"""The cloud model goes through the edge model's pipeline (fleet/cloud_model.py, models/zoo_build.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")


@pytest.mark.slow  # a real (tiny) training run on ELPV
@pytest.mark.timeout(600)
def test_cloud_train_writes_a_servable_model_folder(tmp_path, capsys):
    from edgefpga.cli import main
    from edgefpga.fleet.cloud import CloudModel

    out = tmp_path / "cloud"
    assert main(["cloud", "train", "--out", str(out), "--epochs", "1", "--limit", "64", "--size", "32",
                 "--threads", "1"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["metrics"]["test"]["n"] == 654 and card["input"]["shape"] == [1, 1, 32, 32]
    assert card["architecture"]["kind"] == "cloud_efficientnet-lite0" and card["onnx"]["batch"] == "symbolic"
    assert "fixed_point_check" in card["metrics"] and card["metrics"]["fixed_point_check"] == []  # no FPGA step
    model = CloudModel(out, threads=1)
    rng = np.random.default_rng(0)
    probs = model.probabilities([rng.integers(0, 256, (300, 300), dtype=np.uint8) for _ in range(5)])
    assert probs.shape == (5, 2) and np.allclose(probs.sum(1), 1)  # one batched call


@pytest.mark.timeout(120)
def test_pretrained_backbone_sees_a_gray_image_as_the_imagenet_net_sees_its_rgb_copy(tmp_path):
    """The gray stem (the RGB weights summed) must give the pretrained features of the image copied
    into three channels, and the exported ONNX (BatchNorm folded, batch axis) must match PyTorch."""
    pytest.importorskip("efficientnet_lite_pytorch")
    import onnxruntime as ort
    import torch

    from edgefpga.fleet.cloud_model import CloudArchConfig, pretrained_lite0
    from edgefpga.models.export import export_onnx

    torch.manual_seed(0)
    net = CloudArchConfig(size=64, backbone="efficientnet-lite0").build_model().eval()
    imagenet = pretrained_lite0().eval()
    gray = torch.rand(2, 1, 64, 64) * 4 - 2
    with torch.no_grad():
        ours = net.backbone.extract_features(gray)
        theirs = imagenet.extract_features(gray.repeat(1, 3, 1, 1))
        expected = net(gray).numpy()
    assert torch.allclose(ours, theirs, atol=1e-4), float((ours - theirs).abs().max())
    assert sum(p.numel() for p in net.parameters()) < 3.5e6  # ImageNet's 1,000-class head is gone

    path = export_onnx(net, (1, 64, 64), tmp_path / "model.onnx", batch_axis=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: gray.numpy()})[0]
    assert np.allclose(got, expected, atol=1e-3), np.abs(got - expected).max()


def test_unknown_backbone_is_refused():
    from edgefpga.fleet.cloud_model import CloudArchConfig

    with pytest.raises(ValueError, match="backbone 'vgg'"):
        CloudArchConfig(backbone="vgg")
