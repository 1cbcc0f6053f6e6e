"""Quantization-aware training (QAT) with Brevitas: the quantized twin of ``arch.InspectionCNN``
and its QONNX export (issue 30, item 3).

``edgefpga train ... --qat W4A4`` trains this net in the one training loop (``train.py``): the
architecture config carries the widths (``ArchConfig.qat``) and ``build_model`` returns the
quantized net; everything else (data, augmentation, loss, EMA, model selection on validation,
the logit-bias calibration) is the float recipe's. The model folder's ``model.onnx`` is then the
QONNX file Brevitas' ``export_qonnx`` writes, which ``edgefpga convert`` builds with its own
widths and scales (hw/qonnx_in.py), no precision search.

The quantizers are the ones the converter builds exactly (docs/convert.md, "Quantized models"),
defined once here (tests/hw/test_qonnx.py uses them too): Brevitas' fixed-point quantizers, whose
scales are powers of two (``restrict_scaling_type = POWER_OF_TWO``), zero points 0, rounding to
nearest even:

- weights: ``Int8WeightPerTensorFixedPoint`` at ``weight_bits`` (per tensor);
- activations after a ReLU: ``Uint8ActPerTensorFixedPoint`` at ``act_bits`` (QuantReLU), and the
  global average pool's output likewise (a QuantIdentity: the pool's average is the layer the
  converter rounds);
- the input: ``Int8ActPerTensorFixedPoint`` at 8 bits (the normalized pixels; with the input
  spec ``x = (pixel/256 - 0.5)/0.25 = pixel/64 - 2`` every pixel lies on its grid, so the input
  quantizer loses nothing and the accelerator's input affine is exact);
- biases: ``Int16Bias`` (on the grid of the layer's input scale times its weight scale);
- the scores: ``Int8ActPerTensorFixedPoint`` at 16 bits (the accelerator's 16-bit output words).

No BatchNorm: a float per-channel scale between quantizers is not computed exactly by the
fixed-point datapath (the converter refuses it), so each quantized conv carries its own bias.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .arch import ArchitectureError

MIN_BITS, MAX_BITS = 2, 8
INPUT_BITS = 8  # the input quantizer: the normalized 8-bit pixels, exactly
OUTPUT_BITS = 16  # the scores: the accelerator's output words
INPUT_SCALE = 1 / 256  # the card's pixel scale for a QAT model: a power of two, so the input affine is exact


class QatError(ArchitectureError):
    """A --qat setting that cannot be trained (widths out of range, a shape without a quantized twin)."""


@dataclass(frozen=True)
class QatWidths:
    weight_bits: int
    act_bits: int

    @property
    def name(self) -> str:
        return f"W{self.weight_bits}A{self.act_bits}"


def parse_qat(text: str) -> QatWidths:
    """``W4A4`` (case-insensitive) -> weight and activation widths, each 2..8."""
    m = re.fullmatch(r"[wW](\d+)[aA](\d+)", str(text).strip())
    if not m:
        raise QatError(f"--qat {text!r}: expected W<weight bits>A<activation bits>, e.g. W4A4 or W8A8")
    w, a = int(m.group(1)), int(m.group(2))
    for what, bits in (("weight", w), ("activation", a)):
        if not MIN_BITS <= bits <= MAX_BITS:
            raise QatError(f"--qat {text}: {what} width {bits} is outside {MIN_BITS}..{MAX_BITS}")
    return QatWidths(w, a)


def quantizers() -> dict:
    """The Brevitas quantizer classes the converter builds exactly (module docstring)."""
    from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Int16Bias,
                                Uint8ActPerTensorFixedPoint)

    return {"weight": Int8WeightPerTensorFixedPoint, "act": Uint8ActPerTensorFixedPoint,
            "signed_act": Int8ActPerTensorFixedPoint, "bias": Int16Bias}


def conv_kwargs(weight_bits: int) -> dict:
    q = quantizers()
    return dict(weight_quant=q["weight"], weight_bit_width=weight_bits, bias_quant=q["bias"])


def relu(act_bits: int, **kw) -> nn.Module:
    import brevitas.nn as qnn

    return qnn.QuantReLU(act_quant=quantizers()["act"], bit_width=act_bits, return_quant_tensor=True, **kw)


def input_quant() -> nn.Module:
    import brevitas.nn as qnn

    return qnn.QuantIdentity(act_quant=quantizers()["signed_act"], bit_width=INPUT_BITS, return_quant_tensor=True)


def output_kwargs(bits: int = OUTPUT_BITS) -> dict:
    return dict(output_quant=quantizers()["signed_act"], output_bit_width=bits)


class QuantInspectionCNN(nn.Module):
    """``arch.InspectionCNN`` with Brevitas layers: an input quantizer, then per width a
    QuantConv2d (3x3, same padding, with bias, no BatchNorm) and a QuantReLU, 2x2 max-pool between
    blocks, the global pool and a quantizer on its output, dropout, a QuantLinear with 16-bit
    scores. The layer names match the float net's where they mean the same (``classifier``)."""

    def __init__(self, cfg, widths: QatWidths):
        super().__init__()
        import brevitas.nn as qnn

        if cfg.head not in ("avg", "max"):
            raise QatError(f"--qat: head {cfg.head!r} has no quantized twin (avg or max pooling to a dense layer)")
        layers: list[nn.Module] = [input_quant()]
        channels = cfg.in_channels
        for i, width in enumerate(cfg.widths):
            stride = cfg.stem_stride if i == 0 else 1
            layers += [qnn.QuantConv2d(channels, width, 3, stride=stride, padding=1, bias=True,
                                       **conv_kwargs(widths.weight_bits)), relu(widths.act_bits)]
            if i < len(cfg.widths) - 1:
                layers.append(nn.MaxPool2d(2))
            channels = width
        pool = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}[cfg.head](cfg.size // cfg.reduction)
        layers += [pool, qnn.QuantIdentity(act_quant=quantizers()["act"], bit_width=widths.act_bits,
                                           return_quant_tensor=True)]
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = qnn.QuantLinear(channels, cfg.num_classes, bias=True, **conv_kwargs(widths.weight_bits),
                                          **output_kwargs())
        self.cfg, self.widths = cfg, widths

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.classifier(self.dropout(torch.flatten(x, 1)))
        return x.value if hasattr(x, "value") else x

    @torch.no_grad()
    def prepare_training(self, batches) -> None:
        """Initialize the activation quantizers' scales from their statistics (Brevitas collects
        them over its first training steps) before the loop copies the model for its EMA: the copy
        then holds the learned scales, not the statistics still being collected."""
        self.train()
        for x in batches:
            self(x)


def collect_stats_steps(model: nn.Module) -> int:
    """How many training-mode forward passes Brevitas needs before every runtime-statistics scale
    is a parameter (at most its largest ``collect_stats_steps``)."""
    steps = [int(getattr(m, "collect_stats_steps")) for m in model.modules() if hasattr(m, "collect_stats_steps")]
    return max(steps, default=0) + 1


def export_qonnx_file(model: nn.Module, input_shape: tuple[int, int, int], path: Path) -> Path:
    """Brevitas' ``export_qonnx`` as a user calls it (PyTorch's default exporter), batch 1."""
    from brevitas.export import export_qonnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(model, torch.zeros(1, *input_shape), str(path))
    return path


def is_qonnx_file(path: Path) -> bool:
    import onnx

    return any(n.op_type in ("Quant", "BipolarQuant", "Trunc") for n in onnx.load(str(path)).graph.node)


def qonnx_scores(path: Path, inputs: np.ndarray) -> np.ndarray:
    """qonnx's own execution (``qonnx.core.onnx_exec.execute_onnx``) of a QONNX file after qonnx's
    cleanup, one normalized NCHW image at a time: the reference a QAT model's card is measured with."""
    import onnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.util.cleanup import cleanup_model

    # qonnx runs each node in a one-node model of onnx's newest IR (14 with onnx 1.23), which
    # ONNX Runtime 1.x refuses; hw/graph.py lowers the same default for the converter
    onnx.IR_VERSION = min(onnx.IR_VERSION, 13)
    proto = onnx.load(str(path))
    proto.ir_version = min(proto.ir_version, 10)  # onnxruntime 1.x reads IR <= 10
    model = cleanup_model(ModelWrapper(proto))
    name, out = model.graph.input[0].name, model.graph.output[0].name
    return np.concatenate([execute_onnx(model, {name: inputs[i:i + 1].astype(np.float32)})[out]
                           for i in range(len(inputs))])


def quant_net(weight_bits: int, act_bits: int, act_quant=None, output_bits: int | None = None,
              size: int = 16) -> nn.Module:
    """A small net of the shape docs/convert.md shows (the converter's tests): an input quantizer,
    QuantConv2d + QuantReLU (+ max pool) twice, QuantLinear; biases quantized with the layer's
    input and weight scales (Int16Bias)."""
    import brevitas.nn as qnn

    conv = dict(kernel_size=3, padding=1, **conv_kwargs(weight_bits))
    act = dict(act_quant=act_quant or quantizers()["act"], bit_width=act_bits, return_quant_tensor=True)
    out = output_kwargs(output_bits) if output_bits else {}
    return nn.Sequential(
        qnn.QuantIdentity(act_quant=quantizers()["signed_act"], bit_width=8, return_quant_tensor=True),
        qnn.QuantConv2d(1, 8, **conv), qnn.QuantReLU(**act), nn.MaxPool2d(2),
        qnn.QuantConv2d(8, 8, **conv), qnn.QuantReLU(**act), nn.MaxPool2d(2),
        nn.Flatten(),
        qnn.QuantLinear(8 * (size // 4) ** 2, 2, **conv_kwargs(weight_bits), **out))
