"""EL images of whole PV modules, composed from real ELPV cells, with the defective cells' centres.

An electroluminescence image of a module is a grid of cells separated by dark gaps (the cells'
own busbars and edges are in the ELPV crops already). ELPV ships the cells cut out of 44 module
images, not the modules, so a detector's training and test images are composed here: a grid of
rows x cols cells (each cell a real ELPV cell, resized to the module's cell size with a small
per-cell gain, as neighbouring cells differ in brightness), dark gaps and a dark border between
them. The cells of a training module come from ELPV's train split (its fit part for the fit
modules, its validation part for the validation modules), those of a held-out module from ELPV's
test split (DESIGN.md's split): a held-out module shows no cell the detector was trained on.

Targets for a FOMO-style detector (models/detect.py): one class per output cell of the model at
its output stride: ``defective`` where the output cell lies within a quarter of a cell of a
defective cell's centre (at least the output cell holding the centre), ``background`` elsewhere.

Everything is drawn from ``numpy.random.default_rng(seed)``: the same seed gives the same modules.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from . import elpv
from .datasets import Split, TrainingData

CLASSES = ["background", "defective"]
# the shipped detector's settings (models/zoo/elpv_modules_detect): 160x160 in, output stride 8
# (a stride-2 stem, two 2x2 max-pools), a 20x20 map of two scores; no geometric augmentation (the
# targets are positions), class weights at power 0.5 (background outnumbers defects about 20:1)
DETECTOR = {"arch": {"size": 160, "widths": (12, 24, 32), "stem_stride": 2, "head": "map", "dropout": 0.1},
            "train": {"epochs": 30, "batch_size": 32, "lr": 3e-3, "class_balance": 0.5, "patience": 8},
            "augment": {"flip": False, "rotate_deg": 0.0, "translate": 0.0, "scale": 0.0},
            "modules": {"n_fit": 1200, "n_val": 200, "n_test": 200}}


@dataclass(frozen=True)
class ModuleConfig:
    """The ranges a module is drawn from (inclusive): grid (columns within one of the rows), cell
    size, gaps and border in pixels,
    and the cell-to-cell gain spread (EL intensity varies with each cell's current)."""

    rows: tuple[int, int] = (2, 4)
    cols: tuple[int, int] = (2, 4)
    cell_px: tuple[int, int] = (48, 80)
    gap_px: tuple[int, int] = (1, 6)
    border_px: tuple[int, int] = (2, 12)
    gain: float = 0.12  # each cell's pixels times 1 + U(-gain, gain)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Module:
    """One composed module image and where its cells are (image pixels)."""

    image: np.ndarray  # (H, W) uint8
    rows: int
    cols: int
    cell: int  # cell side in pixels
    centres: np.ndarray  # (rows*cols, 2) float: (x, y) of each cell's centre, row-major
    defective: np.ndarray  # (rows*cols,) bool
    cells: np.ndarray  # (rows*cols,) ELPV indices of the cells used

    @property
    def defect_centres(self) -> np.ndarray:
        """(K, 2) (x, y) of the defective cells' centres."""
        return self.centres[self.defective]


def compose(rng: np.random.Generator, pool: np.ndarray, data: elpv.ElpvData, cfg: ModuleConfig) -> Module:
    """One module from cells of ``pool`` (ELPV indices), drawn without replacement within the module."""
    rows = int(rng.integers(cfg.rows[0], cfg.rows[1] + 1))
    # cols within one of rows: the model's square input squeezes a long module's cells less
    cols = int(rng.integers(max(cfg.cols[0], rows - 1), min(cfg.cols[1], rows + 1) + 1))
    cell, gap, border = (int(rng.integers(lo, hi + 1)) for lo, hi in (cfg.cell_px, cfg.gap_px, cfg.border_px))
    chosen = rng.choice(pool, rows * cols, replace=False)
    height, width = 2 * border + rows * cell + (rows - 1) * gap, 2 * border + cols * cell + (cols - 1) * gap
    image = rng.integers(0, 12, (height, width)).astype(np.float32)  # the dark frame and gaps, with sensor noise
    centres = np.zeros((rows * cols, 2))
    gains = 1 + rng.uniform(-cfg.gain, cfg.gain, rows * cols)
    for k, index in enumerate(chosen):
        r, c = divmod(k, cols)
        y, x = border + r * (cell + gap), border + c * (cell + gap)
        pixels = cv2.resize(data.images[index], (cell, cell), interpolation=cv2.INTER_AREA).astype(np.float32)
        image[y:y + cell, x:x + cell] = pixels * gains[k]
        centres[k] = (x + (cell - 1) / 2, y + (cell - 1) / 2)
    return Module(np.clip(np.rint(image), 0, 255).astype(np.uint8), rows, cols, cell, centres,
                  data.labels[chosen].astype(bool), chosen)


def modules(subset: str, n: int, seed: int = 0, cfg: ModuleConfig | None = None,
            data: elpv.ElpvData | None = None) -> list[Module]:
    """``n`` modules whose cells come from ELPV's ``subset`` (fit, val, test or train)."""
    data = data or elpv.load()
    pool = elpv.subset(subset, data)
    rng = np.random.default_rng([seed, ["fit", "val", "test", "train"].index(subset)])
    cfg = cfg or ModuleConfig()
    return [compose(rng, pool, data, cfg) for _ in range(n)]


def target_map(module: Module, size: tuple[int, int], stride: int) -> np.ndarray:
    """(H/stride, W/stride) class index per output cell of a model with input ``size`` (h, w): 1
    (defective) within a quarter cell of a defective cell's centre, else 0 (background)."""
    h, w = size[0] // stride, size[1] // stride
    sy, sx = size[0] / module.image.shape[0], size[1] / module.image.shape[1]
    labels = np.zeros((h, w), np.int64)
    ys, xs = (np.arange(h) + 0.5) * stride, (np.arange(w) + 0.5) * stride  # output cell centres (model pixels)
    for x, y in module.defect_centres:
        cx, cy = (x + 0.5) * sx, (y + 0.5) * sy
        near_y = np.abs(ys - cy) <= module.cell * sy / 4
        near_x = np.abs(xs - cx) <= module.cell * sx / 4
        labels[np.ix_(near_y, near_x)] = 1
        labels[min(int(cy // stride), h - 1), min(int(cx // stride), w - 1)] = 1
    return labels


def training_data(size: int, stride: int, n_fit: int = 1200, n_val: int = 200, n_test: int = 200,
                  seed: int = 0, cfg: ModuleConfig | None = None) -> TrainingData:
    """Module images as a source of the one training pipeline: labels and targets are maps
    (N, H/stride, W/stride) of class indices and (N, classes, H/stride, W/stride) one-hot."""
    cfg = cfg or ModuleConfig()
    parts = {name: modules(name, n, seed, cfg) for name, n in (("fit", n_fit), ("val", n_val), ("test", n_test))}
    every = [m for name in ("fit", "val", "test") for m in parts[name]]
    labels = np.stack([target_map(m, (size, size), stride) for m in every])
    offsets = np.cumsum([0, n_fit, n_val, n_test])
    split = Split(*(np.arange(offsets[i], offsets[i + 1]) for i in range(3)))
    targets = np.eye(len(CLASSES), dtype=np.float32)[labels].transpose(0, 3, 1, 2)
    return TrainingData(
        classes=CLASSES, images=[m.image for m in every], labels=labels, split=split, color="gray",
        defect_classes=CLASSES[1:], targets=np.ascontiguousarray(targets), normalization=(0.5, 0.25),
        card={"task": "detect",
              "calibration": f"modules:fit:256:{seed}", "verification": f"modules:test:{n_test}:{seed}",
              "task_note": "where the defective cells of an EL module image are: one score per class per "
                           "output cell (FOMO-style centroid map), decoded into detections",
              "dataset": {
                  "name": "ELPV modules", "kind": "modules", "source": elpv.SOURCE, "license": elpv.LICENSE,
                  "license_note": "Trained on CC BY-NC-SA 4.0 data: these weights are for non-commercial use "
                                  "and derived works must be shared alike.",
                  "composition": "models/modules.py: grids of real ELPV cells; fit/val modules from ELPV's "
                                 "fit/val cells, test modules from ELPV's test split",
                  "modules": {"fit": n_fit, "val": n_val, "test": n_test, "seed": seed, "config": cfg.to_dict()},
                  "label": "a cell is defective when its expert defect probability is >= 0.5"}})


def recorded_modules(dataset: dict, subset: str = "test") -> list[Module]:
    """The modules of a card's ``dataset`` record (``training_data`` wrote it), rebuilt from its seed."""
    record = dataset["modules"]
    cfg = ModuleConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in record["config"].items()})
    return modules(subset, record[subset], record["seed"], cfg)


THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.30, 0.96, 0.05))  # the decode thresholds tried on validation


def choose_threshold(scores: np.ndarray, found: list[Module], classes: list[str], stride: int) -> dict:
    """The decode threshold with the best F1 of defective cells on ``found`` (the validation
    modules, never the test ones): a detector trained with class weights over-calls defects at
    0.5, and on a map the operating point is this threshold (the node's ``defect_threshold``)."""
    rows = {t: detect_modules(scores, found, classes, stride, t) for t in THRESHOLDS}
    best = max(THRESHOLDS, key=lambda t: (rows[t]["f1"], -abs(t - 0.5)))
    return {"threshold": best, "validation": rows[best], "rule": "best F1 of defective cells on the validation "
            f"modules over thresholds {THRESHOLDS[0]}..{THRESHOLDS[-1]}"}


def detect_modules(scores: np.ndarray, found: list[Module], classes: list[str], stride: int,
                   threshold: float = 0.5) -> dict:
    """Precision and recall of defective cells (within half a cell) of (N, classes, h, w) score
    maps on ``found`` modules."""
    from .detect import decode, detection_metrics, match

    counts = []
    for s, m in zip(scores, found):
        hits = decode(s, classes, stride, m.image.shape[:2], threshold)
        counts.append(match([(d.x, d.y) for d in hits], m.defect_centres, m.cell))
    return detection_metrics(counts)


def select(spec: str) -> list[Module]:
    """The modules of an image source ``modules:<fit|val|test|train>:<N>[:<seed>]`` (default
    configuration): how convert, verify and the bench name a set of module images."""
    parts = spec.removeprefix("modules:").split(":")
    if len(parts) not in (2, 3) or parts[0] not in ("fit", "val", "test", "train") or not all(
            p.isdigit() for p in parts[1:]):
        raise ValueError(f"{spec}: expected modules:<fit|val|test|train>:<N>[:<seed>]")
    return modules(parts[0], int(parts[1]), int(parts[2]) if len(parts) == 3 else 0)


def evaluate_detector(model_dir, dataset: dict, classes: list[str], stride: int) -> tuple[dict, dict]:
    """(the threshold chosen on the validation modules, precision and recall on the test modules at
    it) of the detector in ``model_dir`` through ONNX Runtime: what its card records."""
    from .card import load_card
    from .evaluate import predict_scores

    card = load_card(model_dir)
    val, test = recorded_modules(dataset, "val"), recorded_modules(dataset, "test")
    chosen = choose_threshold(predict_scores(card, [m.image for m in val]), val, classes, stride)
    scores = predict_scores(card, [m.image for m in test])
    return chosen, detect_modules(scores, test, classes, stride, chosen["threshold"]) | {
        "threshold": chosen["threshold"], "at_0.5": detect_modules(scores, test, classes, stride, 0.5)}
