"""Model cards: the ``card.json`` beside each ``model.onnx`` (DESIGN.md, contract 2).

The card is what every later step trusts about a model: its classes, how an 8-bit camera image
becomes the network input, where the weights came from and how good they are. Loading checks
every required key so that a broken card fails here, naming the file, instead of deep inside
conversion or a ROS node.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CARD_FILE = "card.json"
MODEL_FILE = "model.onnx"
REQUIRED_KEYS = ("name", "classes", "input", "dataset", "metrics", "params", "macs")
REQUIRED_INPUT_KEYS = ("shape", "color", "resize", "scale", "mean", "std")
REQUIRED_TEST_METRICS = ("accuracy", "balanced_accuracy", "f1_defective", "n")
COLORS = ("gray", "bgr", "rgb")  # rgb: a model trained on RGB arrays (torchvision and the like)
RESIZES = ("area",)
ZOO = Path(__file__).resolve().parent / "zoo"  # the shipped models, addressed by folder name
REFERENCE_SHAPE = "reference-shape"  # a card's "purpose" for an untrained shape (models/reference.py): no test metrics


class ModelCardError(ValueError):
    """A model folder or card that cannot be used; the message names the file and the problem."""


Channelwise = float | tuple[float, ...]  # one value for every channel, or one per channel


def _channelwise(value: Any, channels: int, key: str, source: str) -> Channelwise:
    """A card's ``mean``/``std``: a number, or a list with one number per channel."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if (isinstance(value, list) and len(value) == channels
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        return tuple(float(v) for v in value)
    raise ModelCardError(f"{source}: input.{key} must be a number or a list of {channels} numbers "
                         f"(one per channel), got {value!r}")


@dataclass(frozen=True)
class InputSpec:
    """How an 8-bit image becomes the network input: resize, then ``(pixel*scale - mean)/std``,
    with ``mean`` and ``std`` one number for all channels or a tuple of one per channel."""

    channels: int
    height: int
    width: int
    color: str
    resize: str
    scale: float
    mean: Channelwise
    std: Channelwise

    @property
    def channel_mean(self) -> tuple[float, ...]:
        """``mean`` with one value per channel, whichever way the card gives it."""
        return self.mean if isinstance(self.mean, tuple) else (self.mean,) * self.channels

    @property
    def channel_std(self) -> tuple[float, ...]:
        return self.std if isinstance(self.std, tuple) else (self.std,) * self.channels

    @classmethod
    def from_dict(cls, spec: dict[str, Any], source: str) -> "InputSpec":
        missing = [k for k in REQUIRED_INPUT_KEYS if k not in spec]
        if missing:
            raise ModelCardError(f"{source}: 'input' is missing key(s) {missing}")
        shape = spec["shape"]
        if not (isinstance(shape, list) and len(shape) == 4 and shape[0] == 1
                and all(isinstance(v, int) and v > 0 for v in shape)):
            raise ModelCardError(f"{source}: input.shape must be [1, C, H, W] positive ints, got {shape!r}")
        if spec["color"] not in COLORS:
            raise ModelCardError(f"{source}: input.color must be one of {COLORS}, got {spec['color']!r}")
        expected_channels = 1 if spec["color"] == "gray" else 3
        if shape[1] != expected_channels:
            raise ModelCardError(
                f"{source}: input.color {spec['color']!r} needs {expected_channels} channel(s), shape has {shape[1]}"
            )
        if spec["resize"] not in RESIZES:
            raise ModelCardError(f"{source}: input.resize must be one of {RESIZES}, got {spec['resize']!r}")
        mean = _channelwise(spec["mean"], shape[1], "mean", source)
        std = _channelwise(spec["std"], shape[1], "std", source)
        if 0 in (std if isinstance(std, tuple) else (std,)):
            raise ModelCardError(f"{source}: input.std must not be zero")
        return cls(
            channels=shape[1], height=shape[2], width=shape[3], color=spec["color"],
            resize=spec["resize"], scale=float(spec["scale"]), mean=mean, std=std,
        )

    def to_dict(self) -> dict[str, Any]:
        def plain(v: Channelwise) -> float | list[float]:
            return list(v) if isinstance(v, tuple) else v

        return {
            "shape": [1, self.channels, self.height, self.width], "color": self.color,
            "resize": self.resize, "scale": self.scale, "mean": plain(self.mean), "std": plain(self.std),
        }


@dataclass(frozen=True)
class ModelCard:
    """A parsed, checked ``card.json``; ``raw`` keeps every key, including ones we do not model."""

    path: Path
    name: str
    classes: list[str]
    input: InputSpec
    raw: dict[str, Any]

    @property
    def defect_classes(self) -> list[str]:
        """The classes that count as defective (the card's ``defect_classes``; default: all but the first)."""
        return defect_classes_of(self.raw, self.classes, str(self.path))

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def model_path(self) -> Path:
        return self.folder / MODEL_FILE

    @property
    def test_metrics(self) -> dict[str, Any]:
        return self.raw["metrics"]["test"]


def defect_classes_of(raw: dict[str, Any], classes: list[str], source: str) -> list[str]:
    """The card's ``defect_classes`` checked against its classes; a card without them (every
    binary model before them) means every class but the first, the good one."""
    names = raw.get("defect_classes", classes[1:])
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise ModelCardError(f"{source}: 'defect_classes' must be a list of class names, got {names!r}")
    unknown = [n for n in names if n not in classes]
    if unknown:
        raise ModelCardError(f"{source}: defect_classes {unknown} are not among the classes {classes}")
    return [c for c in classes if c in names]  # class order, whatever order the card lists them in


def parse_card(raw: dict[str, Any], source: str) -> tuple[str, list[str], InputSpec]:
    """Check a card dictionary; ``source`` names it in errors."""
    if not isinstance(raw, dict):
        raise ModelCardError(f"{source}: expected a JSON object, got {type(raw).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise ModelCardError(f"{source}: missing key(s) {missing}")
    classes = raw["classes"]
    if not (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes)):
        raise ModelCardError(f"{source}: 'classes' must be a list of at least two names, got {classes!r}")
    test = raw["metrics"].get("test") if isinstance(raw["metrics"], dict) else None
    untrained = raw.get("purpose") == REFERENCE_SHAPE and test is None
    if not untrained and (not isinstance(test, dict) or any(k not in test for k in REQUIRED_TEST_METRICS)):
        raise ModelCardError(f"{source}: metrics.test must hold {list(REQUIRED_TEST_METRICS)} (only a card with "
                             f"\"purpose\": \"{REFERENCE_SHAPE}\" may have none)")
    defect_classes_of(raw, classes, source)
    return raw["name"], classes, InputSpec.from_dict(raw["input"], source)


def resolve_model_dir(value: str | Path) -> Path:
    """A folder path, or the name of a shipped zoo model (e.g. ``elpv_defect``)."""
    path = Path(value)
    if path.exists() or "/" in str(value):
        return path
    zoo = ZOO / str(value)
    return zoo if zoo.exists() else path


def load_card(model_dir: str | Path) -> ModelCard:
    """Load and check ``<model_dir>/card.json``; the ONNX file must exist beside it."""
    folder = Path(model_dir)
    if not folder.is_dir():
        raise ModelCardError(f"{folder}: model folder does not exist")
    path = folder / CARD_FILE
    if not path.is_file():
        raise ModelCardError(f"{path}: no model card (expected {CARD_FILE} beside {MODEL_FILE})")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelCardError(f"{path}: not valid JSON ({exc})") from exc
    name, classes, spec = parse_card(raw, str(path))
    if not (folder / MODEL_FILE).is_file():
        raise ModelCardError(f"{folder / MODEL_FILE}: model file missing")
    return ModelCard(path=path, name=name, classes=classes, input=spec, raw=raw)


def write_card(folder: Path, card: dict[str, Any]) -> Path:
    """Write a card after checking it with the same rules used for loading."""
    path = Path(folder) / CARD_FILE
    parse_card(card, str(path))
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path
