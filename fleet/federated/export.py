"""The final global model of a federated run as a model folder: ONNX, checks, test metrics and
a card holding its federated history, through the zoo pipeline's own steps (models/zoo_build.py)
minus training; from there it goes down the same road as any model (edgefpga convert, verify,
models register).

The card's dataset is ELPV (the sites are ELPV's train part, the test is its 654 cells), so
``edgefpga eval`` re-evaluates it; the ``federated`` block says how it was trained: strategy,
rounds, sites and their sizes, the partition record's seed, and every round's scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .task import FederationError, RunSettings, load_arrays


def read_run(run_dir: Path, last: bool = False) -> tuple[dict, dict]:
    """(history, global weights) a ServerApp wrote: the round selected on the sites' validation
    images (``best.npz``), or with ``last`` (or no selection yet) the last round's."""
    history, weights = run_dir / "history.json", run_dir / "global.npz"
    if not last and (run_dir / "best.npz").is_file():
        weights = run_dir / "best.npz"
    if not history.is_file() or not weights.is_file():
        raise FederationError(f"{run_dir}: no federated run here (history.json and global.npz are written by the "
                              "ServerApp, edgefpga fed run --out)")
    with np.load(weights) as f:
        return json.loads(history.read_text()), {k: f[k] for k in f.files}


def settings_of(history: dict) -> RunSettings:
    values = dict(history["settings"])
    values["widths"], values["classes"] = tuple(values["widths"]), tuple(values["classes"])
    return RunSettings(**values)


def site_validation(last: dict) -> dict:
    """The last round's validation scores, weighted by each site's validation size (card's
    ``metrics.validation``)."""
    sites = last.get("sites", {})
    n = sum(s["num-examples"] for s in sites.values())
    if not n:
        return {"accuracy": 0.0, "balanced_accuracy": 0.0, "f1_defective": 0.0, "n": 0}
    avg = {k: sum(s[k.replace("_", "-")] * s["num-examples"] for s in sites.values()) / n
           for k in ("accuracy", "balanced_accuracy", "f1_defective")}
    return avg | {"n": int(n)}


def federated_block(history: dict, partition: Path | None) -> dict:
    rounds = history["rounds"]
    block = {"engine": "Flower deployment engine (SuperLink + SuperNodes, TLS)", "strategy": history["strategy"],
             "rounds": len(rounds) - 1, "local_epochs": history["settings"]["local_epochs"],
             "selected_round": history.get("selected_round"), "selection": history.get("selection"),
             "what_travelled": "model weights (float tensors) and per-site scores; no images",
             "history": [{"round": r["round"], "test_accuracy": r["test"]["accuracy"],
                          "test_balanced_accuracy": r["test"]["balanced_accuracy"], "trained_sites": r["trained"],
                          "failed": len(r["failed"]), "refused": len(r["refused"]), "seconds": r["seconds"],
                          "sites_val_accuracy": {k: v["accuracy"] for k, v in r["sites"].items()}}
                         for r in rounds]}
    if partition is not None and partition.is_file():
        record = json.loads(partition.read_text())
        block["partition"] = {"file": str(partition), "seed": record["seed"], "limit": record.get("limit"),
                              "sites": {k: v["summary"] for k, v in record["sites"].items()}}
    return block


def export_run(run_dir: str | Path, out: str | Path, name: str | None = None, partition: str | Path | None = None,
               progress: bool = True, last: bool = False):
    """Write ``out`` (model.onnx, card.json, rounds.png) from the run in ``run_dir``."""
    from dataclasses import replace

    from edgefpga.models import elpv, zoo_build
    from edgefpga.models.augment import AugmentConfig
    from edgefpga.models.datasets import staged_folder
    from edgefpga.models.train import TrainConfig, TrainResult

    run_dir, out = Path(run_dir), Path(out)
    history, weights = read_run(run_dir, last)
    settings = settings_of(history)
    model = load_arrays(weights, settings, f"{run_dir / 'global.npz'}")
    data = elpv.training_data()
    dataset = data.card["dataset"] | {"training": "federated: ELPV's train part split into sites (partition.json); "
                                                  "the test split is the contract's 654 cells"}
    data = replace(data, card=data.card | {"dataset": dataset})
    rounds = len(history["rounds"]) - 1
    cfg = TrainConfig(epochs=rounds * settings.local_epochs, batch_size=settings.batch_size, lr=settings.lr,
                      seed=settings.seed, threads=1, proximal_mu=settings.proximal_mu if settings.strategy == "fedprox"
                      else 0.0)
    chosen = rounds if last or history.get("selected_round") is None else history["selected_round"]
    result = TrainResult(model=model, best_epoch=chosen, val_metrics=site_validation(history["rounds"][chosen]),
                         logit_bias=None, history=[], seconds=sum(r["seconds"] for r in history["rounds"]),
                         epochs_run=rounds * settings.local_epochs)
    build = zoo_build.ZooBuild(name=name or out.name, out=out, arch=settings.arch(), train_cfg=cfg,
                               augment_cfg=AugmentConfig(), data=data, spec=settings.spec(), progress=progress,
                               result=result, provenance={"federated": federated_block(history, partition and
                                                                                        Path(partition))})
    steps = [s for s in zoo_build.STEPS if s not in (zoo_build.step_train, zoo_build.step_plot)]
    with staged_folder(out) as staging:
        build.out = staging
        for step in steps:
            build.log(step.__name__)
            step(build)
        (staging / "history.json").write_text(json.dumps(history["rounds"], indent=1) + "\n")
        plot_rounds({"federated": history["rounds"]}, staging / "rounds.png")
    build.out = out
    return build


def plot_rounds(runs: dict[str, list[dict]], png: Path, baselines: dict[str, float] | None = None,
                sites: bool = True) -> None:
    """ELPV test accuracy per round (one line per run), the sites' validation accuracy dotted
    (``sites``; off for many runs in one plot), and flat lines for baselines (centralized, sites alone)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, rounds in runs.items():
        ax.plot([r["round"] for r in rounds], [r["test"]["accuracy"] for r in rounds], marker="o",
                label=f"{label}: ELPV test")
        for site in sorted({s for r in rounds for s in r["sites"]}) if sites else ():
            pts = [(r["round"], r["sites"][site]["accuracy"]) for r in rounds if site in r["sites"]]
            ax.plot(*zip(*pts), linestyle=":", alpha=0.7, label=f"{label}: {site} validation")
    for label, value in (baselines or {}).items():
        ax.axhline(value, linestyle="--", linewidth=1, color="gray")
        ax.annotate(label, (0, value), fontsize=7, va="bottom")
    ax.set_xlabel("round")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
