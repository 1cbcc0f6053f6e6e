"""``edgefpga train`` and ``edgefpga eval``: the models part of the command (edgefpga/cli.py).

Torch and the dataset load inside the commands, so that declaring them costs nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from edgefpga.cli import UserError, given

if TYPE_CHECKING:  # annotations only: the commands import their parts when they run
    from edgefpga.models.imagefiles import Skips


def user_errors() -> tuple[type[Exception], ...]:
    from edgefpga.models.card import ModelCardError
    from edgefpga.models.datasets import DatasetError
    from edgefpga.models.preprocess import ImageError

    return ModelCardError, ImageError, DatasetError


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


FOLDER_OPTIONS = ("classes", "defect_classes", "color", "test_frac", "val_frac", "split_seed")


def training_data(args: argparse.Namespace, skips: Skips | None = None):
    """ELPV, or the user's folder / CSV read with the split and class options; unusable image
    files go to ``skips`` (imagefiles.Skips)."""
    from edgefpga.models import elpv, folder

    if args.dataset == "elpv":
        used = [f"--{o.replace('_', '-')}" for o in FOLDER_OPTIONS if getattr(args, o) not in (None, False)]
        if used:
            raise UserError(f"{', '.join(used)}: for a folder or CSV; ELPV has its fixed classes and contract split")
        return elpv.training_data()
    if not Path(args.dataset).exists():
        raise UserError(f"unknown dataset {args.dataset!r}: not 'elpv' and no such folder or CSV file")
    split = given(args, "test_frac", "val_frac") | ({"seed": args.split_seed} if args.split_seed is not None else {})
    return folder.training_data(args.dataset, args.classes, args.defect_classes, "bgr" if args.color else None,
                                **split, skips=skips)


def augment_config(args: argparse.Namespace, base: dict, is_elpv: bool):
    """ELPV keeps its recorded augmentation; a user's images get only exposure jitter unless
    --flip / --rotate allow the geometric changes (a flipped or turned part can be another defect)."""
    from edgefpga.models.augment import AugmentConfig

    geometric = {} if is_elpv else {"flip": False, "rotate_deg": 0.0, "translate": 0.0, "scale": 0.0}
    asked = ({"flip": True} if args.flip else {}) | ({"rotate_deg": args.rotate} if args.rotate is not None else {})
    return AugmentConfig(**base | geometric | asked)


def size_for_board(args: argparse.Namespace, in_channels: int, classes: int) -> tuple[dict, dict | None]:
    """--board with --fps or --macs: the input size and widths the converter's planner projects
    to meet them on the board (hw/sizing.py), and the record for the card; (what the user set,
    None) without --board. --dry-run prints every candidate."""
    if not args.board:
        if args.fps or args.macs or args.dry_run:
            raise UserError("--fps, --macs and --dry-run size the model for a board: add --board (e.g. pynq-z2)")
        return {}, None
    from edgefpga.hw.boards import get_board
    from edgefpga.hw.onnx_check import ConversionError
    from edgefpga.hw.sizing import SizingError, candidates, choose, format_candidates
    from edgefpga.models.arch import MAX_MACS, MAX_PARAMS

    try:
        board = get_board(args.board)
    except ConversionError as exc:
        raise UserError(str(exc)) from exc
    found = candidates(board, args.fps or 0.0, in_channels, classes, MAX_PARAMS, args.macs or MAX_MACS)
    try:
        chosen = choose(found, board, args.fps or 0.0)
    except SizingError as exc:
        if args.dry_run:
            print(format_candidates(found, None))
        raise UserError(str(exc)) from exc
    print(f"sizing for {board.name} at {board.clock_mhz:g} MHz" + (f", {args.fps:,.0f} frames/s" if args.fps else "")
          + (f", at most {args.macs:,} MACs" if args.macs else "") + ":", flush=True)
    print(format_candidates(found, chosen), flush=True)
    record = {"board": board.name, "clock_mhz": board.clock_mhz, "fps_target": args.fps, "max_macs": args.macs,
              "budget": {"dsp": int(board.dsp), "bram36": int(board.bram36), "lut": int(board.lut)},
              "chosen": chosen.to_dict(), "candidates": len(found),
              "method": "the converter's planner (hw/plan.py plan_layers) on the architecture's layers, every "
                        "resource from each layer's hardware model (hw/layers) at 12-bit widths (hw/sizing.py)"}
    return {"size": chosen.size, "widths": tuple(chosen.widths)}, record


def cmd_train(args: argparse.Namespace) -> int:
    from edgefpga.models.arch import ArchConfig
    from edgefpga.models.imagefiles import Skips
    from edgefpga.models.train import TrainConfig
    from edgefpga.models.quant import parse_qat
    from edgefpga.models.zoo_build import QAT_STEPS, STEPS, build_zoo_model

    if not args.out and not args.dry_run:
        raise UserError("--out: the model folder to write is needed (or --dry-run to see the sizing only)")
    if args.qat:
        parse_qat(args.qat)  # a bad width: one line before any data loads
    if args.dataset == MODULES:
        if args.qat:
            raise UserError("--qat: the detector (a map head) has no quantized twin yet; train a classifier")
        return train_detector(args)
    skips = Skips(strict=args.strict, command="edgefpga train")
    data = training_data(args, skips)
    is_elpv = args.dataset == "elpv"
    print(f"data: {len(data.labels)} images, classes {data.classes} (defective: {data.defect_classes}), "
          f"{data.color}, split {data.split.sizes()}", flush=True)
    for note in data.card["dataset"].get("conversions", []):
        print(f"data: {note}", flush=True)
    base = recorded_configs(args.like) if args.like else {"arch": {}, "train": {}, "augment": {}}
    if args.board and (args.size or args.widths):
        raise UserError("--board picks --size and --widths for the frame rate: give one or the other")
    sized, sizing = size_for_board(args, data.channels, len(data.classes))
    if args.dry_run:
        return skips.exit_status()
    widths = {"widths": tuple(args.widths)} if args.widths else {}
    shape = {"in_channels": data.channels, "num_classes": len(data.classes)}
    qat = {"qat": parse_qat(args.qat).name} if args.qat else {}
    arch = ArchConfig(**base["arch"] | given(args, "size", "stem_stride") | widths | sized | shape | qat)
    teachers = {"teachers": tuple(args.teacher)} if args.teacher else {}
    patience = {} if is_elpv or args.like else {"patience": 10}
    cfg = TrainConfig(**base["train"] | patience | given(args, "epochs", "seed", "threads", "limit", "teacher_weight",
                                                          "patience") | teachers)
    build = build_zoo_model(args.out, arch, cfg, augment_config(args, base["augment"], is_elpv), name=args.name,
                            data=data, sizing=sizing, steps=QAT_STEPS if arch.qat else STEPS)
    test = build.facts["test"]
    print(f"wrote {build.out}/model.onnx and card.json: test accuracy {test['accuracy']:.4f}, "
          f"balanced {test['balanced_accuracy']:.4f}")
    if len(data.classes) > 2:
        print("per class (precision/recall): " + ", ".join(
            f"{c} {m['precision']:.2f}/{m['recall']:.2f}" for c, m in zip(data.classes, test["per_class"])))
    return skips.exit_status()


MODULES = "elpv-modules"  # the detector's data: EL module images composed from ELPV cells (models/modules.py)


def train_detector(args: argparse.Namespace) -> int:
    """``edgefpga train elpv-modules``: the FOMO-style detector on composed module images, through
    the same steps as every model plus its detections on the held-out modules."""
    from edgefpga.models import modules
    from edgefpga.models.arch import ArchConfig
    from edgefpga.models.augment import AugmentConfig
    from edgefpga.models.train import TrainConfig
    from edgefpga.models.zoo_build import DETECT_STEPS, build_zoo_model

    d = modules.DETECTOR
    arch = ArchConfig(**d["arch"] | given(args, "size", "stem_stride") |
                      ({"widths": tuple(args.widths)} if args.widths else {}) | {"num_classes": len(modules.CLASSES)})
    counts = d["modules"] | ({"n_fit": args.limit} if args.limit else {})
    data = modules.training_data(arch.size, arch.output_stride, seed=args.seed or 0, **counts)
    print(f"data: {len(data.labels)} module images, {arch.size}x{arch.size} in, {data.labels.shape[1]}x"
          f"{data.labels.shape[2]} output cells, split {data.split.sizes()}", flush=True)
    cfg = TrainConfig(**d["train"] | given(args, "epochs", "seed", "threads", "patience"))
    build = build_zoo_model(args.out, arch, cfg, AugmentConfig(**d["augment"]), name=args.name, data=data,
                            steps=DETECT_STEPS)
    det = build.facts["detection"]
    print(f"wrote {build.out}/model.onnx and card.json: defective cells on {det['images']} held-out modules: "
          f"precision {det['precision']:.4f}, recall {det['recall']:.4f}")
    return 0


def cmd_export_elpv(args: argparse.Namespace) -> int:
    from edgefpga.models.folder import export_elpv

    written = export_elpv(args.out, args.bins, args.split, args.limit, args.seed)
    print(f"wrote {sum(written.values())} PNGs to {args.out}: " + ", ".join(f"{k} {n}" for k, n in written.items()))
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
    p = sub.add_parser("train", help="train a model on ELPV or your own folder of images and write a model folder")
    p.add_argument("dataset", help="elpv, elpv-modules (the detector: module images composed from ELPV cells), a folder with one subfolder of images per class (or train/ val/ test/ "
                   "holding such subfolders: your own split), or a CSV of path,label rows")
    p.add_argument("--out", type=Path, help="model folder to write (model.onnx, card.json); needed unless --dry-run")
    p.add_argument("--name", help="model name in the card (default: the folder name)")
    p.add_argument("--like", metavar="MODEL", help="start from the settings recorded in MODEL's card "
                   "(e.g. elpv_defect to retrain the shipped model); other options override them")
    p.add_argument("--epochs", type=int, help="training epochs (default: the shipped model's)")
    p.add_argument("--patience", type=int, help="stop after N epochs without a better validation score "
                   "(default: 10 for a folder, off for ELPV; 0: off)")
    p.add_argument("--size", type=int, help="input height and width in pixels")
    p.add_argument("--widths", type=int, nargs="+", help="conv block widths, 2x2 max-pool between blocks")
    p.add_argument("--stem-stride", type=int, choices=[1, 2],
                   help="stride of the first conv (2: full-resolution input at half the compute)")
    s = p.add_argument_group("sized for a board (the converter's planner projects the frame rate)")
    s.add_argument("--board", help="pick --size and --widths for this board (pynq-z2, zcu104, kv260, zcu102)")
    s.add_argument("--fps", type=float, help="frames per second the accelerator must reach at the board clock")
    s.add_argument("--macs", type=int, help="at most this many multiply-accumulates per image")
    s.add_argument("--dry-run", action="store_true", help="print the candidates (params, MACs, projected "
                   "frames/s, DSPs, BRAM) and the choice, train nothing")
    p.add_argument("--qat", metavar="WxAy", help="quantization-aware training with Brevitas at these widths "
                   "(x weight bits, y activation bits, each 2-8, e.g. W4A4, W8A8, W4A8): model.onnx is then a QONNX "
                   "file that convert builds with its own widths (docs/models.md)")
    p.add_argument("--seed", type=int, help="training seed")
    p.add_argument("--threads", type=int, help="CPU threads for PyTorch")
    p.add_argument("--limit", type=int, help="train on the first N images only (quick checks)")
    p.add_argument("--teacher", action="append", metavar="MODEL",
                   help="distil from this model folder or zoo name (repeat for an ensemble)")
    p.add_argument("--teacher-weight", type=float, help="weight of the teachers' term in the loss (default 0.5)")
    g = p.add_argument_group("your own data (a folder or CSV)")
    g.add_argument("--classes", nargs="+", metavar="NAME", help="class order, the good class first "
                   "(default: sorted names)")
    g.add_argument("--defect-classes", nargs="+", metavar="NAME",
                   help="the classes that count as defective (default: all but the first)")
    g.add_argument("--color", action="store_true", help="train a colour (BGR) model even if the images are gray "
                   "(default: colour only when some image is)")
    g.add_argument("--test-frac", type=float, help="test part of each class (default 0.2; ignored with your own "
                   "train/ test/ folders)")
    g.add_argument("--val-frac", type=float, help="validation part of the rest (default 0.15)")
    g.add_argument("--split-seed", type=int, help="seed of the stratified split, recorded in the card (default 0)")
    g.add_argument("--flip", action="store_true", help="augment with horizontal and vertical flips (off by default "
                   "for your data: only where a flipped image shows the same class)")
    g.add_argument("--rotate", type=float, metavar="DEG", help="augment with rotations up to DEG degrees "
                   "(off by default for your data)")
    g.add_argument("--strict", action="store_true", help="stop at the first unusable image file (exit 2); by default "
                   "each is named and left out before the split (card dataset.skipped), exit status 3 at the end")
    p.set_defaults(func=cmd_train, user_errors=train_errors)

    p = sub.add_parser("data", help="prepare training data (export-elpv: ELPV as a folder of PNGs per class)")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    e = data_sub.add_parser("export-elpv", help="write ELPV cells as <out>/<class>/elpv_<index>.png, as a user's "
                            "folder would be (then: edgefpga train <out>)",
                            description="Bins: type-defect (mono_functional, mono_defective, poly_functional, "
                            "poly_defective), defect (functional, defective), type (mono, poly) or level "
                            "(level_0of3 .. level_3of3: the expert defect probability). 'defective' is the "
                            "project's ELPV rule: expert defect probability >= 0.5 (2/3 and 1); 'functional' is "
                            "0 and 1/3. The data is CC BY-NC-SA 4.0 (non-commercial).")
    e.add_argument("out", type=Path, help="folder to write (replaced if it exists; written in full or not at all)")
    e.add_argument("--bins", default="type-defect", choices=["type-defect", "defect", "type", "level"],
                   help="how cells are sorted into class folders (default type-defect)")
    e.add_argument("--split", action="store_true", help="write train/ val/ test/ folders with the project's "
                   "contract split (numbers then compare with the shipped model's)")
    e.add_argument("--limit", type=int, help="at most N cells per class (and part), a seeded sample")
    e.add_argument("--seed", type=int, default=0, help="seed of the --limit sample (default 0)")
    p.set_defaults(func=cmd_export_elpv, user_errors=user_errors)

    p = sub.add_parser("eval", help="evaluate a model folder with ONNX Runtime on the data its card records "
                       "(ELPV or your folder)")
    p.add_argument("model", help="model folder (model.onnx + card.json) or zoo name")
    p.add_argument("--subset", default="test", choices=["test", "val", "fit", "train"])
    p.add_argument("--confusion-png", type=Path, help="also save the confusion matrix as a PNG")
    p.add_argument("--json", action="store_true", help="print metrics as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval, user_errors=user_errors)
