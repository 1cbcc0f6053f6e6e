"""``edgefpga train`` and ``edgefpga eval``: the models part of the command (edgefpga/cli.py).

Torch and the dataset load inside the commands, so that declaring them costs nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgefpga.cli import UserError, given


def user_errors() -> tuple[type[Exception], ...]:
    from edgefpga.models.card import ModelCardError
    from edgefpga.models.preprocess import ImageError

    return ModelCardError, ImageError


def train_errors() -> tuple[type[Exception], ...]:
    from edgefpga.models.arch import ArchitectureError

    return (*user_errors(), ArchitectureError)


def recorded_configs(model: str) -> dict:
    """Architecture, training and augmentation settings recorded in a model's card."""
    from edgefpga.models.card import ModelCardError, load_card

    from edgefpga.models.card import resolve_model_dir

    card = load_card(resolve_model_dir(model))
    try:
        arch = dict(card.raw["architecture"])
        arch["widths"] = tuple(arch["widths"])
        return {"arch": arch, "train": card.raw["training"]["config"], "augment": card.raw["training"]["augment"]}
    except (KeyError, TypeError) as exc:
        raise ModelCardError(f"{card.path}: no training record to copy ({exc})") from exc


def cmd_train(args: argparse.Namespace) -> int:
    from edgefpga.models.arch import ArchConfig
    from edgefpga.models.augment import AugmentConfig
    from edgefpga.models.train import TrainConfig
    from edgefpga.models.zoo_build import build_zoo_model

    if args.dataset != "elpv":
        raise UserError(f"unknown dataset {args.dataset!r}: only 'elpv' is built in")
    base = recorded_configs(args.like) if args.like else {"arch": {}, "train": {}, "augment": {}}
    widths = {"widths": tuple(args.widths)} if args.widths else {}
    arch = ArchConfig(**base["arch"] | given(args, "size", "stem_stride") | widths)
    teachers = {"teachers": tuple(args.teacher)} if args.teacher else {}
    cfg = TrainConfig(**base["train"] | given(args, "epochs", "seed", "threads", "limit", "teacher_weight") | teachers)
    build = build_zoo_model(args.out, arch, cfg, AugmentConfig(**base["augment"]), name=args.name)
    print(f"wrote {build.out}/model.onnx and card.json: test accuracy {build.facts['test']['accuracy']:.4f}, "
          f"balanced {build.facts['test']['balanced_accuracy']:.4f}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from edgefpga.models.card import REFERENCE_SHAPE, load_card, resolve_model_dir
    from edgefpga.models.evaluate import evaluate, format_report

    model_dir = resolve_model_dir(args.model)
    card = load_card(model_dir)
    if card.raw.get("purpose") == REFERENCE_SHAPE:
        raise UserError(f"{card.name} is a reference shape with random weights (no task to evaluate): convert and "
                        "verify it instead (edgefpga convert, edgefpga verify)")
    metrics = evaluate(model_dir, args.subset, progress=not args.quiet, confusion_png=args.confusion_png)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(format_report(card.name, metrics, card.classes))
        if args.confusion_png:
            print(f"confusion matrix plot: {args.confusion_png}")
    if args.subset == "test":
        expected = {k: card.test_metrics[k] for k in ("accuracy", "balanced_accuracy", "f1_defective", "n")}
        got = {k: metrics[k] for k in expected}
        if got != expected and not args.json:
            print(f"note: the card records {expected}; this run gives {got}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on a built-in dataset and write a model folder")
    p.add_argument("dataset", help="dataset name (elpv)")
    p.add_argument("--out", required=True, type=Path, help="model folder to write (model.onnx, card.json)")
    p.add_argument("--name", help="model name in the card (default: the folder name)")
    p.add_argument("--like", metavar="MODEL", help="start from the settings recorded in MODEL's card "
                   "(e.g. elpv_defect to retrain the shipped model); other options override them")
    p.add_argument("--epochs", type=int, help="training epochs (default: the shipped model's)")
    p.add_argument("--size", type=int, help="input height and width in pixels")
    p.add_argument("--widths", type=int, nargs="+", help="conv block widths, 2x2 max-pool between blocks")
    p.add_argument("--stem-stride", type=int, choices=[1, 2],
                   help="stride of the first conv (2: full-resolution input at half the compute)")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="CPU threads for PyTorch")
    p.add_argument("--limit", type=int, help="train on the first N images only (quick checks)")
    p.add_argument("--teacher", action="append", metavar="MODEL",
                   help="distil from this model folder or zoo name (repeat for an ensemble)")
    p.add_argument("--teacher-weight", type=float, help="weight of the teachers' term in the loss (default 0.5)")
    p.set_defaults(func=cmd_train, user_errors=train_errors)

    p = sub.add_parser("eval", help="evaluate a model folder on ELPV with ONNX Runtime")
    p.add_argument("model", help="model folder (model.onnx + card.json) or zoo name")
    p.add_argument("--subset", default="test", choices=["test", "val", "fit", "train"])
    p.add_argument("--confusion-png", type=Path, help="also save the confusion matrix as a PNG")
    p.add_argument("--json", action="store_true", help="print metrics as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval, user_errors=user_errors)
