"""FPGA-sized CNN architectures and their cost (parameters, multiply-accumulates).

Only layers that hls4ml converts with ``io_stream`` and that our RTL generator streams are used:
3x3 Conv (same padding) + BatchNorm (folded into the conv at export) + ReLU, 2x2 MaxPool, a
global AveragePool and one Dense layer; or, for a detector (``head="map"``), no pooling at the
end and a 1x1 Conv giving one score per class per output cell (FOMO-style, the cells
``reduction`` input pixels apart). The MAC count matters because the accelerator's frame
rate is bounded by MACs per frame over the DSP slices of the target (220 on an xc7z020).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

MAX_PARAMS = 100_000
MAX_MACS = 10_000_000


class ArchitectureError(ValueError):
    """An architecture that cannot be built or would not fit the FPGA budget."""


@dataclass(frozen=True)
class ArchConfig:
    """A plain VGG-like stack: one conv block per width, 2x2 max-pool after each but the last."""

    in_channels: int = 1
    size: int = 96
    widths: tuple[int, ...] = (8, 16, 32, 48, 64, 80)
    stem_stride: int = 1  # 2: the first conv sees full resolution but computes at half of it
    head: str = "avg"  # global pooling before the dense layer: "avg" or "max"; "map": a 1x1 conv per output cell
    num_classes: int = 2
    dropout: float = 0.1
    qat: str | None = None  # "W4A4" etc.: the Brevitas net trained quantization-aware (models/quant.py)

    @property
    def reduction(self) -> int:
        """Total spatial downsampling from the input to the last conv block."""
        return self.stem_stride * 2 ** (len(self.widths) - 1)

    @property
    def output_stride(self) -> int | None:
        """Input pixels between two output cells of a map head (None: one vector per image)."""
        return self.reduction if self.head == "map" else None

    def to_dict(self) -> dict:
        return asdict(self)

    def build_model(self) -> "InspectionCNN":
        """The untrained network within the FPGA budget (the training loop builds every
        architecture config through this method, the cloud model's too)."""
        return build(self)


class InspectionCNN(nn.Module):
    """Conv-BN-ReLU blocks, max-pool between them, global average pool, dense classifier; with
    ``head="map"`` the classifier is a 1x1 conv over the last block's map (no flatten, no dense)."""

    def __init__(self, cfg: ArchConfig):
        super().__init__()
        layers: list[nn.Module] = []
        channels = cfg.in_channels
        for i, width in enumerate(cfg.widths):
            stride = cfg.stem_stride if i == 0 else 1
            layers += [nn.Conv2d(channels, width, 3, stride=stride, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU()]
            if i < len(cfg.widths) - 1:
                layers.append(nn.MaxPool2d(2))
            channels = width
        if cfg.head != "map":
            pool = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}[cfg.head]
            layers.append(pool(cfg.size // cfg.reduction))
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = (nn.Conv2d(channels, cfg.num_classes, 1) if cfg.head == "map"
                           else nn.Linear(channels, cfg.num_classes))
        self.cfg = cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        if self.cfg.head == "map":
            return self.classifier(self.dropout(x))
        return self.classifier(self.dropout(torch.flatten(x, 1)))


@dataclass
class Cost:
    """Parameter and MAC counts of a model, per layer and in total (BatchNorm folded)."""

    params: int = 0
    macs: int = 0
    layers: list[dict] = field(default_factory=list)


def count_cost(model: nn.Module, input_shape: tuple[int, int, int]) -> Cost:
    """Count the parameters and MACs the accelerator will see: BatchNorm folds into the conv
    before it (adding a bias), so its scale/shift are not counted as separate parameters. A
    layer run twice in one forward pass (the cloud model's flip averaging) adds its MACs twice
    and its parameters once."""
    cost = Cost()
    hooks = []
    seen: set[int] = set()

    def once(mod: nn.Module, params: int) -> int:
        first = id(mod) not in seen
        seen.add(id(mod))
        return params if first else 0

    def conv_hook(mod: nn.Conv2d, _inp, out):
        k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
        macs = out.shape[1] * out.shape[2] * out.shape[3] * k
        params = once(mod, mod.weight.numel() + mod.out_channels)  # folded BatchNorm gives a bias
        cost.layers.append({"layer": "conv", "out": list(out.shape[1:]), "params": params, "macs": macs})

    def linear_hook(mod: nn.Linear, _inp, out):
        cost.layers.append({"layer": "dense", "out": list(out.shape[1:]), "params": once(
            mod, mod.weight.numel() + mod.out_features), "macs": mod.in_features * mod.out_features})

    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            hooks.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, nn.Linear):
            hooks.append(mod.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    model.train(was_training)
    for h in hooks:
        h.remove()
    cost.params = sum(layer["params"] for layer in cost.layers)
    cost.macs = sum(layer["macs"] for layer in cost.layers)
    return cost


def build(cfg: ArchConfig) -> InspectionCNN:
    """Build a model and refuse one that would not fit the FPGA budget."""
    if cfg.head not in ("avg", "max", "map"):
        raise ArchitectureError(f"head must be 'avg', 'max' or 'map', got {cfg.head!r}")
    if cfg.size % cfg.reduction:
        raise ArchitectureError(f"input size {cfg.size} must be divisible by {cfg.reduction}")
    if cfg.qat:
        from .quant import QuantInspectionCNN, parse_qat

        model = QuantInspectionCNN(cfg, parse_qat(cfg.qat))
    else:
        model = InspectionCNN(cfg)
    cost = count_cost(model, (cfg.in_channels, cfg.size, cfg.size))
    if cost.params > MAX_PARAMS or cost.macs > MAX_MACS:
        raise ArchitectureError(
            f"architecture {cfg.widths} at {cfg.size}px has {cost.params} params and {cost.macs} MACs; "
            f"the FPGA budget is {MAX_PARAMS} params and {MAX_MACS} MACs"
        )
    return model
