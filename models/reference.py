"""Reference shapes: the small CNNs MLPerf Tiny standardizes, defined in PyTorch and exported with
``torch.onnx.export``, so that anyone can run them down the whole road (``edgefpga convert
resnet8_ref``) and compare with hls4ml's and FINN's published results on the same shapes.

- ``resnet8_ref``: MLPerf Tiny image classification (ResNet-8 for CIFAR-10): 3x32x32, a
  Conv-BN-ReLU stem and three residual stacks of 16, 32 and 64 channels (1x1 stride-2 projection
  shortcuts), an 8x8 average pool and a dense layer; 77k parameters, 12.5M MACs. Its dense layer
  is 2-way (ELPV's classes), where CIFAR-10's is 10-way: 512 MACs and 520 parameters fewer.
- ``mobilenet_v1_025_ref``: MLPerf Tiny visual wake words (person detection): MobileNet-V1 with
  width 0.25 at 3x96x96, thirteen depthwise-separable blocks, a global average pool and a 2-way
  dense layer; 208k parameters, 7.5M MACs.
- ``dense_head_ref``: not an MLPerf shape but the other common one on inspection lines, a small
  conv trunk (3x32x32, two Conv-BN-ReLU + max-pool blocks to 16x8x8) with a dense head of
  1,024 -> 128 -> 64 -> 2; 141k parameters, 0.66M MACs, a fifth of them the first dense layer's.

No CIFAR-10 or COCO can be installed here, so these are *shapes*, not the MLPerf models. What they
test is what matters for the hardware: the layer shapes, realistic value ranges, and bit-exactness.

- All three are trained briefly (a fixed recipe, ``TRAINING``) on ELPV's binary labels, the two
  classes standing for functional/defective. Random weights left MobileNet's two logits near a tie
  on many cells, so the widths the precision search needed swung with the float arithmetic's last
  bits between machines, and with them whether the design fits a PYNQ-Z2; trained logits are apart
  on all but the cells the experts themselves doubt. ResNet-8 kept random weights (and ten classes)
  until issue 29: its near-tie logits needed 9-12-bit operands everywhere to keep 98 % agreement
  (a random net's agreement at 8 bits: 90 %), where a trained net's widths are what its weights
  need. A reference not marked ``trained`` gets random weights (seeded) with BatchNorm statistics
  from real cells (``calibrate``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .arch import count_cost
from .card import REFERENCE_SHAPE, write_card
from .export import export_onnx

CALIBRATION = "elpv:train"  # the images convert calibrates on ...
VERIFICATION = "elpv:test"  # ... and the held-out ones verify checks on


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)


class ResidualStack(nn.Module):
    """Two 3x3 Conv-BN layers and a shortcut (identity, or a 1x1 strided conv when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, cout, stride=stride), conv_bn(cout, cout, relu=False))
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Conv2d(cin, cout, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet8(nn.Module):
    """MLPerf Tiny's ResNet-8 (its Keras reference model, layer for layer)."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.stacks = nn.Sequential(ResidualStack(16, 16, 1), ResidualStack(16, 32, 2), ResidualStack(32, 64, 2))
        self.pool = nn.AvgPool2d(8)
        self.classifier = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.stacks(self.stem(x))), 1))


class MobileNetV1(nn.Module):
    """MobileNet-V1 (Howard et al. 2017) at width ``alpha``, as in MLPerf Tiny's visual wake words."""

    BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]

    def __init__(self, alpha: float = 0.25, classes: int = 2):
        super().__init__()
        width = int(32 * alpha)
        layers: list[nn.Module] = [conv_bn(3, width, stride=2)]
        for channels, stride in self.BLOCKS:
            out = int(channels * alpha)
            layers += [conv_bn(width, width, stride=stride, groups=width), conv_bn(width, out, kernel=1)]
            width = out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class DenseHead(nn.Module):
    """A conv trunk with a 1,024-wide dense head: two Conv-BN-ReLU + 2x2 max-pool blocks (8 and 16
    channels) to 16x8x8, then 1,024 -> 128 -> 64 -> classes with ReLUs. A fifth of its MACs are
    the first dense layer's, read from a stream of 64 pixels: the shape that showed a dense layer
    planned far faster than the network (issue 29)."""

    def __init__(self, classes: int = 2):
        super().__init__()
        self.trunk = nn.Sequential(*conv_bn(3, 8), nn.MaxPool2d(2), *conv_bn(8, 16), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Linear(16 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU())
        self.classifier = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(torch.flatten(self.trunk(x), 1)))


class ResNet18(nn.Module):
    """ResNet-18 at 224x224 in torchvision's layout (7x7/2 stem, 3x3/2 max-pool, four stages of two
    basic blocks, 64-512 channels, 7x7 average pool, 1000 classes): 11.7 M parameters, about
    93 Mbit of weights at 8 bits. Not a zoo model: the network every small-FPGA flow is asked
    about first, and the one ``convert --board pynq-z2`` must refuse (bench/fit.py)."""

    def __init__(self, classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        stages, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages += [ResidualStack(cin, cout, stride), ResidualStack(cout, cout, 1)]
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AvgPool2d(7)
        self.classifier = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


@dataclass(frozen=True)
class Reference:
    name: str
    build: Callable[[], nn.Module]
    shape: tuple[int, int, int]
    classes: list[str]
    mlperf: str
    trained: bool = False  # trained on ELPV's binary labels (``train_on_elpv``) instead of random weights


@dataclass(frozen=True)
class Training:
    """The fixed recipe of ``train_on_elpv``, chosen before any result was seen: no model
    selection, the test cells are scored once, after the last epoch."""

    subset: str = "train"  # all 1,970 contract training cells (the convert calibration images)
    epochs: int = 12
    batch: int = 64
    lr: float = 3e-3  # AdamW, cosine to zero over all steps
    weight_decay: float = 1e-4
    seed: int = 0


TRAINING = Training()


REFERENCES = {r.name: r for r in (
    Reference("resnet8_ref", lambda: ResNet8(classes=2), (3, 32, 32), ["functional", "defective"],
              "MLPerf Tiny image classification (ResNet-8, CIFAR-10 shape; a 2-way dense layer)", trained=True),
    Reference("mobilenet_v1_025_ref", MobileNetV1, (3, 96, 96), ["functional", "defective"],
              "MLPerf Tiny visual wake words (MobileNet-V1 0.25, 96x96)", trained=True),
    Reference("dense_head_ref", DenseHead, (3, 32, 32), ["functional", "defective"],
              "not an MLPerf Tiny shape: a conv trunk with a 1,024-wide dense head (16x8x8 -> 128 -> 64)",
              trained=True),
)}

SCALE, MEAN, STD = 1 / 255, 0.5, 0.25  # the card's normalization: x = (pixel/255 - 0.5) / 0.25


def elpv_cells(shape: tuple[int, int, int], subset: str, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """ELPV cells of a contract subset as the network sees them (resized, BGR, normalized) and their
    binary labels: all of them, or ``n`` chosen at random (seeded)."""
    from . import elpv
    from .card import InputSpec
    from .preprocess import normalize, resize_batch

    spec = InputSpec(shape[0], shape[1], shape[2], "bgr", "area", SCALE, MEAN, STD)
    data = elpv.load()
    chosen = elpv.subset(subset, data)
    if n is not None:
        chosen = np.sort(np.random.default_rng(3).choice(chosen, n, replace=False))
    images = torch.from_numpy(normalize(resize_batch(data.images[chosen], spec), spec))
    return images, torch.from_numpy(data.labels[chosen].astype(np.int64))


def real_images(shape: tuple[int, int, int], n: int) -> torch.Tensor:
    """``n`` ELPV training cells as the network sees them (resized, BGR, normalized)."""
    return elpv_cells(shape, "train", n)[0]


def train_on_elpv(model: nn.Module, shape: tuple[int, int, int], recipe: Training = TRAINING) -> None:
    """A brief training on ELPV's binary labels (``recipe``), with random flips (a solar cell looks
    the same mirrored): enough for logits that are apart, not a tuned model."""
    from tqdm import tqdm

    images, labels = elpv_cells(shape, recipe.subset)
    gen = torch.Generator().manual_seed(recipe.seed)
    steps = recipe.epochs * -(-len(images) // recipe.batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    model.train()
    for _ in tqdm(range(recipe.epochs), desc="train on ELPV", unit="epoch"):
        for batch in torch.randperm(len(images), generator=gen).split(recipe.batch):
            x = images[batch]
            flips = [d for d in (2, 3) if torch.rand(1, generator=gen) < 0.5]
            x = x.flip(flips) if flips else x
            loss = nn.functional.cross_entropy(model(x), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()


@torch.no_grad()
def calibrate(model: nn.Module, images: torch.Tensor, batch: int = 64) -> None:
    """BatchNorm statistics from ``images`` (a cumulative average over all of them), then the
    classifier (``model.classifier``, whose outputs ``model.logits`` returns when the model
    applies an activation after it) scaled and its bias centred so that every class wins on some
    images."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    for start in range(0, len(images), batch):
        model(images[start:start + batch])
    model.eval()
    forward = getattr(model, "logits", model)
    logits = torch.cat([forward(images[s:s + batch]) for s in range(0, len(images), batch)])
    spread = logits.std(0).mean().clamp(min=1e-6)
    model.classifier.weight.mul_(2.0 / spread)
    if model.classifier.bias is not None:
        model.classifier.bias.mul_(0.0)
        logits = torch.cat([forward(images[s:s + batch]) for s in range(0, len(images), batch)])
        model.classifier.bias.sub_(logits.mean(0))


def build_reference(name: str, out: Path, n_images: int = 512, seed: int = 0) -> dict:
    """Write ``out/model.onnx`` and ``out/card.json`` for the reference shape ``name``."""
    ref = REFERENCES[name]
    torch.manual_seed(seed)
    model = ref.build()
    images = real_images(ref.shape, n_images)
    if ref.trained:
        train_on_elpv(model, ref.shape)
    else:
        calibrate(model, images)
    out = Path(out)
    export_onnx(model, ref.shape, out / "model.onnx")
    with torch.no_grad():
        winners = np.bincount(model(images).argmax(1).numpy(), minlength=len(ref.classes))
    cost = count_cost(model, ref.shape)
    card = {
        "name": name, "purpose": REFERENCE_SHAPE, "classes": ref.classes,
        "input": {"shape": [1, *ref.shape], "color": "bgr", "resize": "area", "scale": SCALE, "mean": MEAN, "std": STD},
        "dataset": dataset_block(ref, seed, n_images),
        "calibration": CALIBRATION, "verification": VERIFICATION,
        "convert": {"agreement": 0.98, "why": "a reference shape's weights are random or briefly trained, which leaves "
                    "some images near a tie; bit-exactness, not the precision bar, is what a reference shape tests"},
        "metrics": {"test": None, "winners_on_calibration_images": winners.tolist()},
        "params": cost.params, "macs": cost.macs, "reference": ref.mlperf,
        "license": "Apache-2.0 (architecture and weights); BatchNorm statistics from CC BY-NC-SA 4.0 data"
                   if not ref.trained else "weights trained on CC BY-NC-SA 4.0 data (ELPV): non-commercial use, share alike",
        "built_by": f"python -m edgefpga.models.reference {name}",
    }
    write_card(out, card)
    if ref.trained:  # scored once, on the 654 contract test cells, after the last epoch
        from .evaluate import evaluate

        card["metrics"]["test"] = evaluate(out, "test")
        write_card(out, card)
    return card


def dataset_block(ref: Reference, seed: int, n_images: int) -> dict:
    """The card's ``dataset``: ELPV with the recipe for a trained shape (so ``edgefpga evaluate``
    rebuilds its data), "none" for a random one."""
    if ref.trained:
        from . import elpv

        return {"name": "ELPV", "source": elpv.SOURCE, "license": elpv.LICENSE,
                "note": f"a reference shape trained briefly on ELPV's binary labels (seed {seed}), not a tuned model",
                "label": "defective when the expert defect probability is >= 0.5",
                "training": asdict(TRAINING)}
    return {"name": "none", "note": "a reference shape: random weights (seed %d), BatchNorm statistics from %d ELPV "
            "training cells (CC BY-NC-SA 4.0), classifier bias centred on them" % (seed, n_images)}


def main(argv: list[str] | None = None) -> int:
    import argparse

    from .card import ZOO

    parser = argparse.ArgumentParser(description="write the reference-shape zoo models (models/zoo/<name>)")
    parser.add_argument("names", nargs="*", default=list(REFERENCES), help=f"of {list(REFERENCES)}")
    args = parser.parse_args(argv)
    for name in args.names:
        card = build_reference(name, ZOO / name)
        print(json.dumps({k: card[k] for k in ("name", "params", "macs")}), card["metrics"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
