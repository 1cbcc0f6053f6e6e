"""The Engine: one API over the board, the RTL simulation, the emulator and ONNX Runtime.

``edgefpga.runtime.open(model, backend="auto")`` resolves the model (build folder, model folder
or zoo name), picks the backend and returns an Engine. ``infer`` takes images of any size as
8-bit gray or BGR arrays (or image files), runs the card's OpenCV preprocessing once, and gives
one ``Result`` per image. A bad image or a failed backend call raises with the image or part
named; the engine stays usable for the next call.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgefpga.models.preprocess import ImageError, resize_u8

from .backends import BACKENDS, Backend, BackendUnavailable, choose_backend
from .confidence import cross_entropy_confidence
from .source import ModelRef

ImageLike = np.ndarray | str | Path


@dataclass
class Result:
    """The verdict on one image."""

    label: str
    label_index: int
    defective: bool  # P(any of the model's defect classes) >= the engine's defect threshold
    score: float  # that probability (a model ending in Sigmoid: the largest defect-class probability)
    scores: list[float]  # class scores as the backend computes them (logits)
    probabilities: list[float]
    classes: list[str]
    latency_ms: float  # wall time of the call that produced it (preprocessing included) / images in it
    batch_size: int
    backend: str
    model_id: str
    cycles: int | None = None  # accelerator clock cycles, first pixel in to last score out (rtl)
    source: str = ""  # file name or "image <i>"
    top_k: list[dict] = field(default_factory=list)  # the k most probable classes: {"label", "probability"}
    defect_classes: list[str] = field(default_factory=list)  # the classes whose probability makes ``score``
    # Sedna's cross-entropy criterion on ``probabilities`` (runtime/confidence.py): 1 sure, 0 uniform;
    # computed here when not given, so every Result has it, however it was made
    confidence: float | None = None
    # a detector (card output kind "map"): what it found, highest score first, each
    # {"label", "label_index", "score", "x", "y"} with the centre in the source image's pixels;
    # then ``scores``/``probabilities`` sum up the map (each defect class: its largest cell
    # probability) and ``defective`` says whether anything was found
    detections: list[dict] | None = None
    image_size: tuple[int, int] | None = None  # the source image's (height, width)

    def __post_init__(self) -> None:
        if self.confidence is None and self.probabilities:
            self.confidence = float(cross_entropy_confidence(self.probabilities)[0])

    def to_dict(self) -> dict:
        return asdict(self)


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def defect_probability(probs: np.ndarray, defects: list[int], activation: str) -> np.ndarray:
    """P(defect) per image: the summed probability of the defect classes (softmax: exclusive
    classes), or the largest of them (sigmoid: independent per-class probabilities; a
    single-output sigmoid model's one probability)."""
    if activation == "sigmoid":
        return probs[:, defects].max(axis=1) if probs.shape[1] > 1 else probs[:, 0]
    if defects == list(range(1, probs.shape[1])):  # every class but the good one: as binary models always had it
        return 1.0 - probs[:, 0]
    return probs[:, defects].sum(axis=1)


def read_image_file(path: Path) -> np.ndarray:
    from edgefpga.models.imagefiles import read_image

    if not Path(path).is_file():
        raise ImageError(f"{path}: no such image file")
    return read_image(Path(path))


def check_threshold(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"defect_threshold must be within [0, 1], got {value}")
    return float(value)


class Engine:
    """A model on a backend. Use as a context manager, or call ``close``."""

    def __init__(self, model: ModelRef, backend: Backend, chosen_because: str, defect_threshold: float = 0.5,
                 top_k: int = 3):
        self.model = model
        self.backend = backend
        self.chosen_because = chosen_because
        self.defect_threshold = check_threshold(defect_threshold)
        self.top_k = max(1, int(top_k))

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def model_id(self) -> str:
        return self.model.model_id

    @property
    def classes(self) -> list[str]:
        return self.model.classes

    def preprocess(self, images: Iterable[ImageLike]) -> tuple[np.ndarray, list[str], list[tuple[int, int]]]:
        """(N, C, H, W) uint8 frames as the accelerator receives them, a name and the source
        (height, width) per image (a detector's centres are in the source image's pixels)."""
        frames, names, sizes = [], [], []
        for i, image in enumerate(images):
            name = str(image) if isinstance(image, (str, Path)) else f"image {i}"
            array = read_image_file(Path(image)) if isinstance(image, (str, Path)) else image
            frames.append(resize_u8(array, self.model.spec, name))
            names.append(name)
            sizes.append(tuple(int(v) for v in np.shape(array)[:2]))
        if not frames:
            raise ImageError("no images given")
        return np.stack(frames), names, sizes

    def infer(self, images: ImageLike | Iterable[ImageLike], defect_threshold: float | None = None) -> list[Result]:
        """Results for one image or a sequence of images, in order. ``defect_threshold`` applies to
        this call only (a node passes the value it reports, so the two never differ)."""
        if isinstance(images, (np.ndarray, str, Path)):
            images = [images]
        threshold = self.defect_threshold if defect_threshold is None else check_threshold(defect_threshold)
        start = time.perf_counter()
        frames, names, sizes = self.preprocess(images)
        out = self.backend.run(frames)
        per_image_ms = (time.perf_counter() - start) * 1e3 / len(frames)
        if self.model.stride is not None:
            return self._detections(out.scores, out.cycles, names, per_image_ms, threshold, sizes)
        return self._results(out.scores, out.cycles, names, per_image_ms, threshold)

    def stream(self, images: Iterable[ImageLike], batch_size: int | None = None) -> Iterator[Result]:
        """Results as they come, in batches of ``batch_size`` (default: the backend's preferred batch)."""
        size = batch_size or self.backend.max_batch
        batch: list[ImageLike] = []
        for image in images:
            batch.append(image)
            if len(batch) == size:
                yield from self.infer(batch)
                batch = []
        if batch:
            yield from self.infer(batch)

    def _results(self, scores: np.ndarray, cycles: np.ndarray | None, names: list[str], ms: float,
                 threshold: float) -> list[Result]:
        probs = 1.0 / (1.0 + np.exp(-scores)) if self.model.output_activation == "sigmoid" else softmax(scores)
        defect = defect_probability(probs, self.model.defect_indices, self.model.output_activation)
        defects = [self.classes[k] for k in self.model.defect_indices]
        order = np.argsort(-probs, axis=1, kind="stable")[:, :self.top_k]
        return [Result(label=self.classes[int(k)], label_index=int(k), defective=bool(defect[i] >= threshold),
                       score=float(defect[i]), scores=scores[i].tolist(), probabilities=probs[i].tolist(),
                       classes=list(self.classes), latency_ms=round(ms, 4), batch_size=len(scores),
                       backend=self.backend.name, model_id=self.model.model_id,
                       cycles=None if cycles is None else int(cycles[i]), source=names[i],
                       top_k=[{"label": self.classes[j], "probability": float(probs[i, j])} for j in order[i]],
                       defect_classes=defects)
                for i, k in enumerate(scores.argmax(axis=1))]

    def _detections(self, scores: np.ndarray, cycles: np.ndarray | None, names: list[str], ms: float,
                    threshold: float, sizes: list[tuple[int, int]]) -> list[Result]:
        """A detector's results: each image's stream-ordered map decoded (models/detect.py) at
        ``threshold``; the class summary is each defect class's largest cell probability."""
        from edgefpga.models.detect import decode, map_probabilities, unstream

        classes = len(self.classes)
        results = []
        for i, row in enumerate(scores):
            grid = unstream(row, classes, self.model.cells)
            found = decode(grid, self.classes, self.model.stride, sizes[i], threshold)
            peak = map_probabilities(grid).reshape(classes, -1).max(axis=1)
            probs = np.concatenate([[max(0.0, 1.0 - peak[1:].max())], peak[1:]])
            probs = probs / probs.sum()
            summary = self._results(np.log(np.maximum(probs, 1e-30))[None], None if cycles is None else cycles[i:i + 1],
                                    [names[i]], ms, threshold)[0]
            summary.batch_size = len(scores)
            summary.defective = bool(found)
            summary.detections = [d.to_dict() for d in found]
            summary.image_size = sizes[i]
            results.append(summary)
        return results

    def describe(self) -> str:
        return f"{self.model.model_id} on {self.backend.describe()}: {self.chosen_because}"

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_engine(model: str | Path, backend: str = "auto", defect_threshold: float = 0.5, top_k: int = 3,
                **options) -> Engine:
    """An Engine for ``model`` (build folder, model folder or zoo name) on ``backend``: one of
    ``auto``, ``pynq``, ``rtl``, ``emulator``, ``onnx``; results list the ``top_k`` most probable
    classes. Options go to the backend (e.g. ``timeout_s`` for ``pynq``, ``threads`` for ``onnx``)."""
    ref = ModelRef.resolve(model)
    if backend == "auto":
        backend, why = choose_backend(ref)
    elif backend in BACKENDS:
        why = "asked for"
    else:
        raise BackendUnavailable(f"unknown backend {backend!r}: choose auto, {', '.join(BACKENDS)}")
    return Engine(ref, BACKENDS[backend](ref, **options), why, defect_threshold, top_k)
