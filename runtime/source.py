"""What the user points the runtime at: a build folder, a model folder or a zoo model name.

A build folder (``edgefpga convert``'s output) serves every backend: its float model for
``onnx``, the hls4ml project for ``emulator``, the RTL for ``rtl``, the overlay for ``pynq``. A
model folder (``model.onnx`` + ``card.json``) serves ``onnx`` only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from edgefpga.models.card import InputSpec, ModelCardError, defect_classes_of, load_card, resolve_model_dir

REPORT_FILE = "report.json"


def file_digest(path: Path, chars: int = 12) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:chars]


def map_stride(output: dict | None, source: str) -> int | None:
    """The output stride of a detector's card (``output: {"kind": "map", "stride": s}``), else None."""
    if not isinstance(output, dict) or output.get("kind") != "map":
        return None
    stride = output.get("stride")
    if not (isinstance(stride, int) and stride > 0):
        raise ModelCardError(f"{source}: output.kind is 'map' but output.stride is {stride!r}, not a positive int")
    return stride


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: its classes, preprocessing, float ONNX file and (if any) build folder."""

    name: str
    classes: list[str]
    spec: InputSpec
    onnx_path: Path
    build_dir: Path | None
    model_id: str  # name@sha256 prefix of the float ONNX file: which weights gave a result
    output_activation: str = "softmax"  # how scores become probabilities: "softmax" or "sigmoid" (per class)
    defect_classes: tuple[str, ...] | None = None  # the classes that count as defective; None: all but the first
    stride: int | None = None  # a detector (card output kind "map"): input pixels between output cells
    output_scale: float = 1.0  # a QDQ build's accelerator returns integers q: scores = scale * (q - zero point)
    output_zero_point: int = 0

    @property
    def cells(self) -> tuple[int, int] | None:
        """A detector's output map (h, w); None for a classifier."""
        return None if self.stride is None else (self.spec.height // self.stride, self.spec.width // self.stride)

    @property
    def defect_indices(self) -> list[int]:
        names = self.classes[1:] if self.defect_classes is None else self.defect_classes
        return [self.classes.index(c) for c in names]

    @classmethod
    def resolve(cls, value: str | Path) -> "ModelRef":
        folder = resolve_model_dir(value)
        if (folder / REPORT_FILE).is_file():
            return cls.from_build(folder)
        if folder.is_dir() and not (folder / "card.json").is_file():
            raise ModelCardError(f"{folder}: neither a build folder (no {REPORT_FILE}) nor a model folder "
                                 "(no card.json)")
        card = load_card(folder)
        from .backends.onnx import final_activation

        activation = "sigmoid" if final_activation(card.model_path) == "sigmoid" else "softmax"
        return cls(card.name, card.classes, card.input, card.model_path, None,
                   f"{card.name}@{file_digest(card.model_path)}", activation, tuple(card.defect_classes),
                   map_stride(card.raw.get("output"), str(card.path)))

    @classmethod
    def from_build(cls, build_dir: Path) -> "ModelRef":
        report_path = build_dir / REPORT_FILE
        try:
            report = json.loads(report_path.read_text())
            model = report["model"]
            activation = "sigmoid" if report.get("output_activation") == "sigmoid" else "softmax"
            spec = InputSpec.from_dict(model["input"], str(report_path))
            classes = model["classes"]
            name = model.get("name") or build_dir.name  # older builds did not record the name
            defects = tuple(defect_classes_of(model, classes, str(report_path)))  # older builds: all but the first
            stride = map_stride(model.get("output"), str(report_path))
            dequantize = report.get("output_dequantize", {})
            scale, zero = float(dequantize.get("scale", 1.0)), int(dequantize.get("zero_point", 0))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ModelCardError(f"{report_path}: not a report of `edgefpga convert` ({exc})") from exc
        onnx_path = build_dir / "model" / "source.onnx"
        if not onnx_path.is_file():
            raise ModelCardError(f"{onnx_path}: missing from the build folder (convert it again)")
        return cls(name, classes, spec, onnx_path, build_dir, f"{name}@{file_digest(onnx_path)}", activation, defects,
                   stride, scale, zero)

    def needs_build(self, backend: str) -> Path:
        """The build folder, or an error that says how to make one."""
        if self.build_dir is None:
            raise ModelCardError(f"{self.onnx_path.parent}: the {backend} backend needs a build folder: run "
                                 f"`edgefpga convert {self.onnx_path.parent}` and open build/<name> instead")
        return self.build_dir
