"""``make demo`` / ``edgefpga demo``: the whole road on the embedded default, end to end over DDS.

Steps: convert the shipped ELPV model into ``build/elpv_defect`` if needed; start the inspection
node (RTL simulation backend), the recorder and the image source (the 654 ELPV test cells) as
separate processes talking over real DDS on loopback; follow the results with a progress bar;
then report accuracy, latency percentiles, accelerator cycles per image and the projected board
frame rate in the terminal and in ``demo_out/report.html`` (confusion matrix and example cells
with their verdicts).
"""

from __future__ import annotations

import base64
import csv
import html
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CONFIG = Path(__file__).resolve().parent / "config" / "demo.yaml"


@dataclass
class DemoConfig:
    build: Path = Path("build/elpv_defect")
    out: Path = Path("demo_out")
    source: str = "elpv:test"
    backend: str = "rtl"
    rate: float = 5.0
    queue_policy: str = "latest"  # the newest frame's verdict first; frames that wait behind it are dropped, counted
    timeout_s: float = 900.0
    min_accuracy: float = 0.5  # below this on labelled cells the run fails: worse than a coin on two classes


def ros_environment(domain: int | None = None) -> dict[str, str]:
    """DDS on loopback only, in a domain of its own."""
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(domain if domain is not None else 40 + os.getpid() % 50)
    return env


def node_command(script: str, params: dict) -> list[str]:
    """A console script of this environment with the demo's parameters file and overrides."""
    exe = str(Path(sys.executable).parent / script)
    overrides = [arg for key, value in params.items() for arg in ("-p", f"{key}:={value}")]
    return [exe, "--ros-args", "--params-file", str(CONFIG), *overrides]


def count_rows(path: Path) -> int:
    if not path.is_file():
        return 0
    with open(path) as f:
        return max(0, sum(1 for _ in f) - 1)


def run_nodes(cfg: DemoConfig, expected: int) -> dict:
    """Start the three nodes, follow the recorder's CSV, stop them; return the recorder's summary."""
    from edgefpga.progress import progress_bar

    cfg.out.mkdir(parents=True, exist_ok=True)
    results, labels, logs = cfg.out / "results.csv", cfg.out / "labels.csv", cfg.out / "logs"
    logs.mkdir(exist_ok=True)
    for stale in (results, labels):
        stale.unlink(missing_ok=True)
    env = ros_environment()
    specs = {
        "inspection": ("edgefpga-inspection", {"model": cfg.build.resolve(), "backend": cfg.backend,
                                               "queue_policy": cfg.queue_policy}),
        "recorder": ("edgefpga-recorder", {"csv": results.resolve(), "labels_csv": labels.resolve(),
                                           "expected": expected, "idle_timeout": 60.0}),
    }
    procs = {name: subprocess.Popen(node_command(script, params), env=env, stdout=open(logs / f"{name}.log", "w"),
                                    stderr=subprocess.STDOUT, text=True)
             for name, (script, params) in specs.items()}
    try:
        wait_for_ready(logs / "inspection.log", procs["inspection"])
        procs["source"] = subprocess.Popen(
            node_command("edgefpga-image-source", {"source": cfg.source, "rate": cfg.rate,
                                                   "labels_csv": labels.resolve()}),
            env=env, stdout=open(logs / "source.log", "w"), stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + cfg.timeout_s
        with progress_bar(total=expected, unit="img", desc=f"inspection ({cfg.backend})") as bar:
            while procs["recorder"].poll() is None and time.monotonic() < deadline:
                bar.update(count_rows(results) - bar.n)
                time.sleep(0.5)
            bar.update(count_rows(results) - bar.n)
        procs["recorder"].wait(timeout=30)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    summary_line = (logs / "recorder.log").read_text().strip().splitlines()
    return json.loads(summary_line[-1]) if summary_line and summary_line[-1].startswith("{") else {}


def wait_for_ready(log: Path, proc: subprocess.Popen, timeout_s: float = 300.0) -> None:
    """Until the inspection node has opened its engine (an RTL build can take a minute)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = log.read_text() if log.is_file() else ""
        if "engine:" in text:
            return
        if proc.poll() is not None or "cannot configure" in text:
            raise RuntimeError(f"the inspection node did not start; see {log}:\n{text[-2000:]}")
        time.sleep(0.5)
    raise RuntimeError(f"the inspection node was not ready after {timeout_s:g} s; see {log}")


def read_results(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def example_cells(rows: list[dict], labels: dict, out: Path, count: int = 8) -> list[dict]:
    """A few cells with their verdicts, as small PNGs: up to half of them wrong ones."""
    import cv2

    from edgefpga.models import elpv

    data = elpv.load()
    by_stamp = {int(r["stamp_ns"]): r for r in rows}
    seen = [(name, label, by_stamp[stamp]) for stamp, (name, label) in labels.items()
            if stamp in by_stamp and name.startswith("elpv:")]
    wrong = [s for s in seen if s[2]["label"] != s[1]][: count // 2]
    right = [s for s in seen if s[2]["label"] == s[1]][: count - len(wrong)]
    picked = []
    (out / "cells").mkdir(parents=True, exist_ok=True)
    for name, label, row in wrong + right:
        index = int(name[name.index("[") + 1:-1])
        path = out / "cells" / f"cell_{index}.png"
        cv2.imwrite(str(path), cv2.resize(data.images[index], (128, 128), interpolation=cv2.INTER_AREA))
        picked.append({"name": name, "label": label, "verdict": row["label"], "score": float(row["score"]),
                       "image": png_data_uri(path)})
    return picked


def model_line(build: Path) -> str:
    """Which model, and the license of the data it was trained on (the card says)."""
    card_path = build / "model" / "card.json"
    if not card_path.is_file():
        return f"  model: {build}"
    card = json.loads(card_path.read_text())
    data = card.get("dataset", {})
    return (f"  model {card.get('name')} ({card.get('params', '?'):,} parameters), trained on {data.get('name')} "
            f"(license {data.get('license')})")


def report(cfg: DemoConfig, summary: dict, rows: list[dict], projection: dict, classes: list[str]) -> list[str]:
    from edgefpga.models.metrics import save_confusion_png

    latency = np.array([float(r["latency_ms"]) for r in rows]) if rows else np.zeros(1)
    node_ms = np.array([(int(r["received_ns"]) - int(r["stamp_ns"])) / 1e6 for r in rows]) if rows else np.zeros(1)
    cycles = [int(r["accelerator_cycles"]) for r in rows if int(r["accelerator_cycles"]) >= 0]
    node = summary.get("node", {})
    lines = [f"edgefpga demo: {summary.get('published', 0)} cells sent over DDS at {cfg.rate:g} Hz: "
             f"{summary.get('received', 0)} answered, {node.get('dropped.stale', 0)} dropped as stale "
             f"(queue_policy {cfg.queue_policy}), {node.get('errors', 0)} failed, {unaccounted(summary)} lost; "
             f"backend {rows[0]['backend'] if rows else cfg.backend}",
             model_line(cfg.build)]
    if "accuracy" in summary:
        lines.append(f"  accuracy {summary['accuracy']:.4f}, balanced accuracy {summary['balanced_accuracy']:.4f}, "
                     f"F1 (defective) {summary['f1_defective']:.4f}; confusion {summary['confusion_matrix']}")
    ratio = np.percentile(node_ms, 99) / max(np.median(latency), 1e-9)
    lines.append(f"  engine latency per image: median {np.median(latency):.1f} ms, p99 {np.percentile(latency, 99):.1f} ms "
                 f"(simulation on this CPU); image stamp to result received: median {np.median(node_ms):.1f} ms, "
                 f"p99 {np.percentile(node_ms, 99):.1f} ms ({ratio:.2f}x the engine's median)")
    if cycles:
        lines.append(f"  accelerator: median {int(np.median(cycles)):,} cycles per image (first pixel in to last score out, "
                     f"{np.median(cycles) / projection['clock_mhz']:.0f} us at {projection['clock_mhz']:g} MHz)")
    lines.append(f"  projected board throughput: {projection['fps']:,.0f} frames/s ({projection['ii_cycles']:,} cycles per frame "
                 f"at {projection['clock_mhz']:g} MHz, frames back to back)")
    cm_png = None
    if "confusion_matrix" in summary:
        cm_png = save_confusion_png(summary["confusion_matrix"], classes, cfg.out / "confusion.png",
                                    f"ELPV test cells over ROS 2 ({rows[0]['backend']})")
    write_html(cfg.out / "report.html", lines, cm_png, example_cells(rows, read_labels_safe(cfg), cfg.out))
    lines.append(f"  report: {cfg.out / 'report.html'}; results: {cfg.out / 'results.csv'}")
    return lines


def read_labels_safe(cfg: DemoConfig) -> dict:
    from .recorder import read_labels

    path = cfg.out / "labels.csv"
    return read_labels(path) if path.is_file() else {}


def write_html(path: Path, lines: list[str], cm_png: Path | None, examples: list[dict]) -> None:
    cells = "".join(
        f'<figure><img src="{e["image"]}" width="128"><figcaption>{html.escape(e["name"])}<br>'
        f'truth <b>{e["label"]}</b>, verdict <b style="color:{"green" if e["label"] == e["verdict"] else "red"}">'
        f'{e["verdict"]}</b> ({e["score"]:.2f})</figcaption></figure>' for e in examples)
    body = "".join(f"<p>{html.escape(line)}</p>" for line in lines)
    matrix = f'<img src="{png_data_uri(cm_png)}" width="360">' if cm_png else ""
    path.write_text(f"""<!doctype html><html><head><meta charset="utf-8"><title>edgefpga demo</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto}} figure{{display:inline-block;margin:6px;
font-size:12px;text-align:center}}</style></head><body><h1>edgefpga demo: ELPV cells over ROS 2</h1>{body}
<h2>Confusion matrix</h2>{matrix}<h2>Example cells</h2>{cells}</body></html>
""")


def unaccounted(summary: dict) -> int:
    """Images sent that neither came back nor were counted by the node as failed or dropped."""
    node = summary.get("node", {})
    return max(0, summary.get("published", 0) - summary.get("received", 0) - node.get("dropped", 0)
               - node.get("errors", 0))


def demo_failures(summary: dict, min_accuracy: float) -> list[str]:
    """What makes the run fail: results lost on the way or failed in the node, or an accuracy
    that collapsed. Frames the node dropped by its queue policy (counted) are not failures."""
    failures = []
    errors = summary.get("node", {}).get("errors", 0)
    if not summary.get("received"):
        failures.append("no results came back")
    elif unaccounted(summary):
        failures.append(f"results lost: {summary['received']} of {summary.get('published', 0)} came back and "
                        f"{unaccounted(summary)} are not accounted for by the node's counters")
    if errors:
        failures.append(f"{errors} image(s) failed in the inspection node (see demo_out/logs/inspection.log)")
    if "accuracy" in summary and summary["accuracy"] < min_accuracy:
        failures.append(f"accuracy collapsed: {summary['accuracy']:.4f} < {min_accuracy:.2f}")
    return failures


def run_demo(cfg: DemoConfig) -> tuple[list[str], dict]:
    from edgefpga.hw.convert import ensure_converted
    from edgefpga.models.card import ZOO
    from edgefpga.models.preprocess import resize_u8
    from edgefpga.runtime.source import ModelRef
    from edgefpga.sim.rtl_harness import project_board

    from .image_source import frames_from

    build = ensure_converted(cfg.build, ZOO / "elpv_defect")
    frames = list(frames_from(cfg.source))
    summary = run_nodes(cfg, len(frames))
    rows = read_results(cfg.out / "results.csv") if (cfg.out / "results.csv").is_file() else []
    model = ModelRef.resolve(build)
    projection = project_board(build, np.stack([resize_u8(f.image, model.spec) for f in frames[:6]]))
    return report(cfg, summary, rows, projection, model.classes), summary


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="edgefpga-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, default=DemoConfig.build, help="build folder (converted if missing)")
    parser.add_argument("--out", type=Path, default=DemoConfig.out, help="report folder (default demo_out)")
    parser.add_argument("--source", default=DemoConfig.source, help="elpv:<subset>[:N] or a folder of images")
    parser.add_argument("--backend", default=DemoConfig.backend, help="inspection backend (default rtl)")
    parser.add_argument("--rate", type=float, default=DemoConfig.rate, help="images per second (default 5)")
    parser.add_argument("--queue-policy", default=DemoConfig.queue_policy, choices=["latest", "all"],
                        help="the node's queue_policy (default latest: newest frame first, stale ones dropped)")
    parser.add_argument("--min-accuracy", type=float, default=DemoConfig.min_accuracy,
                        help="fail (exit 1) below this accuracy on labelled cells (default 0.5)")
    args = parser.parse_args(argv)
    cfg = DemoConfig(build=args.build, out=args.out, source=args.source, backend=args.backend, rate=args.rate,
                     queue_policy=args.queue_policy, min_accuracy=args.min_accuracy)
    try:
        lines, summary = run_demo(cfg)
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"edgefpga-demo: error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    failures = demo_failures(summary, cfg.min_accuracy)
    for failure in failures:
        print(f"edgefpga-demo: FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
