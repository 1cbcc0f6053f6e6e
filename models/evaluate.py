"""Evaluate a model folder (``model.onnx`` + ``card.json``) with ONNX Runtime on its data.

This is the reference measurement: the float ONNX model, the card's OpenCV preprocessing, the
test split of the data the card records (ELPV's contract split, or a user's folder with the
recorded seed). The card's ``metrics.test`` is written by this same function, so
``edgefpga eval`` on a trained model must reproduce the card exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from edgefpga.progress import progress_bar

from .card import ModelCard, ModelCardError, load_card
from .datasets import TrainingData, data_of_card
from .metrics import classification_metrics, save_confusion_png
from .preprocess import preprocess


def onnx_session(card: ModelCard):
    """An ONNX Runtime session for the card's model; a corrupt file is a ModelCardError."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(card.model_path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several private exception types
        raise ModelCardError(f"{card.model_path}: ONNX Runtime cannot load it ({exc})") from exc
    shape = session.get_inputs()[0].shape
    expected = [1, card.input.channels, card.input.height, card.input.width]
    if not isinstance(shape[0], int):  # a symbolic batch (the cloud model's) takes batch 1 too
        shape = [1, *shape[1:]]
    if list(shape) != expected:
        raise ModelCardError(f"{card.model_path}: input shape {shape} does not match card {expected}")
    return session


def predict_scores(card: ModelCard, images: np.ndarray, progress: bool = False) -> np.ndarray:
    """Class scores (N, classes) for 8-bit images of any size, through the card's preprocessing."""
    if card.raw.get("onnx", {}).get("format") == "qonnx":  # a QAT model: qonnx's own execution of its QONNX file
        from .quant import qonnx_scores

        inputs = [preprocess(img, card.input, f"image {i}") for i, img in enumerate(images)]
        return qonnx_scores(card.model_path, np.concatenate(inputs)) if inputs else np.zeros((0, len(card.classes)))
    session = onnx_session(card)
    name = session.get_inputs()[0].name
    scores = [session.run(None, {name: preprocess(img, card.input, f"image {i}")})[0][0]
              for i, img in enumerate(progress_bar(images, progress=progress, desc="onnxruntime", unit="img"))]
    return np.asarray(scores)


def evaluate(model_dir: str | Path, subset: str = "test", progress: bool = False,
             confusion_png: str | Path | None = None, data: TrainingData | None = None) -> dict:
    """Metrics of the model on a subset of its data (default: the test part; for ELPV the 654
    contract test cells), with per-class precision/recall and the F1 of its defect classes."""
    card = load_card(model_dir)
    data = data if data is not None else data_of_card(card)
    if card.classes != data.classes:
        raise ModelCardError(f"{card.path}: classes {card.classes} are not the data's classes {data.classes}")
    idx = data.split.subset(subset)
    scores = predict_scores(card, data.take(idx), progress)
    defects = [card.classes.index(c) for c in card.defect_classes]
    # a detector's map: every output cell is one classification (its labels are maps too)
    metrics = classification_metrics(data.labels[idx].reshape(-1), scores.argmax(1).reshape(-1), len(card.classes),
                                     defect_classes=defects)
    metrics.update({"subset": subset, "backend": "onnxruntime", "dataset": data.card["dataset"]["name"]})
    if confusion_png:
        plot_confusion(card.name, card.classes, metrics, Path(confusion_png))
    return metrics


def plot_confusion(name: str, classes: list[str], metrics: dict, path: Path) -> Path:
    """The confusion-matrix PNG of an ``evaluate`` result, titled with its headline numbers."""
    return save_confusion_png(metrics["confusion_matrix"], classes, path,
                              f"{name}\n{metrics['dataset']} {metrics['subset']} (n={metrics['n']}): "
                              f"acc {metrics['accuracy']:.3f}, bal {metrics['balanced_accuracy']:.3f}")


def format_report(name: str, metrics: dict, classes: list[str]) -> str:
    """A terminal report: headline metrics, precision and recall per class, the confusion matrix."""
    cm = np.asarray(metrics["confusion_matrix"])
    width = max(max(len(c) for c in classes) + 2, 11)
    lines = [
        f"{name} on {metrics['dataset']} {metrics['subset']} split ({metrics['n']} images, {metrics['backend']})",
        f"  accuracy           {metrics['accuracy']:.4f}",
        f"  balanced accuracy  {metrics['balanced_accuracy']:.4f}",
        f"  F1 (defective)     {metrics['f1_defective']:.4f}",
        "  " + f"{'class':<{width}}" + "".join(f"{h:>11}" for h in ("precision", "recall", "support")),
    ]
    lines += ["  " + f"{c:<{width}}{row['precision']:>11.4f}{row['recall']:>11.4f}{row['support']:>11}"
              for c, row in zip(classes, metrics["per_class"])]
    lines += ["  confusion matrix (rows: true, columns: predicted)",
              "  " + " " * width + "".join(f"{c:>{width}}" for c in classes)]
    lines += ["  " + f"{c:<{width}}" + "".join(f"{v:>{width}}" for v in row) for c, row in zip(classes, cm)]
    return "\n".join(lines)
