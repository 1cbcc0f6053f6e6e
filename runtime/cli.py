"""``edgefpga infer``: the runtime part of the command (edgefpga/cli.py).

`infer` needs only the runtime install (numpy, OpenCV, the Engine): what a board has.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: `infer` imports its parts inside the command
    from edgefpga.models.imagefiles import Skips
    from edgefpga.runtime.engine import Engine
    from edgefpga.runtime.inputs import Inputs


def user_errors() -> tuple[type[Exception], ...]:
    from edgefpga.models.card import ModelCardError
    from edgefpga.models.preprocess import ImageError
    from edgefpga.runtime.backends import EngineError

    return ModelCardError, ImageError, EngineError


def format_results_table(results: list, rows: int) -> list[str]:
    """The first ``rows`` results as an aligned table; with more than two classes, the top-k
    classes and their probabilities too."""
    many = bool(results) and len(results[0].classes) > 2
    width = max([12] + [len(c) for c in (results[0].classes if results else [])])
    lines = [f"{'image':<34} {'label':<{width}} {'score':>6} {'defective':>9} {'ms':>8} {'cycles':>8}"
             + ("  top-k" if many else "")]
    for r in results[:rows]:
        cycles = f"{r.cycles:,}" if r.cycles is not None else "-"
        top = "  " + ", ".join(f"{t['label']} {t['probability']:.2f}" for t in r.top_k) if many else ""
        lines.append(f"{r.source[-34:]:<34} {r.label:<{width}} {r.score:>6.3f} {r.defective!s:>9} "
                     f"{r.latency_ms:>8.2f} {cycles:>8}{top}")
    if len(results) > rows:
        lines.append(f"... {len(results) - rows} more (--rows N to show them, --csv FILE to save all)")
    return lines


def summary_lines(results: list, labels, classes: list[str]) -> list[str]:
    import numpy as np

    from edgefpga.models.metrics import classification_metrics

    ms = np.array([r.latency_ms for r in results])
    counts = ", ".join(f"{c} {sum(r.label == c for r in results)}" for c in classes)
    lines = [f"{len(results)} images: {counts}; {sum(r.defective for r in results)} defective "
             f"({', '.join(results[0].defect_classes)}); latency per image median {np.median(ms):.2f} ms, "
             f"p99 {np.percentile(ms, 99):.2f} ms (wall time, preprocessing included)"]
    cycles = [r.cycles for r in results if r.cycles is not None]
    if cycles:
        lines.append(f"accelerator: median {int(np.median(cycles)):,} cycles per frame, first pixel in to last score out")
    if labels is not None:
        defects = [classes.index(c) for c in results[0].defect_classes]
        m = classification_metrics(labels, np.array([r.label_index for r in results]), len(classes),
                                   defect_classes=defects)
        lines.append(f"against the labels: accuracy {m['accuracy']:.4f}, balanced accuracy {m['balanced_accuracy']:.4f}, "
                     f"F1 (defective) {m['f1_defective']:.4f}")
        if len(classes) > 2:
            lines.append("per class (precision/recall): " + ", ".join(
                f"{c} {row['precision']:.2f}/{row['recall']:.2f}" for c, row in zip(classes, m["per_class"])))
            lines += ["confusion matrix (rows: true, columns: predicted; class order as above)",
                      *(f"  {c:<{max(map(len, classes))}} {' '.join(f'{v:>5}' for v in row)}"
                        for c, row in zip(classes, m["confusion_matrix"]))]
    return lines


def cmd_infer(args: argparse.Namespace) -> int:
    import csv

    import edgefpga.runtime as rt
    from edgefpga.models.imagefiles import Skips
    from edgefpga.models.preprocess import ImageError
    from edgefpga.runtime.inputs import collect_inputs

    skips = Skips(strict=args.strict, command="edgefpga infer")
    with rt.open(args.model, backend=args.backend, defect_threshold=args.threshold, top_k=args.top_k) as engine:
        print(f"model {engine.describe()}", file=sys.stderr)
        inputs = collect_inputs(args.images, engine.classes)
        results, kept = infer_all(engine, inputs, skips, args)
    if not results:
        skips.exit_status()
        raise ImageError(f"{', '.join(args.images)}: none of the {len(inputs)} images is usable (each is named above)")
    for r, i in zip(results, kept):
        r.source = inputs.names[i]
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=1))
        return skips.exit_status()
    print("\n".join(format_results_table(results, args.rows)))
    labels = None if inputs.labels is None else inputs.labels[kept]
    print("\n".join(summary_lines(results, labels, engine.classes)))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(results[0].to_dict()))
            writer.writeheader()
            writer.writerows(r.to_dict() for r in results)
        print(f"wrote {args.csv}")
    return skips.exit_status()


def infer_all(engine: "Engine", inputs: "Inputs", skips: "Skips", args: argparse.Namespace) -> tuple[list, list[int]]:
    """Every usable input's result, and the index of each in ``inputs``: files are read as the
    stream reaches them, an unusable one is named and left out (``skips``), the rest go on."""
    from edgefpga.progress import progress_bar

    kept: list[int] = []
    with progress_bar(progress=not args.quiet, total=len(inputs), unit="img", desc=engine.backend_name) as bar:
        images = inputs.readable(skips, kept, on_each=bar.update)
        results = list(engine.stream(images, batch_size=args.batch))
    return results, kept


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infer", help="classify images with a model on a backend (board, RTL, emulator or ONNX)")
    p.add_argument("images", nargs="+", help="image files, folders (class subfolders give labels) or elpv:<subset>[:N]")
    p.add_argument("--model", default="elpv_defect", help="build folder, model folder or zoo name (default elpv_defect)")
    p.add_argument("--backend", default="auto", help="auto (default), pynq, rtl, emulator or onnx")
    p.add_argument("--threshold", type=float, default=0.5, help="defect probability threshold (default 0.5): a result "
                   "is defective when the probabilities of the card's defect_classes add up to at least this")
    p.add_argument("--top-k", type=int, default=3, help="classes listed per result, most probable first (default 3)")
    p.add_argument("--batch", type=int, help="images per backend call (default: the backend's)")
    p.add_argument("--rows", type=int, default=20, help="table rows to print (default 20)")
    p.add_argument("--csv", type=Path, help="write every result to this CSV file")
    p.add_argument("--json", action="store_true", help="print every result as JSON instead of the table")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--strict", action="store_true", help="stop at the first unusable image file (exit 2); by default "
                   "each is named with its reason, the rest are answered, and the exit status is 3")
    p.set_defaults(func=cmd_infer, user_errors=user_errors)

