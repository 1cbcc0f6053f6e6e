"""Benchmarks: each writes bench/results/<name>.json with the commit it measured. Not tests:
numbers on a shared machine move.

Run with ``make bench`` (all) or ``python bench/run.py NAME...``. Each benchmark measures against
a baseline in the same run and reports the ratio, so results from different machines or days are
compared by ratio, not by seconds. A benchmark that checks something (the soak) exits non-zero
when its check fails.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

from edgefpga.provenance import git_commit

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "elpv_defect"


def shipped_build() -> Path:
    """build/elpv_defect, converted from the shipped model when missing or stale."""
    from edgefpga.hw.convert import ensure_converted
    from edgefpga.models.card import ZOO

    return ensure_converted(BUILD, ZOO / "elpv_defect")


def bench_runtime() -> dict:
    """Every runtime backend on the same ELPV cells (bench/backends.py)."""
    from backends import bench_backends

    return bench_backends(shipped_build())


def bench_board() -> dict:
    """The shipped model projected on a PYNQ-Z2 against the CPUs, energy (bench/board.py)."""
    from board import bench_board as run

    return run()


def bench_ros_node() -> dict:
    """The inspection node's added latency over the bare Engine call (bench/ros_node.py)."""
    from ros_node import bench_node_latency

    return bench_node_latency()


def bench_reference_models() -> dict:
    """MLPerf Tiny's reference shapes on a PYNQ-Z2: bit-exact RTL, II, latency, resources
    (bench/reference_models.py); about 30 minutes, most of it Yosys."""
    from reference_models import bench_reference_models as run

    return run()


def bench_fit() -> dict:
    """A 224x224 ResNet-18 for a PYNQ-Z2 is refused in one line, in under a minute (bench/fit.py)."""
    from fit import bench_fit as run

    return run()


def placed_and_routed(build: Path) -> dict:
    """Every distinct stage of ``build`` placed and routed on an ECP5 (speed 6) with the open tools
    (sim/timing.py, `verify --timing`'s figures), checked against the board's clock: the result
    fails while any stage is below it."""
    from edgefpga.sim.timing import timing_report

    clock = json.loads((build / "report.json").read_text())["board"]["clock_mhz"]
    result = timing_report(build / "rtl", clock, jobs=1)
    return dict(result, build=str(build.relative_to(ROOT)), passed=bool(result["meets_target"]))


def bench_estimates() -> dict:
    """The hardware models' prediction against Yosys on the detector and the feature nets
    (bench/estimates.py)."""
    from estimates import bench_estimates as run

    return run()


def bench_timing() -> dict:
    """The shipped build's stages placed and routed (``placed_and_routed``); about 15-30 minutes
    cold, seconds cached."""
    return placed_and_routed(shipped_build())


def reference_placed_and_routed(name: str) -> dict:
    """The reference shape ``name`` as `reference_models` converts it for a PYNQ-Z2 (the same build
    folder), its stages placed and routed (``placed_and_routed``)."""
    from edgefpga.hw.convert import ensure_converted
    from edgefpga.models.card import ZOO

    return placed_and_routed(ensure_converted(ROOT / "build" / f"{name}_pynq-z2", ZOO / name))


def bench_timing_resnet8() -> dict:
    """ResNet-8's stages placed and routed (22 units, about 5-20 minutes cold)."""
    return reference_placed_and_routed("resnet8_ref")


def bench_timing_mobilenet() -> dict:
    """MobileNet-V1 0.25's stages placed and routed (about 30 units, an hour cold on one core)."""
    return reference_placed_and_routed("mobilenet_v1_025_ref")


def bench_timing_dense_head() -> dict:
    """dense_head_ref's stages placed and routed (a conv trunk and three dense layers)."""
    return reference_placed_and_routed("dense_head_ref")


def bench_ros_soak() -> dict:
    """Ten minutes at 30 Hz through the inspection node (bench/ros_soak.py)."""
    from ros_soak import soak

    return soak(minutes=10.0)


def bench_collab() -> dict:
    """Joint inference on the 654 ELPV test cells: edge vs cloud vs escalation at swept thresholds and
    under a 20 % escalation budget in 20 stream orders, the first through the Zenoh service on
    loopback; checks issue 15's targets (bench/collab.py)."""
    from collab import bench_collab as run

    return run(RESULTS)


def bench_federated() -> dict:
    """Federated (Flower, 3 sites over TLS) vs centralized vs each site alone, same total epochs
    (bench/federated.py); settings from $EDGEFPGA_FED_BENCH (rounds,local_epochs,size[,site_limit]), the
    federated arms from $EDGEFPGA_FED_STRATEGIES (comma-separated; the first is the one checked), other
    RunSettings from $EDGEFPGA_FED_SETTINGS (key=value,...: e.g. server_momentum=0.5,proximal_mu=0.1), the
    seeds from $EDGEFPGA_FED_SEEDS (comma-separated; every arm once per seed, compared on the means)."""
    from federated import bench_federated as run

    from edgefpga.fleet.federated.task import RunSettings

    rounds, local, size, *limit = (int(v) for v in os.environ.get("EDGEFPGA_FED_BENCH", "10,3,32").split(","))
    strategies = tuple(os.environ.get("EDGEFPGA_FED_STRATEGIES", "fedavg,fedprox,fedavgm").split(","))
    overrides = {}
    for pair in filter(None, os.environ.get("EDGEFPGA_FED_SETTINGS", "").split(",")):
        key, _, value = pair.partition("=")
        overrides[key] = type(getattr(RunSettings(), key))(value)
    seeds = tuple(int(v) for v in os.environ.get("EDGEFPGA_FED_SEEDS", "0,1,2,3,4").split(","))
    return run(rounds, local, size, limit[0] if limit else None, strategies, overrides, seeds)


def bench_federated_dp() -> dict:
    """The federated arm with Flower's server-side DP (bench/federated.py); $EDGEFPGA_FED_DP: noise,clip."""
    from federated import bench_federated_dp as run

    noise, clip = (float(v) for v in os.environ.get("EDGEFPGA_FED_DP", "0.01,5").split(","))
    return run(noise, clip)


def bench_detector() -> dict:
    """The detector on held-out module images against the binary model's grid-crop mode, its RTL bit
    for bit, cycles and PYNQ-Z2 frame rate (bench/detector.py)."""
    from detector import bench_detector as run

    return run()


def bench_federated_secagg() -> dict:
    """FedAvg with and without Flower's SecAgg+ (bench/federated.py); $EDGEFPGA_FED_SECAGG: rounds,local_epochs,size."""
    from federated import bench_federated_secagg as run

    rounds, local, size = (int(v) for v in os.environ.get("EDGEFPGA_FED_SECAGG", "4,2,32").split(","))
    return run(rounds, local, size)


def bench_federated_road() -> dict:
    """The federated model down the road: federate, export, convert, verify on all 654 cells (RTL
    included), register, serve (bench/federated_road.py); $EDGEFPGA_FED_ROAD: rounds,local_epochs,size;
    $EDGEFPGA_FED_RUN: an existing run folder instead of federating."""
    from federated_road import bench_federated_road as run

    rounds, local, size = (int(v) for v in os.environ.get("EDGEFPGA_FED_ROAD", "4,2,32").split(","))
    return run(rounds, local, size, run=os.environ.get("EDGEFPGA_FED_RUN") or None)


def bench_qat() -> dict:
    """Quantization-aware training on ELPV: float vs W8A8, W4A4, W4A8 (same recipe and epochs), each
    converted for a PYNQ-Z2 (II, predicted resources), the W4A4 build bit-exact to qonnx on the 654
    test cells (bench/qat.py); about an hour on 2 cores when the models are not trained yet."""
    from qat import bench_qat as run

    return run()


def bench_pack() -> dict:
    """Two products per DSP48: ELPV's architecture at W8A8 and W4A4 (QAT), packed against unpacked in
    the same run, the packed W8A8 build verified on all 654 test cells with Yosys (bench/pack.py)."""
    from pack import bench_pack as run

    return run()


def bench_qdq() -> dict:
    """The shipped ELPV model quantized by ONNX Runtime's quantize_static (QDQ; per tensor and per
    channel), converted with its own scales and verified on the 654 test cells, RTL included
    (bench/qdq.py); about 15 minutes."""
    from qdq import bench_qdq as run

    return run()


BENCHES = {"fit": bench_fit, "qdq": bench_qdq, "pack": bench_pack, "estimates": bench_estimates, "qat": bench_qat, "timing": bench_timing, "timing_resnet8": bench_timing_resnet8,
           "timing_mobilenet": bench_timing_mobilenet, "timing_dense_head": bench_timing_dense_head, "runtime": bench_runtime, "board": bench_board, "ros_node": bench_ros_node, "ros_soak": bench_ros_soak,
           "reference_models": bench_reference_models, "collab": bench_collab, "federated": bench_federated,
           "federated_dp": bench_federated_dp, "federated_road": bench_federated_road,
           "federated_secagg": bench_federated_secagg, "detector": bench_detector}


def main(names: list[str]) -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"bench: unknown benchmark(s) {unknown}; choose from {list(BENCHES)}", file=sys.stderr)
        return 2
    failed = []
    for name in names or list(BENCHES):
        result = BENCHES[name]()
        result["machine"] = {"platform": platform.platform(), "python": platform.python_version(),
                             "cpus": os.cpu_count(), "load_average_1_5_15_min": os.getloadavg()}
        result["commit"] = git_commit()
        path = RESULTS / f"{name}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"{path}: {json.dumps(result)}")
        if result.get("passed") is False:  # a benchmark that checks something (the soak) failed its check
            failed.append(name)
    for name in failed:
        print(f"bench: FAILED {name} (see bench/results/{name}.json: checks)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
