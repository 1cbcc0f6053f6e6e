"""The federated model down the road (issue 16, part 5) -> bench/results/federated_road.json.

One chain, each step the project's own, each checked, the first failure ends it (``passed``
false, the step and its error recorded, ``bench/run.py`` exits non-zero):

1. federate: a real SuperLink + 3 SuperNodes over TLS on loopback (``LocalFederation``) on ELPV's
   train part as the three plant-like sites (or an existing run folder: ``$EDGEFPGA_FED_RUN``);
2. export: ``edgefpga fed export`` (``export_run``): model folder whose card holds the run's
   federated history, every round of it;
3. convert: ``edgefpga convert`` with its defaults (pynq-z2, calibration on ELPV's train split);
4. verify: ``edgefpga verify`` in full: the integer model, the hls4ml emulator and the RTL
   (Verilator) bit for bit on every one of ELPV's 654 test cells;
5. register: the model folder and its verified build in an MLflow registry (fleet/registry.py),
   promoted to champion; the registered card read back from the registry's artifacts;
6. serve: the inspection node (its console script, another process, DDS on loopback) started
   on ``registry:<name>@champion``, every test cell published to it: each answer must name the
   registry version and equal ``Engine.infer`` on the same build and backend.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SITES = ("site_mono", "site_poly", "site_mixed")
NAME = "elpv_federated"


class StepFailed(Exception):
    """A step of the chain whose check did not hold."""


def federate(work: Path, rounds: int, local_epochs: int, size: int, strategy: str) -> tuple[Path, Path, dict]:
    """(run folder, partition record, facts): the federation over TLS on the whole train part."""
    from federated import run_federated

    from edgefpga.fleet.federated.partition import PARTITION_RECORD, partition_elpv
    from edgefpga.fleet.federated.task import RunSettings

    partition_elpv(work / "sites", seed=0)
    sites = {name: work / "sites" / name for name in SITES}
    settings = RunSettings(rounds=rounds, local_epochs=local_epochs, size=size, strategy=strategy,
                           min_train_nodes=3, min_available_nodes=3, out_dir=str(work / "run"))
    fed = run_federated(work / "fed", sites, settings)
    return work / "run", work / "sites" / PARTITION_RECORD, {
        "rounds": rounds, "local_epochs": local_epochs, "size": size, "strategy": strategy,
        "seconds": fed["seconds"], "selected_round": fed["selected_round"]}


def export(run: Path, partition: Path | None, out: Path) -> dict:
    """The model folder; its card's federated history must be the run's, round for round."""
    from edgefpga.fleet.federated.export import export_run

    build = export_run(run, out, NAME, partition, progress=False)
    card = json.loads((out / "card.json").read_text())
    history = json.loads((run / "history.json").read_text())["rounds"]
    block = card.get("federated", {})
    got = [(r["round"], r["test_accuracy"], r["trained_sites"]) for r in block.get("history", [])]
    want = [(r["round"], r["test"]["accuracy"], r["trained"]) for r in history]
    if got != want:
        raise StepFailed(f"{out / 'card.json'}: its federated history {got} is not the run's {want}")
    return {"card_test": card["metrics"]["test"], "card_rounds": block["rounds"], "strategy": block["strategy"],
            "selected_round": block["selected_round"], "partition_seed": block.get("partition", {}).get("seed"),
            "onnx_test_accuracy": build.facts["test"]["accuracy"]}


def convert_model(model: Path, out: Path) -> dict:
    from edgefpga.hw.convert import ConvertConfig, convert

    start = time.perf_counter()
    report = convert(str(model), out, ConvertConfig(progress=False), log=lambda _m: None)
    return {"seconds": round(time.perf_counter() - start, 1), "board": report["board"].get("name"),
            "params": report["totals"]["params"], "macs": report["totals"]["macs"]}


def verify_build(build: Path) -> dict:
    """``edgefpga verify`` in full (no --sample): every test cell through the emulator and the RTL."""
    from edgefpga.sim.verify import VerifyFailed, verify

    start = time.perf_counter()
    try:
        result = verify(build, progress=False, resources=False)
    except VerifyFailed as exc:
        raise StepFailed(f"edgefpga verify {build}: {exc}") from exc
    emu, rtl = result["emulator"], result["rtl"]
    facts = {"seconds": round(time.perf_counter() - start, 1), "n": emu["n"],
             "emulator_bit_exact_images": emu.get("integer_model_bit_exact_images"),
             "emulator_checked": emu.get("bit_exact_checked"), "top1_agreement": emu["top1_agreement"],
             "rtl_n": rtl["n"], "rtl_bit_exact_frames": rtl["bit_exact_frames"],
             "latency_cycles": rtl.get("latency_cycles"), "ii_cycles": rtl.get("ii_cycles")}
    if not (emu["n"] == rtl["n"] == 654 and rtl["bit_exact_frames"] == 654
            and emu.get("integer_model_bit_exact_images") == 654):
        raise StepFailed(f"{build}: not bit-exact on all 654 test cells: {facts}")
    return facts


def register(model: Path, build: Path, uri: str, cache: Path) -> dict:
    """Registered with its verified build and promoted; the card as the registry gives it back."""
    from edgefpga.fleet.registry import ModelRegistry

    registry = ModelRegistry(uri)
    version = registry.register(model, build)
    champion = registry.promote(version.version, NAME)
    got = registry.download(NAME, "champion", cache / "check")
    card = json.loads((got / "model" / "card.json").read_text())
    if card.get("federated") != json.loads((model / "card.json").read_text()).get("federated"):
        raise StepFailed(f"registry {uri}: the registered card's federated block differs from {model}'s")
    return {"version": champion.version, "aliases": champion.aliases, "verified": champion.verified,
            "tags": {k: v for k, v in champion.tags.items() if k in ("federated", "verified")},
            "card_federated_rounds": len(card["federated"]["history"]) - 1}


def serve(uri: str, cache: Path, build: Path, backend: str, log: Path, version: int) -> dict:
    """Every test cell through the inspection node serving ``registry:<name>@champion``."""
    import rclpy
    from edgefpga_msgs.msg import InspectionResult
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    import edgefpga.runtime as rt
    from edgefpga.models import elpv
    from edgefpga.ros_nodes.images import array_to_image

    data = elpv.load()
    images = list(data.images[elpv.subset("test", data)])
    with rt.open(str(build), backend=backend) as engine:
        expected = [r.label for r in engine.infer(images)]
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(60 + os.getpid() % 30),
               EDGEFPGA_CACHE=str(cache))
    os.environ.update({k: env[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID")})
    params = log.with_suffix(".yaml")
    params.write_text(f"inspection:\n  ros__parameters:\n    model: registry:{NAME}@champion\n    registry_uri: {uri}\n"
                      f"    backend: {backend}\n    reliable_input: true\n    queue_depth: 100\n    queue_policy: all\n")
    with open(log, "w") as out:
        node = subprocess.Popen([str(Path(sys.executable).parent / "edgefpga-inspection"), "--ros-args",
                                 "--params-file", str(params)], stdout=out, stderr=subprocess.STDOUT, env=env)
    rclpy.init()
    try:
        probe = rclpy.create_node("federated_road_probe")
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        pub = probe.create_publisher(Image, "image", qos)
        got: dict[int, InspectionResult] = {}
        probe.create_subscription(InspectionResult, "inspection/result", lambda m: got.setdefault(m.header.stamp.sec, m),
                                  qos)
        deadline = time.monotonic() + 180
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline and node.poll() is None:
            rclpy.spin_once(probe, timeout_sec=0.1)
        start = time.perf_counter()
        for i, image in enumerate(images):
            msg = array_to_image(image, Image())
            msg.header.stamp.sec = i
            pub.publish(msg)
            until = time.monotonic() + (120 if i == 0 else 10)  # the first waits for the node to activate
            while i not in got and time.monotonic() < until and node.poll() is None:
                rclpy.spin_once(probe, timeout_sec=0.01)
        seconds = time.perf_counter() - start
    finally:
        rclpy.shutdown()
        node.terminate()
        node.wait(timeout=15)
    versions = sorted({m.model_version for m in got.values()})
    agree = sum(got[i].label == label for i, label in enumerate(expected) if i in got)
    defective = sum(m.defective for m in got.values())
    facts = {"backend": backend, "sent": len(images), "answered": len(got), "model_versions": versions,
             "labels_equal_engine": agree, "defective_answers": defective, "seconds": round(seconds, 1)}
    if len(got) != len(images) or agree != len(images) or versions != [f"{NAME} v{version}"]:
        raise StepFailed(f"the inspection node (log {log}) did not serve every cell as the Engine does: {facts}")
    return facts


def bench_federated_road(rounds: int = 4, local_epochs: int = 2, size: int = 32, strategy: str = "fedavg",
                         run: str | None = None, backend: str = "emulator") -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    work = Path(tempfile.mkdtemp(prefix="edgefpga-fed-road-"))
    record: dict = {"steps": {}, "seconds": {}}
    step = "federate"
    try:
        if run:
            run_dir, partition = Path(run), None
            record["steps"]["federate"] = {"reused_run": str(run_dir)}
        else:
            run_dir, partition, record["steps"]["federate"] = federate(work, rounds, local_epochs, size, strategy)
        uri = f"sqlite:///{work / 'registry' / 'registry.db'}"
        chain = [("export", lambda: export(run_dir, partition, work / "model")),
                 ("convert", lambda: convert_model(work / "model", work / "build")),
                 ("verify", lambda: verify_build(work / "build")),
                 ("register", lambda: register(work / "model", work / "build", uri, work / "cache")),
                 ("serve", lambda: serve(uri, work / "cache", work / "build", backend, work / "node.log",
                                         record["steps"]["register"]["version"]))]
        for step, run_step in chain:
            start = time.perf_counter()
            record["steps"][step] = run_step()
            record["seconds"][step] = round(time.perf_counter() - start, 1)
            print(f"federated_road: {step}: {json.dumps(record['steps'][step])}", flush=True)
        record["passed"] = True
    except Exception as exc:  # any step's failure is the bench's: recorded, then a non-zero exit
        record.update(passed=False, failed_step=step, error=f"{type(exc).__name__}: {str(exc)[-2000:]}")
        keep = Path(tempfile.gettempdir()) / "edgefpga-fed-road-failed"
        shutil.rmtree(keep, ignore_errors=True)
        shutil.copytree(work, keep, ignore=shutil.ignore_patterns("sites", "*.so", "obj*"), dirs_exist_ok=True)
        record["kept_for_inspection"] = str(keep)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return record
