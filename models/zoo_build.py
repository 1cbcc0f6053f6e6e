"""``edgefpga train``: from training data (ELPV, or a user's folder or CSV) to a model folder,
as named steps. The one pipeline for every data source: the source only decides the
``TrainingData`` the steps read.

Like FINN's builder, the flow is an ordered list of small steps; each reads the build state and
writes its artifact into the output folder, so a reader sees the whole road at once:

    step_train -> step_export_onnx -> step_check_onnx -> step_evaluate_test
               -> step_check_fixed_point -> step_write_card -> step_plot
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import elpv
from .arch import ArchConfig, ArchitectureError, count_cost
from .augment import AugmentConfig
from .card import MODEL_FILE, InputSpec, write_card
from .datasets import TrainingData, staged_folder
from .evaluate import evaluate, plot_confusion
from .export import export_onnx, max_abs_difference
from .metrics import save_training_curves
from .preprocess import normalize, resize_batch
from .ptq import ptq_check
from .train import TrainConfig, TrainResult, data_spec, train

ONNX_TOLERANCE = 1e-4


@dataclass
class ZooBuild:
    """What the steps share: the configuration in, the artifacts and facts out."""

    name: str
    out: Path
    arch: ArchConfig
    train_cfg: TrainConfig
    augment_cfg: AugmentConfig
    data: TrainingData
    spec: InputSpec
    progress: bool = True
    result: TrainResult | None = None
    facts: dict = field(default_factory=dict)
    sizing: dict | None = None  # the board budget and the choice, when `train --board` picked the architecture
    batch_axis: bool = False  # export with a symbolic batch (a server's model); the FPGA's has batch 1
    provenance: dict = field(default_factory=dict)  # more card blocks, e.g. "federated" (fleet/federated/export.py)
    init: dict | None = None  # start weights (a state dict): fine-tuning a model (fleet/retrain.py)

    def log(self, message: str) -> None:
        if self.progress:
            print(f"[{self.name}] {message}", flush=True)


def _normalized(b: ZooBuild, subset: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    idx = b.data.split.subset(subset)[:limit]
    return normalize(resize_batch(b.data.take(idx), b.spec), b.spec), b.data.labels[idx]


def step_train(b: ZooBuild) -> None:
    b.result = train(b.arch, b.train_cfg, b.augment_cfg, progress=b.progress, data=b.data, spec=b.spec, init=b.init)
    b.log(f"trained in {b.result.seconds:.0f} s, best epoch {b.result.best_epoch}, "
          f"validation accuracy {b.result.val_metrics['accuracy']:.4f}")
    (b.out / "history.json").write_text(json.dumps(b.result.history, indent=1) + "\n")


def is_qat(b: ZooBuild) -> bool:
    return bool(getattr(b.arch, "qat", None))


def step_export_onnx(b: ZooBuild) -> None:
    """Float ONNX (BatchNorm folded), or a QAT model's QONNX file (Brevitas' export_qonnx)."""
    shape = (b.arch.in_channels, b.arch.size, b.arch.size)
    if is_qat(b):
        from .quant import export_qonnx_file

        export_qonnx_file(b.result.model, shape, b.out / MODEL_FILE)
        return
    export_onnx(b.result.model, shape, b.out / MODEL_FILE, b.batch_axis)


def step_check_onnx(b: ZooBuild) -> None:
    """ONNX Runtime (a QAT model: qonnx's execution of its QONNX file) must match PyTorch on real
    validation images before anything ships."""
    inputs, _ = _normalized(b, "val", limit=32)
    if is_qat(b):
        from .quant import qonnx_scores

        with torch.no_grad():
            ours = b.result.model.eval()(torch.from_numpy(inputs)).numpy()
        theirs = qonnx_scores(b.out / MODEL_FILE, inputs)
        diff = float(np.abs(ours - theirs).max())
        # Brevitas and qonnx compute the same quantized arithmetic in float32: equal, except where a
        # float sum's last bit lands on another side of a quantizer's rounding boundary (sums beyond
        # 24 bits: 8-bit weights and activations over hundreds of inputs); the decisions must agree
        agree = float((ours.argmax(1) == theirs.argmax(1)).mean())
        if agree < 1 - 1 / len(inputs):
            raise RuntimeError(f"{b.out / MODEL_FILE}: qonnx's execution differs from Brevitas (largest score "
                               f"difference {diff:.3g}, top-1 agreement {agree:.3f} on {len(inputs)} images)")
        b.facts["onnx_max_abs_diff"] = diff
        return
    diff = max_abs_difference(b.result.model, b.out / MODEL_FILE, inputs)
    if diff > ONNX_TOLERANCE:
        raise RuntimeError(f"{b.out / MODEL_FILE}: ONNX Runtime differs from PyTorch by {diff:.2e}")
    b.facts["onnx_max_abs_diff"] = diff


def step_evaluate_test(b: ZooBuild) -> None:
    """Test metrics through the same path as ``edgefpga eval`` (needs a provisional card)."""
    write_card(b.out, card_dict(b, test_metrics={"accuracy": 0, "balanced_accuracy": 0, "f1_defective": 0, "n": 0}))
    b.facts["test"] = evaluate(b.out, "test", progress=b.progress, data=b.data)
    b.log(f"test accuracy {b.facts['test']['accuracy']:.4f}, balanced {b.facts['test']['balanced_accuracy']:.4f}")


def step_evaluate_detections(b: ZooBuild) -> None:
    """A detector's decode threshold chosen on the validation modules, then its precision and recall
    of defective cells on the held-out module images at that threshold (ONNX Runtime)."""
    from .modules import evaluate_detector

    b.facts["threshold"], b.facts["detection"] = evaluate_detector(b.out, b.data.card["dataset"], b.data.classes,
                                                                   b.arch.output_stride)
    b.log(f"test detections: precision {b.facts['detection']['precision']:.4f}, "
          f"recall {b.facts['detection']['recall']:.4f}")


def step_check_fixed_point(b: ZooBuild) -> None:
    calib, _ = _normalized(b, "fit", limit=256)
    inputs, labels = _normalized(b, "test")
    b.facts["fixed_point"] = ptq_check(b.result.model, calib, inputs, labels)


def step_write_card(b: ZooBuild) -> None:
    write_card(b.out, card_dict(b, test_metrics=b.facts["test"]))


def step_plot(b: ZooBuild) -> None:
    plot_confusion(b.name, b.data.classes, b.facts["test"], b.out / "confusion_test.png")
    save_training_curves(b.result.history, b.out / "training_curves.png", b.result.best_epoch)


STEPS: list[Callable[[ZooBuild], None]] = [
    step_train, step_export_onnx, step_check_onnx, step_evaluate_test, step_check_fixed_point,
    step_write_card, step_plot,
]
# a detector (map head) also reports its detections on the held-out module images
DETECT_STEPS = STEPS[:4] + [step_evaluate_detections] + STEPS[4:]
# a QAT model is fixed point already: its widths are trained, no post-training check
QAT_STEPS = [step for step in STEPS if step is not step_check_fixed_point]
# a model that never goes to the FPGA (the cloud model) skips the fixed-point check
SERVER_STEPS = [step for step in STEPS if step is not step_check_fixed_point]


def card_dict(b: ZooBuild, test_metrics: dict) -> dict:
    """The model card (DESIGN.md contract 2) with the data's provenance, training record and cost."""
    cost = count_cost(b.result.model, (b.arch.in_channels, b.arch.size, b.arch.size))
    r = b.result
    classes = b.data.classes
    test = {k: test_metrics[k] for k in ("accuracy", "balanced_accuracy", "f1_defective", "n")}
    test |= {"confusion_matrix": test_metrics.get("confusion_matrix"), "backend": "qonnx" if is_qat(b) else "onnxruntime"}
    if "per_class" in test_metrics:
        test["per_class"] = dict(zip(classes, test_metrics["per_class"]))
    return {
        "name": b.name,
        **b.data.card,  # task, dataset (and for a folder: calibration, verification)
        "classes": classes,
        "defect_classes": b.data.defect_classes,
        "input": b.spec.to_dict(),
        "output": output_block(b),
        "metrics": {
            "test": test,
            **({"detection": b.facts["detection"]} if "detection" in b.facts else {}),
            "validation": {k: r.val_metrics[k] for k in ("accuracy", "balanced_accuracy", "f1_defective", "n")},
            "fixed_point_check": b.facts.get("fixed_point", []),
        },
        "params": cost.params,
        "macs": cost.macs,
        "layers": cost.layers,
        "architecture": b.arch.to_dict(),
        **({"sizing": b.sizing} if b.sizing else {}),
        "training": {
            "config": b.train_cfg.to_dict(), "augment": b.augment_cfg.to_dict(), "best_epoch": r.best_epoch,
            "epochs_run": r.epochs_run, "ema_decay": round(r.ema_decay, 5), "class_weights": dict(zip(classes, r.class_weights)),
            "calibrated_logit_bias": None if r.logit_bias is None else round(r.logit_bias, 5),
            "seconds": round(r.seconds, 1), "teachers": r.teachers,
            "torch": torch.__version__, "machine": f"{platform.machine()}, {b.train_cfg.threads} CPU thread(s)",
        },
        "onnx": onnx_block(b),
        **b.provenance,
    }


def onnx_block(b: ZooBuild) -> dict:
    """What model.onnx is: float ONNX (opset 13, BatchNorm folded), or a QAT model's QONNX file."""
    if is_qat(b):
        from .quant import INPUT_BITS, OUTPUT_BITS, parse_qat

        w = parse_qat(b.arch.qat)
        return {"format": "qonnx", "exporter": "brevitas export_qonnx (torch.export-based)", "layout": "NCHW",
                "batch": 1, "quantization": {"weight_bits": w.weight_bits, "activation_bits": w.act_bits,
                                             "input_bits": INPUT_BITS, "output_bits": OUTPUT_BITS,
                                             "scales": "powers of two (Brevitas fixed-point quantizers)",
                                             "quantizers": "models/quant.py"},
                "max_abs_diff_vs_pytorch": b.facts.get("onnx_max_abs_diff"),
                "reference": "qonnx.core.onnx_exec (ONNX Runtime cannot run Quant nodes)"}
    return {"opset": 13, "layout": "NCHW", "dtype": "float32", "batchnorm": "folded into Conv",
            "batch": "symbolic" if b.batch_axis else 1, "max_abs_diff_vs_pytorch": b.facts.get("onnx_max_abs_diff")}


def output_block(b: ZooBuild) -> dict:
    """What the model's output means: class logits of the image, or a detector's score map."""
    classes = b.data.classes
    if getattr(b.arch, "output_stride", None):
        return {"kind": "map", "stride": b.arch.output_stride, "background_class": 0, **b.facts.get("threshold", {}),
                "decision": "decode: per foreground class, 8-connected output cells with probability >= the "
                            "threshold are one detection (models/detect.py)",
                "layout": "ONNX (1, classes, h, w); the accelerator streams the cells row-major, each cell's "
                          "class scores together"}
    return {"kind": "logits", "decision": "argmax"} | ({"defective_class": 1} if len(classes) == 2 else {})


def build_zoo_model(out: str | Path, arch: ArchConfig, train_cfg: TrainConfig, augment_cfg: AugmentConfig,
                    name: str | None = None, progress: bool = True, data: TrainingData | None = None,
                    sizing: dict | None = None, steps: list[Callable[[ZooBuild], None]] = STEPS,
                    batch_axis: bool = False, init: dict | None = None, spec: InputSpec | None = None,
                    provenance: dict | None = None) -> ZooBuild:
    """Run ``steps`` (default: every one) on ``data`` (default: ELPV) into a temporary folder,
    then move it into place: no half-written model. ``arch`` is any config with ``build_model``,
    ``in_channels``, ``size``, ``num_classes`` and ``to_dict`` (the cloud model's too).

    Fine-tuning (``edgefpga retrain``) passes ``init``, the weights to start from, ``spec``, the
    model's own input spec (its normalization must not move under its weights), and
    ``provenance``, the card's record of what it was fine-tuned from."""
    out = Path(out)
    data = data if data is not None else elpv.training_data()
    if (arch.in_channels, arch.num_classes) != (data.channels, len(data.classes)):
        raise ArchitectureError(f"the architecture takes {arch.in_channels} channel(s) to {arch.num_classes} classes; "
                                f"the data has {data.channels} ({data.color}) and {len(data.classes)} classes")
    build = ZooBuild(name=name or out.name, out=out, arch=arch, train_cfg=train_cfg, augment_cfg=augment_cfg,
                     data=data, spec=spec or data_spec(arch, data), progress=progress, sizing=sizing,
                     batch_axis=batch_axis, init=init, provenance=provenance or {})
    with staged_folder(out) as staging:
        build.out = staging
        for step in steps:
            build.log(step.__name__)
            step(build)
    build.out = out
    return build
