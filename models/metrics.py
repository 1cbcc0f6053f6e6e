"""Classification metrics for inspection: accuracy, balanced accuracy, F1 of the defect decision,
per-class precision and recall, the confusion matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels), np.asarray(preds)), 1)
    return cm


def per_class_metrics(cm: np.ndarray) -> list[dict]:
    """Precision, recall, F1 and support of every class, from a confusion matrix (rows: true)."""
    rows = []
    for k in range(cm.shape[0]):
        tp, predicted, support = cm[k, k], cm[:, k].sum(), cm[k].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"precision": round(float(precision), 4), "recall": round(float(recall), 4),
                     "f1": round(float(f1), 4), "support": int(support)})
    return rows


def classification_metrics(labels: np.ndarray, preds: np.ndarray, num_classes: int = 2,
                           positive: int = 1, defect_classes: list[int] | None = None) -> dict:
    """Accuracy, balanced accuracy (mean per-class recall), F1 of the defect decision, per-class
    precision/recall, confusion matrix. ``f1_defective`` is the F1 of ``positive`` or, with
    ``defect_classes`` (class indices), of "any defect class" against the rest: on a line with
    several defect types, a crack called a finger failure still stops the cell."""
    cm = confusion_matrix(labels, preds, num_classes)
    support = cm.sum(axis=1)
    recalls = np.divide(np.diag(cm), support, out=np.zeros(num_classes), where=support > 0)
    defects = [positive] if defect_classes is None else list(defect_classes)
    binary = np.array([[cm[np.ix_(t, p)].sum() for p in (_others(defects, num_classes), defects)]
                       for t in (_others(defects, num_classes), defects)])
    return {
        "accuracy": round(float(np.trace(cm) / cm.sum()), 4),
        "balanced_accuracy": round(float(recalls[support > 0].mean()), 4),
        "f1_defective": per_class_metrics(binary)[1]["f1"],
        "n": int(cm.sum()),
        "confusion_matrix": cm.tolist(),
        "per_class": per_class_metrics(cm),
    }


def _others(classes: list[int], num_classes: int) -> list[int]:
    return [k for k in range(num_classes) if k not in classes]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_training_curves(history: list[dict], path: Path, best_epoch: int | None = None) -> Path:
    """Loss and validation accuracy per epoch, with the selected epoch marked."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(8, 3.2), dpi=110)
    ax_loss.plot(epochs, [h["loss"] for h in history])
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    ax_acc.plot(epochs, [h["val_accuracy"] for h in history], label="accuracy")
    ax_acc.plot(epochs, [h["val_balanced_accuracy"] for h in history], label="balanced accuracy")
    ax_acc.set(xlabel="epoch", title="validation")
    if best_epoch:
        for ax in (ax_loss, ax_acc):
            ax.axvline(best_epoch, color="gray", linestyle=":", label=f"selected ({best_epoch})")
    ax_acc.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def save_confusion_png(cm: np.ndarray | list, classes: list[str], path: Path, title: str) -> Path:
    """Write a confusion-matrix heat map with counts and row percentages."""
    plt = _pyplot()
    cm = np.asarray(cm)
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.2, 3.8), dpi=120)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]}\n{rates[i, j]:.1%}", ha="center", va="center",
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
