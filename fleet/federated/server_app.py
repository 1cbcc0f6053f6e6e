"""The Flower ServerApp: Flower's own FedAvg or FedProx, with every site's update checked
before it is averaged, and each round's global model evaluated on ELPV's fixed test split.

What the ServerApp writes into the run's ``out-dir`` (on the SuperLink's machine):
``global.npz`` (the last good global model, rewritten after every round: if the SuperLink goes
away, the last good model stays), ``best.npz`` (the round's model that scored best on the sites'
validation images: what is exported), ``history.json`` (per round: central test scores, each site's
validation scores, which sites trained, failed or were refused, seconds) and ``received.json``
(what every reply carried: record types, names and array shapes; the privacy check reads it).
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg, FedAvgM, FedProx

from .task import (FederationError, RunSettings, central_test, server_run, check_arrays, evaluate, initial_model, load_arrays,
                   to_arrays)

app = ServerApp()


def manifest(msg: Message) -> dict:
    """What one reply carried, without its values: record kind, names, array shapes and dtypes."""
    if msg.has_error():
        return {"node": msg.metadata.src_node_id, "error": msg.error.reason}
    content = msg.content
    return {"node": msg.metadata.src_node_id,
            "arrays": {name: {k: {"shape": list(a.shape), "dtype": a.dtype} for k, a in rec.items()}
                       for name, rec in content.array_records.items()},
            "metrics": {name: sorted(rec) for name, rec in content.metric_records.items()},
            "configs": {name: {k: type(v).__name__ for k, v in rec.items()}
                        for name, rec in content.config_records.items()}}


class Guarded:
    """Mixed into Flower's strategies: a reply whose weights do not fit the architecture or are
    not finite is refused (logged with its node), so one broken site cannot corrupt the global
    model; an aggregate that is not finite is dropped and the previous global model kept."""

    def guard(self, template, settings: RunSettings) -> None:
        self.template, self.settings = template, settings
        self.rounds: dict[int, dict] = defaultdict(lambda: {"received": [], "received_evaluate": [], "failed": [],
                                                            "refused": []})

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        """Flower's sampling and messages, with this round's learning rate in the config."""
        config = ConfigRecord(dict(config) | {"lr": self.settings.round_lr(server_round)})
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies):
        replies, log = list(replies), self.rounds[server_round]
        usable = []
        for msg in replies:
            log["received"].append(manifest(msg))
            if msg.has_error():
                log["failed"].append({"node": msg.metadata.src_node_id, "reason": msg.error.reason})
                usable.append(msg)  # Flower logs and skips it
                continue
            try:
                arrays = {k: a.numpy() for k, a in msg.content["arrays"].items()}
                check_arrays(arrays, self.template, f"node {msg.metadata.src_node_id}")
                usable.append(msg)
            except (FederationError, KeyError) as exc:
                log["refused"].append({"node": msg.metadata.src_node_id, "reason": str(exc)})
        self.checked = [m for m in usable if not m.has_error()]
        arrays, metrics = super().aggregate_train(server_round, usable)
        if arrays is not None and not all(np.isfinite(a.numpy()).all() for a in arrays.values()):
            log["refused"].append({"node": None, "reason": "the aggregate is not finite: previous model kept"})
            arrays = None
        log["trained"] = sum(1 for m in usable if not m.has_error())
        return arrays, metrics

    def aggregate_evaluate(self, server_round: int, replies):
        replies = list(replies)
        sites = self.rounds[server_round].setdefault("sites", {})
        for msg in replies:
            self.rounds[server_round]["received_evaluate"].append(manifest(msg))
            if not msg.has_error():
                name = msg.content["site"]["name"]
                sites[name] = {k: float(v) for k, v in msg.content["metrics"].items()}
        return super().aggregate_evaluate(server_round, replies)


class GuardedFedAvg(Guarded, FedAvg):
    """FedAvg (McMahan et al. 2017), replies checked."""


class GuardedFedProx(Guarded, FedProx):
    """FedProx (Li et al. 2020): FedAvg's averaging, the proximal term at the sites."""


class GuardedFedAvgM(Guarded, FedAvgM):
    """FedAvgM (Hsu et al. 2019): the average taken as a pseudo-gradient the server follows with
    momentum. BatchNorm's running statistics are not gradients: momentum could push a variance
    below zero, so they take the plain average of the sites'."""

    def aggregate_train(self, server_round: int, replies):
        replies = list(replies)
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is None:
            return arrays, metrics
        plain, _ = FedAvg.aggregate_train(self, server_round, self.checked)  # the replies Guarded let through
        if plain is not None:
            stats = {k: plain[k] for k in arrays if ".running_" in k}
            arrays = ArrayRecord({k: stats.get(k, a) for k, a in arrays.items()})
            self.current_arrays = arrays
        return arrays, metrics


def make_strategy(settings: RunSettings, template) -> tuple[object, Guarded]:
    """(the strategy to start, the guarded one inside it): Flower's strategy with the run's
    fraction and minimum sites: a round waits for ``min-available-nodes`` sites and trains on
    ``max(fraction * connected, min-train-nodes)``; a site that drops out mid-round comes back as
    an error reply (its heartbeat stops) and the round averages the others. With ``dp-noise`` > 0
    it is wrapped in Flower's server-side fixed-clipping differential privacy: each site's update
    clipped to ``dp-clip`` (L2), Gaussian noise on the average (sampled sites: ``min-train-nodes``;
    no privacy accountant: the noise is applied, the epsilon not tracked)."""
    common = dict(fraction_train=settings.fraction_train, fraction_evaluate=1.0,
                  min_train_nodes=settings.min_train_nodes, min_evaluate_nodes=settings.min_train_nodes,
                  min_available_nodes=settings.min_available_nodes)
    if settings.strategy == "fedprox":
        strategy = GuardedFedProx(proximal_mu=settings.proximal_mu, **common)
    elif settings.strategy == "fedavgm":
        strategy = GuardedFedAvgM(server_momentum=settings.server_momentum, server_learning_rate=settings.server_lr,
                                  **common)
    else:
        strategy = GuardedFedAvg(**common)
    strategy.guard(template, settings)
    if settings.dp_noise > 0:
        return DifferentialPrivacyServerSideFixedClipping(strategy, settings.dp_noise, settings.dp_clip,
                                                          settings.min_train_nodes), strategy
    return strategy, strategy


def write_atomic(path: Path, text: str | None = None, arrays: dict | None = None) -> None:
    """Write beside ``path`` then rename: a reader (or a crash) never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    if arrays is not None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    else:
        tmp.write_text(text)
    os.replace(tmp, path)


def validation_score(sites: dict[str, dict]) -> float | None:
    """The sites' validation (accuracy + balanced accuracy) / 2, weighted by their sizes: the
    score ``models/train.py`` selects its epoch by, here over the federation's own validation data."""
    n = sum(s["num-examples"] for s in sites.values())
    if not n:
        return None
    return sum((s["accuracy"] + s["balanced-accuracy"]) / 2 * s["num-examples"] for s in sites.values()) / n


class RunLog:
    """history.json, received.json and the last good global model in the run's out-dir."""

    def __init__(self, out: Path, settings: RunSettings, strategy: Guarded):
        self.out, self.settings, self.strategy = out, settings, strategy
        self.rounds: list[dict] = []
        self.last = time.perf_counter()
        self.best: tuple[float, int] = (-1.0, 0)  # (validation score, round) of best.npz

    def round_done(self, server_round: int, arrays: ArrayRecord, test: dict) -> None:
        now = time.perf_counter()
        log = self.strategy.rounds.get(server_round, {})
        self.rounds.append({"round": server_round, "seconds": round(now - self.last, 2), "test": test,
                            "sites": log.get("sites", {}), "trained": log.get("trained", 0),
                            "failed": log.get("failed", []), "refused": log.get("refused", [])})
        self.last = now
        weights = {k: a.numpy() for k, a in arrays.items()}
        write_atomic(self.out / "global.npz", arrays=weights)
        score = validation_score(self.rounds[-1]["sites"])
        if score is not None and score > self.best[0]:
            self.best = (score, server_round)
            write_atomic(self.out / "best.npz", arrays=weights)
        self.write()

    def write(self) -> None:
        received = {r: {"train": v["received"], "evaluate": v["received_evaluate"]}
                    for r, v in self.strategy.rounds.items()}
        write_atomic(self.out / "received.json", json.dumps(received, indent=1) + "\n")
        write_atomic(self.out / "history.json", json.dumps(
            {"settings": self.settings.__dict__, "strategy": type(self.strategy).__name__.removeprefix("Guarded")
             + (f" + server-side DP (noise {self.settings.dp_noise}, clip {self.settings.dp_clip})"
                if self.settings.dp_noise > 0 else ""),
             "selected_round": self.best[1] if self.best[0] >= 0 else None,
             "selection": "the round whose global model scored best on the sites' validation images (mean of "
                          "accuracy and balanced accuracy, weighted by their sizes), as edgefpga train picks its "
                          "epoch", "rounds": self.rounds}, indent=1) + "\n")


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Rounds of Flower's strategy; after each, the global model on ELPV's test cells."""
    settings, out = server_run(context.run_config)
    template = initial_model(settings)
    strategy, guarded = make_strategy(settings, template)
    pixels, labels = central_test(settings)
    run_log = RunLog(out, settings, guarded)

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        scores = evaluate(load_arrays(arrays, settings), pixels, labels, settings)
        run_log.round_done(server_round, arrays, scores)
        print(f"round {server_round}: ELPV test accuracy {scores['accuracy']:.4f}, balanced "
              f"{scores['balanced_accuracy']:.4f}", flush=True)
        return MetricRecord({k.replace("_", "-"): v for k, v in scores.items()})

    strategy.start(grid=grid, initial_arrays=to_arrays(template), num_rounds=settings.rounds,
                   timeout=settings.round_timeout, train_config=ConfigRecord({"local-epochs": settings.local_epochs}),
                   evaluate_fn=evaluate_fn)
    run_log.write()
