"""Small CNNs in the shapes people put on FPGAs, defined in PyTorch and exported with PyTorch's own
``torch.onnx.export`` (opset 13): together they cover every feature of the capability table
(hw/capabilities.py). Weights are seeded random; BatchNorm statistics and the classifier bias
come from real images (ELPV cells, false colour for RGB nets) as for the reference shapes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgefpga.models.reference import calibrate


class Convs(nn.Module):
    """Gray 24x40: a 3x5 stride-(1,2) conv without bias (and no BatchNorm to fold one in), a 3x3
    stride-2 depthwise conv with ReLU6, a pointwise conv with a general Clip, a 3x2 max pool
    whose windows leave the last row unused, a global max pool and a dense layer without bias."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, (3, 5), (1, 2), (1, 2), bias=False)
        self.dw = nn.Conv2d(8, 8, 3, 2, 1, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.pool = nn.MaxPool2d((3, 2), 2)
        self.gmax = nn.AdaptiveMaxPool2d(1)
        self.classifier = nn.Linear(16, 4, bias=False)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = nn.functional.relu6(self.dw(x))
        x = torch.clamp(self.pw(x), -1.5, 2.0)
        return self.classifier(torch.flatten(self.gmax(self.pool(x)), 1))


def cbr(cin, cout, kernel=3, stride=1, padding=1):
    return [nn.Conv2d(cin, cout, kernel, stride, padding, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class VggRgb(nn.Module):
    """RGB 32x32, VGG style: padded 3x3 stride-2 max pools (overlapping windows) and a
    Dense -> ReLU -> Dense head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(*cbr(3, 16), nn.MaxPool2d(3, 2, 1), *cbr(16, 32), nn.MaxPool2d(3, 2, 1),
                                      *cbr(32, 32), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 5))
        self.classifier = self.head[3]

    def forward(self, x):
        return self.head(self.features(x))


class Gray48x80(nn.Module):
    """Gray 48x80: a 5x5 stride-2 stem, a 2x2 and a padded 3x3 stride-1 average pool, a 3x1 conv,
    LeakyReLU, ReLU6, a global average pool over a 12x20 map, and a final Softmax."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(*cbr(1, 8, 5, 2, 2), nn.AvgPool2d(2), *cbr(8, 16), nn.AvgPool2d(3, 1, 1),
                                      nn.Conv2d(16, 24, (3, 1), 1, (1, 0)), nn.LeakyReLU(0.1),
                                      nn.Conv2d(24, 24, 3, 1, 1), nn.ReLU6(), nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(24, 3)

    def logits(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))

    def forward(self, x):
        return torch.softmax(self.logits(x), 1)


class PostAddBn(nn.Module):
    """RGB 24x24: a residual block with an identity shortcut whose sum goes through a BatchNorm
    of its own (a standalone per-channel affine stage) and a LeakyReLU, then a ResNet-style
    downsampling block whose shortcut is a 1x1 stride-2 conv (MLPerf Tiny's ResNet-8 shape: both
    branches compute, and the FIFO sits on the one that runs ahead), a 2x2 average pool, and a
    Sigmoid at the output (independent per-class scores)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(*cbr(3, 12))
        self.body = nn.Sequential(*cbr(12, 12), nn.Conv2d(12, 12, 3, 1, 1, bias=False), nn.BatchNorm2d(12))
        self.post = nn.BatchNorm2d(12)
        self.down = nn.Sequential(*cbr(12, 16, 3, 2, 1), nn.Conv2d(16, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16))
        self.shortcut = nn.Conv2d(12, 16, 1, 2, 0)
        self.pool = nn.AvgPool2d(2)
        self.classifier = nn.Linear(16 * 6 * 6, 3)

    def logits(self, x):
        x = self.stem(x)
        x = nn.functional.leaky_relu(self.post(self.body(x) + x), 0.05)
        x = torch.relu(self.down(x) + self.shortcut(x))
        return self.classifier(torch.flatten(self.pool(x), 1))

    def forward(self, x):
        return torch.sigmoid(self.logits(x))


class TinyClip(nn.Module):
    """Gray 16x16, the smallest network with every kind of stage a build has (affine input
    normalization, conv, pool, dense, the AXI-Stream adapters): for tests about the generated
    design as a whole (Yosys). Its ReLU6 is a Clip, which hls4ml 1.3 cannot read, so converting
    it compiles no emulator (seconds, not minutes)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, 1, 1)
        self.pool = nn.MaxPool2d(4)
        self.classifier = nn.Linear(4 * 4 * 4, 2)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(nn.functional.relu6(self.conv(x))), 1))


class TinyRelu(TinyClip):
    """TinyClip with a plain ReLU, which hls4ml reads: the smallest build that compiles an
    emulator (for tests about a build folder's emulator rather than about a model)."""

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


FEATURE_NETS = {
    "convs": (Convs, (1, 24, 40)),
    "vgg_rgb": (VggRgb, (3, 32, 32)),
    "gray_48x80": (Gray48x80, (1, 48, 80)),
    "post_add_bn": (PostAddBn, (3, 24, 24)),
}


OTHER_NETS = {"tiny_clip": (TinyClip, (1, 16, 16)), "tiny_relu": (TinyRelu, (1, 16, 16))}


def export_feature_net(name: str, images: np.ndarray, path: Path, seed: int = 0) -> Path:
    """Build ``name`` (of FEATURE_NETS or OTHER_NETS), calibrate it on ``images`` ((N, C, H, W)
    normalized float32) and export it with torch.onnx.export (opset 13, BatchNorm left to the
    exporter)."""
    cls, shape = {**FEATURE_NETS, **OTHER_NETS}[name]
    torch.manual_seed(seed)
    model = cls()
    calibrate(model, torch.from_numpy(images))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, *shape), str(path), opset_version=13, dynamo=False,
                          input_names=["image"], output_names=["scores"])
    return path


FEATURE_NORM = dict(scale=1 / 255, mean=0.5, std=0.25)  # the feature nets' input normalization


def feature_cells(name: str, gray_cells: np.ndarray) -> np.ndarray:
    """ELPV cells as ``name`` takes them: gray, or false colour for an RGB net."""
    from foreign_cnn import false_color

    return gray_cells if FEATURE_NETS[name][1][0] == 1 else false_color(gray_cells)


def convert_feature_net(name: str, calib_cells: np.ndarray, folder: Path, **overrides) -> Path:
    """``name`` calibrated on ``calib_cells`` (gray ELPV cells, uint8), exported, and converted
    into ``folder/build`` (the calibration images in ``folder/calib.npz``): the test suite's and
    bench/estimates.py's one way to build a feature net. Returns the build folder."""
    from edgefpga.hw.convert import ConvertConfig, convert
    from edgefpga.models.card import InputSpec
    from edgefpga.models.preprocess import normalize, resize_batch

    shape = FEATURE_NETS[name][1]
    images = feature_cells(name, calib_cells)
    np.savez(folder / "calib.npz", images=images)
    spec = InputSpec(shape[0], shape[1], shape[2], "gray" if shape[0] == 1 else "bgr", "area", **FEATURE_NORM)
    path = export_feature_net(name, normalize(resize_batch(images, spec), spec), folder / f"{name}.onnx")
    cfg = ConvertConfig(calibration=str(folder / "calib.npz"), calibration_images=200, progress=False,
                        **{**FEATURE_NORM, **overrides})
    convert(str(path), folder / "build", cfg, log=lambda _m: None)
    return folder / "build"
