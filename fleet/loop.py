"""``edgefpga demo --collab`` (``make demo-collab``): the edge-cloud learning loop of issue 15, end to end.

1. *Start*: an edge model trained by the pipeline on a fraction of ELPV's fit split (``fraction``),
   converted, verified (RTL bit-exact on a sample) and registered as ``champion`` in an MLflow
   registry of the run's own (``<out>/registry``).
2. *Each round*: the next part of the rest of the fit split streams through the champion as the
   inspection node runs it, at a camera's ``rate_hz``: the Engine (``onnx`` backend: the float
   model, whose verdicts the verified RTL matches up to the fixed point), ``HardExampleFilter``
   (Sedna's cross-entropy confidence under ``hard_threshold``, at most ``escalation_budget`` of
   the cells: fleet/mining.py ``EscalationBudget``), escalation of each hard cell, as
   its frame arrives, to the cloud model through ``CloudClient`` and ``CloudService`` on a real
   Zenoh session on loopback (bytes counted), and
   every hard cell into the ``SampleStore`` with both outputs. The operator's label is the ELPV
   expert label (``labels="operator"``) or none, leaving the cloud's (``labels="cloud"``).
   Then ``edgefpga retrain`` (fleet/retrain.py: fine-tune with replay, gates on the validation
   split and the store's held-out hard samples, convert, verify, register, promote: no gate
   reads a test cell), and the line swaps to the new champion (fetched from the registry as a
   node's hot swap does) before the next part streams.
3. *Per round*: edge-only, cloud-only and joint accuracy on the 654 contract test cells (reported:
   they choose nothing; the threshold comes from validation cells too), the share
   of the streamed cells escalated and the bytes sent to the cloud; printed, plotted
   (``collab_loop.png``) and written to ``collab_loop.json`` with the commit.

The node itself is not started: the loop calls the same engine, filter, client and store the
node calls (ros_nodes/escalation.py), without DDS in between, because a ROS process per round
would spend the CPU budget on start-up; the node's hot swap and escalation are tested over real
DDS in tests/ros. The run fails (exit 1) when the edge model's test accuracy does not rise from
the start to the last round.

The cloud model is ``elpv_cloud`` when its weights are here (``make train-cloud``); without them
the shipped edge model ``elpv_defect`` (trained on the whole training split) stands in as the
cloud, and the output says so.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgefpga.provenance import git_commit

ROOT = Path(__file__).resolve().parent.parent
MODEL_NAME = "elpv_edge_loop"
CELL = "cell-1"  # the loop's one inspection cell: its identity in the site certificates


def default_cloud() -> str:
    """The cloud service's default models, comma-separated (imported late: zenoh is the fleet extra)."""
    from edgefpga.fleet.cloud import DEFAULT_MODELS

    return ",".join(DEFAULT_MODELS)


@dataclass
class LoopConfig:
    out: Path = Path("demo_out/collab")
    results: Path = ROOT / "bench" / "results"
    fraction: float = 0.2  # of ELPV's fit split the start model sees
    rounds: int = 3
    stream: int = 900  # cells of the rest of the fit split streamed over all rounds (0: all of them)
    size: int = 32  # a small edge model keeps four conversions within minutes (see docs/fleet.md)
    widths: tuple[int, ...] = (8, 8, 16, 16)
    base_epochs: int = 30
    epochs: int = 8
    hard_threshold: float | None = None  # None: the start model's validation confidence quantile at escalate_share
    escalate_share: float = 0.2  # the share of validation cells the start model escalates (issue 15: <= 20 %)
    escalation_budget: float = 0.2  # at most this share of a stream's cells escalate (fleet.mining; 0: no cap)
    labels: str = "operator"
    cloud: str = field(default_factory=default_cloud)  # comma-separated: an ensemble
    deadline_s: float = 2.0
    rate_hz: float = 30.0  # the camera: hard cells escalate as their frames arrive, not all at once
    verify_sample: int = 16
    calibration_images: int = 1024  # fewer miss the 99.5 % agreement bar on a low-margin model
    threads: int = 2
    seed: int = 0
    progress: bool = False


@dataclass
class Round:
    round: int
    model: str
    edge_accuracy: float
    cloud_accuracy: float
    joint_accuracy: float
    joint_escalated_share_test: float
    streamed: int = 0
    escalated: int = 0
    escalated_share: float = 0.0
    bytes_sent: int = 0
    cloud_answered: int = 0
    retrain: dict = field(default_factory=dict)
    seconds: float = 0.0


def say(message: str) -> None:
    print(f"[collab] {message}", flush=True)


def cloud_model_dir(name: str) -> tuple[str, str]:
    """The cloud model's folders (comma-separated: an ensemble, fleet/cloud.py ``CloudModel``) whose
    weights are here, or the stand-in when none are, and a line saying which."""
    from edgefpga.models.card import MODEL_FILE, resolve_model_dir

    members = [m for m in name.split(",") if m]
    present = [m for m in members if (resolve_model_dir(m) / MODEL_FILE).is_file()]
    missing = "" if len(present) == len(members) else (
        f" ({', '.join(m for m in members if m not in present)}: weights absent, make train-cloud makes them)")
    if present:
        return ",".join(present), f"cloud model {'+'.join(present)}{missing}"
    return "elpv_defect", (f"cloud model {'+'.join(members)}: its weights are absent (make train-cloud makes them); "
                           "the shipped edge model elpv_defect, trained on the whole training split, stands in as "
                           "the cloud")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_model(cfg: LoopConfig, registry_uri: str) -> Path:
    """Train the start model on the fraction, convert, verify, register, promote: v1 champion."""
    from edgefpga.fleet.registry import ModelRegistry
    from edgefpga.fleet.retrain import convert_and_verify
    from edgefpga.models import elpv
    from edgefpga.models.arch import ArchConfig
    from edgefpga.models.augment import AugmentConfig
    from edgefpga.models.train import TrainConfig
    from edgefpga.models.zoo_build import build_zoo_model

    limit = int(round(cfg.fraction * len(elpv.subset("fit"))))
    model = cfg.out / "start" / "model"
    build_zoo_model(model, ArchConfig(size=cfg.size, widths=cfg.widths),
                    TrainConfig(epochs=cfg.base_epochs, limit=limit, threads=cfg.threads, seed=cfg.seed),
                    AugmentConfig(), name=MODEL_NAME, progress=cfg.progress)
    convert_and_verify(model, cfg.out / "start" / "build", cfg.calibration_images, cfg.verify_sample, cfg.progress)
    registry = ModelRegistry(registry_uri)
    version = registry.register(model, cfg.out / "start" / "build")
    registry.promote(version.version, version.name)
    return model


def stream_order(cfg: LoopConfig) -> list[np.ndarray]:
    """The fit cells the start model did not see, shuffled once (seeded), in one part per round."""
    from edgefpga.models import elpv

    fit = elpv.subset("fit")
    rest = fit[int(round(cfg.fraction * len(fit))):]
    rest = np.random.default_rng(cfg.seed).permutation(rest)[: cfg.stream or None]
    return np.array_split(rest, cfg.rounds)


class Line:
    """What the inspection node does with each frame (ros_nodes/escalation.py): the engine's
    verdict, the hard filter, escalation to the cloud over Zenoh, the store. The link is the
    default a site runs: mutual TLS with the site's certificates (made in ``site``, one service and
    one cell identity), answers signed, and retrain learns from the service's labels only."""

    def __init__(self, cfg: LoopConfig, cloud: str, store_path: Path, site: Path):
        from edgefpga.fleet.cloud import CloudModel, CloudService, open_session
        from edgefpga.fleet.store import SampleStore
        from edgefpga.fleet.trust import Credentials, make_site

        info = make_site(site, [CELL])
        self.site, self.cell = site, Credentials.of(site, CELL)
        endpoint = f"tls/127.0.0.1:{free_port()}"
        self.cloud_model = CloudModel(cloud.split(","), providers=["CPUExecutionProvider"], threads=cfg.threads)
        service = Credentials.of(site, info["service"])
        self.server = open_session(listen=[endpoint], credentials=service)
        self.service = CloudService(self.server, self.cloud_model, credentials=service)
        self.session = open_session(connect=[endpoint], credentials=self.cell)
        self.filter = None  # set once the threshold is known
        self.store = SampleStore(store_path)
        self.cfg = cfg
        time.sleep(0.5)  # the peers connect and learn the queryables

    def close(self) -> None:
        self.store.close()
        self.service.close()
        self.session.close()
        self.server.close()

    def stream(self, engine, version: str, images: list, truth: list[str]) -> dict:
        """One part of the stream through the line; what was escalated and sent."""
        from edgefpga.fleet.cloud import CloudClient
        from edgefpga.fleet.store import CloudOutput, EdgeOutput

        client = CloudClient(self.session, self.cfg.deadline_s, classes=list(engine.classes), edge_model=version,
                             credentials=self.cell)
        results = engine.infer(images)  # the accelerator's verdicts: microseconds a frame, so taken at once
        hard = [i for i, r in enumerate(results) if self.filter.is_hard(r)]
        futures, start = {}, time.perf_counter()
        for i in hard:  # each hard cell leaves when its frame would have arrived at rate_hz
            time.sleep(max(0.0, start + i / self.cfg.rate_hz - time.perf_counter()))
            futures[i] = client.submit(images[i], edge_scores=list(results[i].scores))
        answered = 0
        for i, future in futures.items():
            answer = future.result()
            cloud = None
            if answer.answered:
                answered += 1
                cloud = CloudOutput(answer.label, list(answer.classes), list(answer.probabilities), answer.model_id,
                                    answer.service_identity)
            operator = truth[i] if self.cfg.labels == "operator" else None
            self.store.add(images[i], EdgeOutput.from_result(results[i], version), cloud=cloud, escalated=True,
                           true_label=operator, labeled_by="operator (ELPV expert label)" if operator else None,
                           source="collab loop")
        return {"streamed": len(images), "escalated": len(hard), "escalated_share": round(len(hard) / len(images), 4),
                "bytes_sent": int(client.counts.get("bytes_sent", 0)), "cloud_answered": answered}


def hard_filter(cfg: LoopConfig):
    """The line's hard-example filter, afresh for each stream (the node's is renewed when its model
    is swapped): under the threshold, within the escalation budget."""
    from edgefpga.fleet.mining import EscalationBudget, HardExampleFilter

    budget = EscalationBudget(cfg.escalation_budget) if cfg.escalation_budget > 0 else None
    return HardExampleFilter("cross_entropy", cfg.hard_threshold, budget)


def test_accuracies(engine, cloud_probs: np.ndarray, images: list, labels: np.ndarray, cfg: LoopConfig) -> dict:
    """Edge-only, cloud-only and joint (hard cells decided by the cloud) accuracy on the test cells,
    streamed in their fixed order through the line's filter."""
    line_filter = hard_filter(cfg)
    results = engine.infer(images)
    edge = np.array([r.label_index for r in results])
    hard = np.array([line_filter.is_hard(r) for r in results])
    cloud = cloud_probs.argmax(1)
    joint = np.where(hard, cloud, edge)
    return {"edge_accuracy": round(float(np.mean(edge == labels)), 4),
            "cloud_accuracy": round(float(np.mean(cloud == labels)), 4),
            "joint_accuracy": round(float(np.mean(joint == labels)), 4),
            "joint_escalated_share_test": round(float(hard.mean()), 4)}


def validation_threshold(engine, share: float) -> float:
    """The confidence under which ``share`` of ELPV's validation cells fall (never test cells)."""
    from edgefpga.models import elpv

    images = list(elpv.load().images[elpv.subset("val")])
    confidence = np.array([r.confidence for r in engine.infer(images)])
    return round(float(np.quantile(confidence, share)), 6)


def open_champion(registry_uri: str):
    """The line's engine on the registry's champion, fetched as a node's hot swap fetches it."""
    from edgefpga.fleet.registry import ModelRegistry
    from edgefpga.runtime import open_engine

    folder, version = ModelRegistry(registry_uri).fetch(f"registry:{MODEL_NAME}@champion")
    return open_engine(folder / "model", backend="onnx"), f"{version.name} v{version.version}"


def run_loop(cfg: LoopConfig) -> dict:
    import shutil

    from edgefpga.fleet.retrain import RetrainConfig, retrain, trusted_labelers
    from edgefpga.models import elpv

    started = time.perf_counter()
    if cfg.out.exists():
        shutil.rmtree(cfg.out)
    cfg.out.mkdir(parents=True)
    registry_uri = f"sqlite:///{(cfg.out / 'registry' / 'mlflow.db').resolve()}"
    cloud, cloud_line = cloud_model_dir(cfg.cloud)
    say(cloud_line)
    data = elpv.load()
    test_idx = elpv.subset("test")
    test_images, test_labels = list(data.images[test_idx]), data.labels[test_idx]
    names = ["functional", "defective"]
    say(f"start: training {MODEL_NAME} on {cfg.fraction:.0%} of the fit split, converting, verifying, registering")
    start_model(cfg, registry_uri)
    timings = {"start_model": round(time.perf_counter() - started, 1)}
    say(f"start model ready in {timings['start_model']:.0f} s")
    line = Line(cfg, cloud, cfg.out / "store", cfg.out / "site")
    say(f"cloud link: mutual TLS with the site certificates in {line.site}; labels trusted from "
        f"{', '.join(trusted_labelers(line.site))}")
    rounds: list[Round] = []
    try:
        cloud_probs = np.concatenate([line.cloud_model.probabilities(test_images[i:i + 32])
                                      for i in range(0, len(test_images), 32)])
        engine, version = open_champion(registry_uri)
        if cfg.hard_threshold is None:
            cfg.hard_threshold = validation_threshold(engine, cfg.escalate_share)
            say(f"hard threshold {cfg.hard_threshold:.4f}: the start model escalates {cfg.escalate_share:.0%} of the "
                "validation cells")
        if cfg.escalation_budget > 0:
            say(f"escalation budget {cfg.escalation_budget:.0%}: at most that share of a stream's cells escalate, "
                "the least confident")
        rounds.append(Round(0, version, **test_accuracies(engine, cloud_probs, test_images, test_labels, cfg)))
        say(row_line(rounds[-1]))
        for r, part in enumerate(stream_order(cfg), start=1):
            mark = time.perf_counter()
            line.filter = hard_filter(cfg)
            sent = line.stream(engine, version, list(data.images[part]), [names[k] for k in data.labels[part]])
            result = retrain(RetrainConfig(
                store=cfg.out / "store", model=f"registry:{MODEL_NAME}@champion", out=cfg.out / f"round{r}",
                registry=registry_uri, epochs=cfg.epochs, labels="any" if cfg.labels == "cloud" else "operator",
                promote=True, verify_sample=cfg.verify_sample, calibration_images=cfg.calibration_images,
                threads=cfg.threads, seed=cfg.seed + r, progress=cfg.progress,
                labelers=trusted_labelers(line.site)), log=say)
            engine.close()
            engine, version = open_champion(registry_uri)  # the swap: the new champion, or the old one kept
            rounds.append(Round(r, version, **test_accuracies(engine, cloud_probs, test_images, test_labels, cfg),
                                **sent,
                                retrain={"outcome": result.outcome, "reason": result.reason, "version": result.version,
                                         "gates": [asdict(g) for g in result.gates], "seconds": result.seconds,
                                         "reported": result.reported},
                                seconds=round(time.perf_counter() - mark, 1)))
            say(row_line(rounds[-1]))
        engine.close()
    finally:
        line.close()
    return summary(cfg, rounds, cloud, cloud_line, timings | {"total": round(time.perf_counter() - started, 1)})


def row_line(row: Round) -> str:
    head = (f"round {row.round}: {row.model}: test accuracy edge {row.edge_accuracy:.4f}, cloud {row.cloud_accuracy:.4f}, "
            f"joint {row.joint_accuracy:.4f} ({row.joint_escalated_share_test:.1%} of test cells escalated)")
    if not row.round:
        return head
    return (head + f"; streamed {row.streamed}, escalated {row.escalated} ({row.escalated_share:.1%}), "
            f"{row.bytes_sent / 1e6:.2f} MB sent to the cloud; retrain {row.retrain['outcome']}: "
            f"{row.retrain['reason']} ({row.seconds:.0f} s)")


def summary(cfg: LoopConfig, rounds: list[Round], cloud: str, cloud_line: str, timings: dict) -> dict:
    rise = rounds[-1].edge_accuracy - rounds[0].edge_accuracy
    checks = {"edge_accuracy_rises": rise > 0,
              "every_promoted_version_verified": all(r.retrain.get("outcome") in ("registered", "rejected")
                                                     for r in rounds[1:])}
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    return {"config": config, "cloud_model": cloud, "cloud_note": cloud_line,
            "rounds": [asdict(r) for r in rounds], "edge_accuracy_rise": round(rise, 4), "seconds": timings,
            "checks": checks, "passed": all(checks.values()), "commit": git_commit(),
            "machine": f"{subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} CPU core(s), "
                       f"{cfg.threads} torch thread(s)"}


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rounds"]
    x = [r["round"] for r in rows]
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(6.4, 6.0), sharex=True, height_ratios=[2, 1])
    for key, label, color in (("edge_accuracy", "edge only", "tab:orange"), ("cloud_accuracy", "cloud only",
                              "tab:green"), ("joint_accuracy", "joint (hard cells to the cloud)", "tab:blue")):
        ax.plot(x, [100 * r[key] for r in rows], "o-", color=color, label=label)
    ax.set_ylabel("test accuracy, 654 ELPV cells (%)")
    members = result["cloud_model"].split(",")
    cloud = members[0] if len(members) == 1 else f"an ensemble of {len(members)} models"
    ax.set_title(f"The learning loop: {cloud} as the cloud")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    streamed = rows[1:]
    bx.bar([r["round"] for r in streamed], [100 * r["escalated_share"] for r in streamed], color="tab:gray",
           label="streamed cells escalated (%)")
    for r in streamed:
        bx.annotate(f"{r['bytes_sent'] / 1e6:.1f} MB", (r["round"], 100 * r["escalated_share"]), ha="center",
                    va="bottom", fontsize=8)
    bx.set_xlabel("round (0: the start model)")
    bx.set_ylabel("escalated (%)")
    bx.set_xticks(x)
    bx.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def parse_args(argv: list[str] | None) -> LoopConfig:
    import argparse

    d = LoopConfig()
    p = argparse.ArgumentParser(prog="edgefpga demo --collab", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=d.out, help=f"working folder, replaced (default {d.out})")
    p.add_argument("--results", type=Path, default=d.results, help="where collab_loop.json and .png go "
                   "(default bench/results)")
    p.add_argument("--fraction", type=float, default=d.fraction, help=f"of the fit split for the start model "
                   f"(default {d.fraction})")
    p.add_argument("--rounds", type=int, default=d.rounds, help=f"retraining rounds (default {d.rounds})")
    p.add_argument("--stream", type=int, default=d.stream, help=f"cells streamed over all rounds (default "
                   f"{d.stream}; 0: the whole rest of the fit split)")
    p.add_argument("--base-epochs", type=int, default=d.base_epochs, help=f"start model epochs (default {d.base_epochs})")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"fine-tuning epochs per round (default {d.epochs})")
    p.add_argument("--hard-threshold", type=float, help="confidence under which a cell is hard and escalated "
                   "(default: where the start model escalates --escalate-share of the validation cells)")
    p.add_argument("--escalate-share", type=float, default=d.escalate_share, help="the start model's share of "
                   f"validation cells escalated, which sets the threshold (default {d.escalate_share})")
    p.add_argument("--escalation-budget", type=float, default=d.escalation_budget, help="at most this share of a "
                   f"stream's cells escalate, the least confident (default {d.escalation_budget}; 0: no cap)")
    p.add_argument("--labels", choices=["operator", "cloud"], default=d.labels, help="learn from the operator's "
                   "labels (the ELPV expert labels, default) or the cloud's answers")
    p.add_argument("--cloud", default=d.cloud, help="cloud model folder or zoo name; comma-separated: an ensemble "
                   f"(default {d.cloud})")
    p.add_argument("--rate", type=float, default=d.rate_hz, help=f"frames per second the cells stream at; hard "
                   f"ones escalate as their frame arrives (default {d.rate_hz:g})")
    p.add_argument("--deadline", type=float, default=d.deadline_s, help=f"seconds the cloud has to answer "
                   f"(default {d.deadline_s:g})")
    p.add_argument("--verify-sample", type=int, default=d.verify_sample, help="cells checked bit for bit in RTL per "
                   f"version (default {d.verify_sample})")
    p.add_argument("--threads", type=int, default=d.threads, help=f"CPU threads (default {d.threads})")
    p.add_argument("--progress", action="store_true", help="the pipeline's own progress output")
    a = p.parse_args(argv)
    for name in ("rate", "deadline"):
        if getattr(a, name) <= 0:
            p.error(f"--{name} must be positive, got {getattr(a, name)}")
    if not 0 <= a.escalation_budget <= 1:
        p.error(f"--escalation-budget must be a share within [0, 1], got {a.escalation_budget}")
    return LoopConfig(out=a.out, results=a.results, fraction=a.fraction, rounds=a.rounds, stream=a.stream,
                      base_epochs=a.base_epochs, epochs=a.epochs, hard_threshold=a.hard_threshold,
                      escalate_share=a.escalate_share, escalation_budget=a.escalation_budget, labels=a.labels,
                      cloud=a.cloud, rate_hz=a.rate, deadline_s=a.deadline, verify_sample=a.verify_sample,
                      threads=a.threads, progress=a.progress)


def main(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    cfg = parse_args(argv)
    result = run_loop(cfg)
    cfg.results.mkdir(parents=True, exist_ok=True)
    png = plot(result, cfg.results / "collab_loop.png")
    result["plot"] = png.name
    (cfg.results / "collab_loop.json").write_text(json.dumps(result, indent=1) + "\n")
    say(f"wrote {cfg.results / 'collab_loop.json'} and {png} ({result['seconds']['total']:.0f} s in all)")
    if not result["passed"]:
        failed = [k for k, ok in result["checks"].items() if not ok]
        print(f"edgefpga demo --collab: FAILED {', '.join(failed)}: edge test accuracy "
              f"{result['rounds'][0]['edge_accuracy']:.4f} at the start, {result['rounds'][-1]['edge_accuracy']:.4f} "
              "after the last round", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
