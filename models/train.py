"""Training of the FPGA-sized inspection CNN: the one training loop, for ELPV and a user's folder.

The data comes in as ``datasets.TrainingData`` (``elpv.training_data()`` when none is given, or
``folder.training_data(...)``); nothing here knows which source it is.

Choices and why:
- soft targets: where the data has a target distribution (ELPV: the experts' defect probability
  0, 1/3, 2/3, 1), it is the target, so uncertain cells pull less than certain ones; else one-hot;
- optional distillation: with ``teachers``, ``teacher_weight`` of the loss is cross-entropy
  against the teachers' mean prediction on the same augmented image, see ``teacher.py``. That
  term gets no class weights: the teachers were trained class-weighted already, and weighting
  their predictions again would shift the student's decision towards ``defective`` twice;
- class weights: defective cells are a third of ELPV (and rare defect types rarer in a user's
  folder) and the line cares about every recall;
- an exponential moving average (EMA) of the weights (its span at most a tenth of the run) is
  what gets evaluated and exported, which is steadier on a 1.7k-image training set than the last
  step's weights;
- maps: a detector (``head="map"``) has a class per output cell, so its labels are (N, h, w)
  maps and its targets (N, classes, h, w); the loss, the class weights (background outnumbers a
  rare defect class many times over), model selection and calibration then count output cells
  where a classifier counts images (``per_cell``); a map's logit bias is not calibrated;
- model selection on a validation part of the train split (never the test split), with early
  stopping when ``patience`` epochs bring no better validation score; then, for two classes, the
  class-1 logit bias is calibrated on that validation part and folded into the dense layer, so
  argmax on the accelerator gives the calibrated decision.
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from . import elpv
from .arch import ArchConfig
from .augment import AugmentConfig, augment
from .card import InputSpec
from .datasets import TrainingData
from .metrics import classification_metrics
from .preprocess import resize_batch
from .teacher import TeacherEnsemble


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 200
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 5e-4
    soft_targets: bool = True
    class_balance: float = 1.0  # 0: none, 1: inverse frequency, in between: its power
    ema_decay: float = 0.995
    label_smoothing: float = 0.0
    mixup: float = 0.0  # Beta(a, a) mixing of image pairs and their targets; 0 disables
    teachers: tuple[str, ...] = ()  # model folders whose mean prediction is a second target
    teacher_weight: float = 0.5
    seed: int = 0
    threads: int = 2
    limit: int | None = None  # train on the first N fit images only (smoke tests)
    patience: int = 0  # stop after this many epochs without a better validation score; 0: run every epoch
    proximal_mu: float = 0.0  # FedProx: mu/2 * ||w - w_start||^2 keeps a site's local epochs near the global model

    def __post_init__(self):
        object.__setattr__(self, "teachers", tuple(str(t) for t in self.teachers))  # JSON gives a list

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    model: torch.nn.Module
    best_epoch: int
    val_metrics: dict
    logit_bias: float | None  # None: not calibrated (more than two classes)
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    teachers: list[dict] = field(default_factory=list)  # name and ONNX sha256 of each teacher
    class_weights: list[float] = field(default_factory=list)
    epochs_run: int = 0  # fewer than configured when early stopping ended the run
    ema_decay: float = 0.0  # the decay used (ema_decay: at most a tenth of the run)


def input_spec(arch: ArchConfig, color: str = "gray", mean=0.5, std=0.25) -> InputSpec:
    """The card input of a trained model: area resize, pixels scaled to about zero mean (ELPV's
    fixed 0.5/0.25, or per-channel statistics of a user's images). A QAT model's pixels are
    scaled by 1/256 (a power of two: its input quantizer then reads what the accelerator's input
    affine computes exactly, models/quant.py)."""
    from .quant import INPUT_SCALE

    return InputSpec(channels=arch.in_channels, height=arch.size, width=arch.size, color=color,
                     resize="area", scale=INPUT_SCALE if getattr(arch, "qat", None) else 1 / 255, mean=mean, std=std)


def data_spec(arch: ArchConfig, data: TrainingData) -> InputSpec:
    """The input spec for ``data``: its own normalization, else the per-channel mean and std of
    the fit images at the model's size (so a dark or tinted image set starts near zero mean)."""
    if data.normalization is not None:
        return input_spec(arch, data.color, *data.normalization)
    pixels = resize_batch(data.take(data.split.fit), input_spec(arch, data.color)).astype(np.float64) / 255
    mean = tuple(round(float(v), 4) for v in pixels.mean(axis=(0, 2, 3)))
    std = tuple(max(round(float(v), 4), 1e-3) for v in pixels.std(axis=(0, 2, 3)))
    return input_spec(arch, data.color, mean, std)


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed)
    return torch.Generator().manual_seed(seed)


def training_targets(data: TrainingData, idx: np.ndarray, soft: bool) -> torch.Tensor:
    """Target distribution per image (per output cell for map labels): the data's own (ELPV's
    [1-p, p]) where it has one and ``soft`` asks for it, else one-hot of the label."""
    if soft and data.targets is not None:
        return torch.from_numpy(np.ascontiguousarray(data.targets[idx], dtype=np.float32))
    onehot = np.eye(len(data.classes), dtype=np.float32)[data.labels[idx]]
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(onehot, -1, 1)))  # classes on axis 1, as logits


def per_cell(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, classes) logits and (N,) labels as they are; a map model's (N, classes, h, w) logits and
    (N, h, w) labels as one row per output cell: what metrics and calibration count."""
    if logits.ndim == 2:
        return logits, labels
    return np.moveaxis(logits, 1, -1).reshape(-1, logits.shape[1]), labels.reshape(-1)


def along_classes(weights: torch.Tensor, ndim: int) -> torch.Tensor:
    """Per-class weights shaped to broadcast over axis 1 of an ``ndim``-dimensional tensor."""
    return weights.view(1, -1, *([1] * (ndim - 2)))


def class_weights(labels: np.ndarray, power: float, num_classes: int = 2) -> torch.Tensor:
    """Inverse class frequency to ``power``, normalized to mean 1."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    w = (counts.sum() / (len(counts) * np.maximum(counts, 1))) ** power
    return torch.tensor(w / w.mean(), dtype=torch.float32)


def to_input(pixels01: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """Pixels in [0, 1] to the normalized network input (same formula as the card)."""
    if isinstance(spec.mean, tuple) or isinstance(spec.std, tuple):
        mean = torch.tensor(spec.channel_mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(spec.channel_std, dtype=torch.float32)[:, None, None]
        return (pixels01 * (255 * spec.scale) - mean) / std
    return (pixels01 * (255 * spec.scale) - spec.mean) / spec.std


@torch.no_grad()
def predict_logits(model: torch.nn.Module, pixels: np.ndarray, spec: InputSpec, batch: int = 256) -> np.ndarray:
    """Logits for uint8 (N, C, H, W) pixels, in eval mode."""
    model.eval()
    out = [model(to_input(torch.from_numpy(pixels[i:i + batch]).float() / 255, spec))
           for i in range(0, len(pixels), batch)]
    return torch.cat(out).numpy()


def calibrate_bias(logits: np.ndarray, labels: np.ndarray) -> float:
    """Offset for the defective logit that maximises mean(accuracy, balanced accuracy) on
    validation; the smallest such offset in magnitude, to move the decision no more than needed."""
    margin = logits[:, 1] - logits[:, 0]
    candidates = np.concatenate([[0.0], -margin + 1e-4, -margin - 1e-4])
    best, best_score = 0.0, -1.0
    for delta in sorted(candidates, key=abs):
        m = classification_metrics(labels, (margin + delta > 0).astype(int))
        score = (m["accuracy"] + m["balanced_accuracy"]) / 2
        if score > best_score + 1e-9:
            best, best_score = float(delta), score
    return best


def fold_logit_bias(model: torch.nn.Module, delta: float) -> None:
    """Add ``delta`` to the defective class's dense bias: argmax then applies the calibration."""
    with torch.no_grad():
        model.classifier.bias[1] += delta


def mixup(x: torch.Tensor, target: torch.Tensor, alpha: float, gen: torch.Generator):
    """Blend each sample with a shuffled partner; targets blend with the same weights."""
    lam = torch.distributions.Beta(alpha, alpha).sample((x.shape[0],)).clamp(0.5, 1.0)
    partner = torch.randperm(x.shape[0], generator=gen)
    x = lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * x[partner]
    lam = lam.view(-1, *([1] * (target.ndim - 1)))
    return x, lam * target + (1 - lam) * target[partner]


def ema_decay(configured: float, total_steps: int) -> float:
    """The configured decay, shortened so the average spans at most a tenth of the run: on a
    few hundred images (a few hundred steps) 0.995 would still be mostly the random start.
    ELPV's shipped runs (10k+ steps) keep 0.995 exactly."""
    return min(configured, max(0.0, 1 - 10 / total_steps))


def epoch_bar(epochs: int, progress: bool):
    """A tqdm bar on a terminal; elsewhere (a log file, CI) the plain epochs, and ``log_epoch``
    prints one line each instead of carriage-return updates."""
    from edgefpga.progress import progress_bar

    return progress_bar(range(epochs), progress=progress and sys.stderr.isatty(), desc="train", unit="epoch")


def log_epoch(bar, progress: bool, row: dict, best_epoch: int, epochs: int) -> None:
    if bar.disable:
        if progress:
            print(f"train: epoch {row['epoch']}/{epochs} loss {row['loss']:.3f} val_acc {row['val_accuracy']:.4f} "
                  f"val_bal {row['val_balanced_accuracy']:.4f} best {best_epoch}", flush=True)
        return
    bar.set_postfix(loss=f"{row['loss']:.3f}", val_acc=row["val_accuracy"], val_bal=row["val_balanced_accuracy"],
                    best=best_epoch)


def proximal_term(model: torch.nn.Module, anchor: list[torch.Tensor] | None, mu: float) -> torch.Tensor | float:
    """FedProx's mu/2 * ||w - w_start||^2 over the trainable weights (0 without a start point)."""
    if not anchor or not mu:
        return 0.0
    return mu / 2 * sum(((p - p0) ** 2).sum() for p, p0 in zip(model.parameters(), anchor))


def stats_batches(model: torch.nn.Module, x_fit: torch.Tensor, spec: InputSpec, batch_size: int):
    """The fit images in order, without augmentation, as many batches as the model's quantizers
    collect statistics over (``quant.collect_stats_steps``), cycling through the fit part: no draw
    from the training generator, so the training run itself is the float recipe's."""
    from .quant import collect_stats_steps

    n = len(x_fit)
    for step in range(collect_stats_steps(model)):
        idx = torch.arange(step * batch_size, (step + 1) * batch_size) % n
        yield to_input(x_fit[idx].float() / 255, spec)


def train(arch: ArchConfig, cfg: TrainConfig, aug: AugmentConfig, progress: bool = True,
          data: TrainingData | None = None, spec: InputSpec | None = None, init: dict | None = None,
          calibrate: bool = True) -> TrainResult:
    """Train on the fit part of ``data`` (default: ELPV), keep the EMA snapshot with the best
    validation score, stop early after ``cfg.patience`` epochs without a better one.

    ``init`` (a state dict) starts from given weights instead of random ones: a federated site's
    local epochs from the global model (fleet/federated), with ``cfg.proximal_mu`` for FedProx.
    ``calibrate=False`` leaves the logit bias as trained: a site's update must not fold its own
    decision threshold into the weights that the server averages."""
    start = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    gen = seed_everything(cfg.seed)
    data = data if data is not None else elpv.training_data()
    fit = data.split.fit[: cfg.limit] if cfg.limit else data.split.fit
    spec = spec or data_spec(arch, data)
    x_fit = torch.from_numpy(resize_batch(data.take(fit), spec))
    y_fit = training_targets(data, fit, cfg.soft_targets)
    x_val = resize_batch(data.take(data.split.val), spec)
    y_val = data.labels[data.split.val]
    num_classes = len(data.classes)
    weights = class_weights(data.labels[fit].reshape(-1), cfg.class_balance, num_classes)
    teacher = TeacherEnsemble(list(cfg.teachers), spec) if cfg.teachers else None

    model = arch.build_model()  # the edge CNN (FPGA budget checked) or another config's net
    if init is not None:
        model.load_state_dict(init)
    anchor = [p.detach().clone() for p in model.parameters()] if init is not None and cfg.proximal_mu else None
    prepare = getattr(model, "prepare_training", None)  # a QAT net: its quantizers' scales from statistics first
    if prepare is not None and init is None:
        prepare(stats_batches(model, x_fit, spec, cfg.batch_size))
    steps_per_epoch = max(1, len(fit) // cfg.batch_size)
    decay = ema_decay(cfg.ema_decay, cfg.epochs * steps_per_epoch)
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay), use_buffers=True)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, epochs=cfg.epochs,
                                                steps_per_epoch=steps_per_epoch, pct_start=0.15)
    best = {"score": -1.0}
    history: list[dict] = []
    bar = epoch_bar(cfg.epochs, progress)
    for epoch in bar:
        model.train()
        order = torch.randperm(len(fit), generator=gen)
        losses = []
        for step in range(steps_per_epoch):
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            x = to_input(augment(x_fit[idx].float() / 255, aug, gen), spec)
            target = y_fit[idx]
            if cfg.label_smoothing:
                target = target * (1 - cfg.label_smoothing) + cfg.label_smoothing / num_classes
            if cfg.mixup:
                x, target = mixup(x, target, cfg.mixup, gen)
            logp = F.log_softmax(model(x), dim=1)
            loss = -(target * logp * along_classes(weights, logp.ndim)).sum(1).mean() + \
                proximal_term(model, anchor, cfg.proximal_mu)
            if teacher:
                distill = -(teacher.probabilities(x) * logp).sum(1).mean()
                loss = (1 - cfg.teacher_weight) * loss + cfg.teacher_weight * distill
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            ema.update_parameters(model)
            losses.append(loss.item())
        logits, labels = per_cell(predict_logits(ema.module, x_val, spec), y_val)
        m = classification_metrics(labels, logits.argmax(1), num_classes)
        score = (m["accuracy"] + m["balanced_accuracy"]) / 2
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_accuracy": m["accuracy"],
                        "val_balanced_accuracy": m["balanced_accuracy"]})
        if score > best["score"]:
            best = {"score": score, "epoch": epoch + 1, "state": copy.deepcopy(ema.module.state_dict())}
        log_epoch(bar, progress, history[-1], best["epoch"], cfg.epochs)
        if cfg.patience and epoch + 1 - best["epoch"] >= cfg.patience:
            break

    model.load_state_dict(best["state"])
    delta = None
    # a binary classifier's decision threshold; argmax of many classes stays as trained, and so does a
    # map's (its detections have their own threshold, the engine's defect_threshold)
    if num_classes == 2 and calibrate and y_val.ndim == 1:
        delta = calibrate_bias(*per_cell(predict_logits(model, x_val, spec), y_val))
        fold_logit_bias(model, delta)
    logits, labels = per_cell(predict_logits(model, x_val, spec), y_val)
    val_metrics = classification_metrics(labels, logits.argmax(1), num_classes, defect_classes=data.defect_indices)
    return TrainResult(model=model.eval(), best_epoch=best["epoch"], val_metrics=val_metrics, logit_bias=delta,
                       history=history, seconds=time.perf_counter() - start,
                       teachers=teacher.provenance if teacher else [],
                       class_weights=[round(float(w), 4) for w in weights], epochs_run=len(history),
                       ema_decay=decay)
