"""What the ServerApp and the ClientApp share: the run's settings, weights as Flower
ArrayRecords, a site's data and its local epochs, and evaluation.

A site's local epochs are ``models.train.train`` started from the global weights (``init``),
with the run's fixed input normalization, no bias calibration and, for FedProx, the proximal
term: the same loop as ``edgefpga train``, not a copy. Only floating-point tensors travel (the
conv, BatchNorm and dense weights and BatchNorm's running statistics); BatchNorm's integer step
counter stays home, since averaging it means nothing.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


class FederationError(ValueError):
    """A run, site or message that cannot be used; the message names it and the reason."""


STRATEGIES = ("fedavg", "fedprox", "fedavgm")  # Flower's FedAvg, FedProx, FedAvgM (server momentum)


@dataclass(frozen=True)
class RunSettings:
    """The app config (``app/pyproject.toml`` [tool.flwr.app.config], ``flwr run --run-config``)."""

    rounds: int = 3
    local_epochs: int = 1
    fraction_train: float = 1.0
    min_train_nodes: int = 2
    min_available_nodes: int = 2
    strategy: str = "fedavg"
    proximal_mu: float = 0.01
    server_momentum: float = 0.5  # FedAvgM only: momentum of the server's update (Hsu et al. 2019)
    server_lr: float = 1.0  # FedAvgM only: the server's step along its momentum
    secagg_shares: int = 3  # app_secagg only: SecAgg+ secret shares per site (<= sites)
    secagg_threshold: int = 2  # app_secagg only: shares needed to reconstruct (sites that may drop: shares - this)
    secagg_clip: float = 8.0  # app_secagg only: every weight clipped to +-this before quantization
    dp_noise: float = 0.0  # > 0: Flower's server-side fixed-clipping DP, Gaussian noise of dp_noise * dp_clip
    dp_clip: float = 1.0  # the L2 norm each site's update is clipped to (with dp_noise > 0)
    size: int = 96
    widths: tuple[int, ...] = (8, 16, 32, 48, 64, 80)
    classes: tuple[str, ...] = ("functional", "defective")
    mean: float = 0.5
    std: float = 0.25
    batch_size: int = 32
    lr: float = 3e-3
    lr_schedule: str = "cosine"  # the local peak learning rate over the rounds: "cosine" decay or "constant"
    seed: int = 0
    test_frac: float = 0.0  # a site's own test part: none, see site_data
    val_frac: float = 0.15
    round_timeout: float = 600.0
    eval_limit: int = 0
    out_dir: str = ""

    @classmethod
    def from_run_config(cls, config: dict[str, Any]) -> "RunSettings":
        """Kebab-case Flower keys to fields; lists travel as comma-separated strings."""
        values = {k.replace("-", "_"): v for k, v in config.items()}
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise FederationError(f"run config: unknown key(s) {unknown}")
        if isinstance(values.get("widths"), str):
            values["widths"] = tuple(int(w) for w in values["widths"].split(","))
        if isinstance(values.get("classes"), str):
            values["classes"] = tuple(c.strip() for c in values["classes"].split(","))
        settings = cls(**values)
        if settings.strategy not in STRATEGIES:
            raise FederationError(f"run config: strategy {settings.strategy!r}: choose one of {', '.join(STRATEGIES)}")
        if settings.lr_schedule not in ("cosine", "constant"):
            raise FederationError(f"run config: lr-schedule {settings.lr_schedule!r}: choose cosine or constant")
        return settings

    def round_lr(self, server_round: int) -> float:
        """The peak learning rate of a round's local epochs. Each site's local run is a one-cycle
        schedule of its own; decaying its peak over the rounds (cosine) does for the federation what
        the one cycle does for centralized training: big steps first, small ones when the sites'
        updates should agree."""
        if self.lr_schedule == "constant" or self.rounds <= 1:
            return self.lr
        return self.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (server_round - 1) / (self.rounds - 1))))

    def arch(self):
        from edgefpga.models.arch import ArchConfig

        return ArchConfig(in_channels=1, size=self.size, widths=self.widths, num_classes=len(self.classes))

    def spec(self):
        """Every site normalizes alike (the run's mean/std, ELPV's 0.5/0.25 by default): per-site
        statistics would give each site another input for the same weights."""
        from edgefpga.models.train import input_spec

        return input_spec(self.arch(), "gray", self.mean, self.std)


def wire_keys(model) -> list[str]:
    """The state-dict entries that travel: floating-point tensors only."""
    return [k for k, v in model.state_dict().items() if v.dtype.is_floating_point]


def to_arrays(model):
    """The model's travelling weights as a Flower ArrayRecord (names kept: a site with another
    architecture is refused by name and shape, not by position)."""
    from flwr.app import Array, ArrayRecord

    state = model.state_dict()
    return ArrayRecord(OrderedDict((k, Array(state[k].detach().cpu().numpy().copy())) for k in wire_keys(model)))


def check_arrays(arrays: dict[str, np.ndarray], model, source: str) -> None:
    """Same names and shapes as ``model``'s travelling weights, every value finite."""
    state = model.state_dict()
    expected = {k: tuple(state[k].shape) for k in wire_keys(model)}
    got = {k: tuple(v.shape) for k, v in arrays.items()}
    if got != expected:
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
        raise FederationError(f"{source}: weights do not fit the run's architecture (missing {missing[:3]}, "
                              f"unexpected {extra[:3]}, other shape {wrong[:3]})")
    bad = [k for k, v in arrays.items() if not np.isfinite(v).all()]
    if bad:
        raise FederationError(f"{source}: non-finite weights in {bad[:3]}")


def load_arrays(arrays, settings: RunSettings, source: str = "global model"):
    """A model of the run's architecture holding ``arrays`` (an ArrayRecord or a name -> array dict)."""
    import torch

    from edgefpga.models.arch import build

    model = build(settings.arch())
    numpy = {k: (v.numpy() if hasattr(v, "numpy") else np.asarray(v)) for k, v in arrays.items()}
    check_arrays(numpy, model, source)
    state = model.state_dict()
    state.update({k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in numpy.items()})
    model.load_state_dict(state)
    return model.eval()


def initial_model(settings: RunSettings):
    """The round-0 global model: the architecture's seeded random initialization."""
    import torch

    from edgefpga.models.arch import build

    torch.manual_seed(settings.seed)
    return build(settings.arch())


def site_data(folder: str | Path, settings: RunSettings):
    """A site's folder read as ``edgefpga train`` reads it (same split rule), refused with the
    reason when it is missing, empty or holds other classes than the run's.

    A federation scores its models centrally (ELPV's test cells) and on the sites' validation
    parts, so by default (``test-frac`` 0) a site keeps no test part of its own: its images are
    either trained on or used to pick the round (on a 98-cell site, holding back 20 % as
    ``edgefpga train`` does left about 12 validation images to rank rounds by)."""
    from edgefpga.models.datasets import DatasetError
    from edgefpga.models.folder import training_data

    path = Path(folder)
    if not path.is_dir():
        raise FederationError(f"{path}: the site's data folder does not exist")
    if not any(path.iterdir()):
        raise FederationError(f"{path}: the site's data folder is empty (expected one subfolder of images per "
                              f"class: {', '.join(settings.classes)})")
    try:
        found = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")
                       and d.name != "unlabeled")
        if sorted(found) != sorted(settings.classes):
            raise FederationError(f"{path}: the site's classes {found} are not the federation's "
                                  f"{list(settings.classes)}: every site must label the same classes")
        return training_data(path, list(settings.classes), list(settings.classes[1:]), "gray", settings.seed,
                             settings.test_frac, settings.val_frac)
    except DatasetError as exc:
        raise FederationError(str(exc)) from exc


def local_train(model, data, settings: RunSettings, server_round: int, mu: float, lr: float | None = None):
    """The site's local epochs from the global ``model``: ``models.train.train`` with ``init``."""
    from edgefpga.models.augment import AugmentConfig
    from edgefpga.models.train import TrainConfig, train

    cfg = TrainConfig(epochs=settings.local_epochs, batch_size=settings.batch_size, lr=lr or settings.lr,
                      seed=settings.seed + 1000 * server_round, threads=1, proximal_mu=mu)
    return train(settings.arch(), cfg, AugmentConfig(), progress=False, data=data, spec=settings.spec(),
                 init=model.state_dict(), calibrate=False)


def evaluate(model, pixels: np.ndarray, labels: np.ndarray, settings: RunSettings) -> dict[str, float]:
    """Accuracy, balanced accuracy and defective F1 of ``model`` on resized uint8 ``pixels``."""
    from edgefpga.models.metrics import classification_metrics
    from edgefpga.models.train import predict_logits

    logits = predict_logits(model, pixels, settings.spec())
    m = classification_metrics(labels, logits.argmax(1), len(settings.classes), defect_classes=[1])
    return {k: float(m[k]) for k in ("accuracy", "balanced_accuracy", "f1_defective")} | {"n": int(len(labels))}


def resized(data, idx: np.ndarray, settings: RunSettings) -> np.ndarray:
    from edgefpga.models.preprocess import resize_batch

    return resize_batch(data.take(idx), settings.spec())


def central_test(settings: RunSettings) -> tuple[np.ndarray, np.ndarray]:
    """ELPV's fixed 654 test cells (DESIGN.md contract 3) at the run's input size, and labels."""
    from edgefpga.models import elpv

    data = elpv.training_data()
    idx = data.split.test[: settings.eval_limit or None]
    return resized(data, idx, settings), data.labels[idx]


def server_run(run_config: dict) -> tuple["RunSettings", Path]:
    """A ServerApp's settings and its output folder (made), or a FederationError naming what is
    missing: what both server apps (plain and SecAgg+) do first."""
    settings = RunSettings.from_run_config(dict(run_config))
    if not settings.out_dir:
        raise FederationError("run config: out-dir is empty (where the ServerApp writes the global model)")
    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return settings, out
