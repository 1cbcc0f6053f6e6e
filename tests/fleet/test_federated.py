"""Federated learning with Flower (fleet/federated): the sites, the app config, bad input, and a
real SuperLink + 3 SuperNodes over TLS on loopback that loses a site mid-round and finishes."""

from __future__ import annotations

import json
import os
import re
import threading
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")

from edgefpga.fleet.federated import partition as part  # noqa: E402
from edgefpga.fleet.federated.task import FederationError, RunSettings, check_arrays, initial_model  # noqa: E402

APP = Path(__file__).resolve().parents[2] / "fleet" / "federated" / "app" / "pyproject.toml"
SITES = ("site_mono", "site_poly", "site_mixed")


def test_partition_is_disjoint_reproducible_and_differs_by_cell_type(elpv_data):
    from edgefpga.models import elpv

    train = elpv.split(elpv_data).train
    sites = part.assign(elpv_data.types, train, seed=0)
    assert sorted(np.concatenate(list(sites.values())).tolist()) == train.tolist()  # every train cell, once
    assert not set(train) & set(elpv.split(elpv_data).test)
    again = part.assign(elpv_data.types, train, seed=0)
    assert all(np.array_equal(sites[k], again[k]) for k in sites)
    mono = {k: (elpv_data.types[v] == "mono").mean() for k, v in sites.items()}
    assert mono["site_mono"] > 0.8 and mono["site_poly"] < 0.1 and 0.3 < mono["site_mixed"] < 0.7
    assert len(sites["site_mixed"]) < len(sites["site_mono"]) / 5  # the small site


def test_app_config_names_every_run_setting():
    """The Flower app's [tool.flwr.app.config] is RunSettings, key for key (a key only one side knows
    would be refused by flwr run or silently default)."""
    config = tomllib.loads(APP.read_text())["tool"]["flwr"]["app"]["config"]
    assert {k.replace("-", "_") for k in config} == set(RunSettings.__dataclass_fields__)
    assert RunSettings.from_run_config(config) == RunSettings()
    with pytest.raises(FederationError, match="unknown key"):
        RunSettings.from_run_config(config | {"epochs": 3})
    secagg = tomllib.loads((APP.parent.parent / "app_secagg" / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert secagg["config"] == config  # the SecAgg+ app runs the same settings
    assert secagg["components"]["serverapp"].endswith("secagg:server")


def test_strategies_are_flowers_own_with_the_run_settings():
    """FedProx carries its mu, FedAvgM its server momentum and learning rate (and a strategy no
    one knows is refused)."""
    from flwr.serverapp.strategy import FedAvgM, FedProx

    from edgefpga.fleet.federated.server_app import make_strategy

    template = initial_model(RunSettings(size=16, widths=(4, 8)))
    prox, _ = make_strategy(RunSettings(strategy="fedprox", proximal_mu=0.1), template)
    assert isinstance(prox, FedProx) and prox.proximal_mu == 0.1
    momentum, _ = make_strategy(RunSettings(strategy="fedavgm", server_momentum=0.7, server_lr=0.5), template)
    assert isinstance(momentum, FedAvgM) and (momentum.server_momentum, momentum.server_learning_rate) == (0.7, 0.5)
    with pytest.raises(FederationError, match="choose one of fedavg, fedprox, fedavgm"):
        RunSettings.from_run_config({"strategy": "fedsgd"})


def test_bad_sites_are_refused_with_the_reason(tmp_path):
    from edgefpga.fleet.federated.task import site_data

    settings = RunSettings(size=32)
    with pytest.raises(FederationError, match="does not exist"):
        site_data(tmp_path / "nowhere", settings)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FederationError, match="empty"):
        site_data(tmp_path / "empty", settings)
    for name in ("cat", "dog"):
        (tmp_path / "other" / name).mkdir(parents=True)
    with pytest.raises(FederationError, match="not the federation's"):
        site_data(tmp_path / "other", settings)
    for name in ("functional", "defective"):
        (tmp_path / "no_images" / name).mkdir(parents=True)
    with pytest.raises(FederationError, match="holds no images"):
        site_data(tmp_path / "no_images", settings)


def test_an_update_that_does_not_fit_or_is_not_finite_is_refused():
    model = initial_model(RunSettings(size=32))
    good = {k: v.numpy() for k, v in model.state_dict().items() if v.dtype.is_floating_point}
    check_arrays(good, model, "site")
    with pytest.raises(FederationError, match="do not fit"):
        check_arrays(good | {"classifier.weight": np.zeros((3, 3), np.float32)}, model, "site")
    with pytest.raises(FederationError, match="non-finite"):
        check_arrays(good | {"classifier.bias": np.array([np.nan, 0], np.float32)}, model, "site")


def test_local_epochs_start_from_the_global_model_and_fedprox_keeps_them_near_it():
    """A site's local epochs are models/train.py from the given weights; the proximal term pulls
    the result towards them."""
    import torch

    from edgefpga.fleet.federated.task import local_train
    from edgefpga.models.datasets import Split, TrainingData

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 24)
    images = rng.integers(0, 120, (48, 16, 16), dtype=np.uint8)
    images[labels == 1, 4:12, 4:12] = 255  # a bright defect
    data = TrainingData(classes=["functional", "defective"], images=images, labels=labels,
                        split=Split(fit=np.arange(0, 48, 2), val=np.arange(1, 48, 4), test=np.arange(3, 48, 4)),
                        defect_classes=["defective"])
    settings = RunSettings(size=16, widths=(4, 8), local_epochs=2, batch_size=8, lr=0.05)
    start = initial_model(settings)

    def moved(mu: float) -> float:
        result = local_train(start, data, settings, server_round=1, mu=mu)
        assert result.logit_bias is None  # no calibration folded into a site's update
        pairs = zip(result.model.parameters(), start.parameters())
        return sum(float(((a.detach() - b.detach()) ** 2).sum()) for a, b in pairs)

    assert 0 < moved(mu=100.0) < moved(mu=0.0)
    fresh = initial_model(settings).state_dict()
    assert torch.equal(fresh["classifier.weight"], start.state_dict()["classifier.weight"])  # start untouched


def test_the_round_learning_rate_decays_from_the_peak_to_a_tenth():
    settings = RunSettings(rounds=5, lr=0.01)
    lrs = [settings.round_lr(r) for r in range(1, 6)]
    assert lrs[0] == pytest.approx(0.01) and lrs[-1] == pytest.approx(0.001)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert RunSettings(lr_schedule="constant").round_lr(3) == RunSettings().lr


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    from edgefpga.fleet.federated.certs import make_certificates

    out = tmp_path_factory.mktemp("certs")
    make_certificates(out)
    return out


def wait_for(log: Path, pattern: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.is_file() and re.search(pattern, log.read_text(errors="replace")):
            return
        time.sleep(0.5)
    raise AssertionError(f"{pattern!r} not in {log} after {timeout} s")


# The federation the slow tests share (one run, on one xdist worker): 2 rounds of a small edge model
# (16 px, widths 4-8) on 24 cells a site, the central test on 64 cells; site_mixed is killed when
# round 2 starts and restarted at once. Round 2's training averages the other two (the dead site's
# message fails when its heartbeat stops, ~40-70 s), and the restarted site answers round 2's
# evaluation: it rejoined.
TINY = dict(size=16, widths=(4, 8), eval_limit=64, round_timeout=300)


@pytest.fixture(scope="module")
def dropped_site_run(tmp_path_factory, certs):
    """(run folder, sites folder, seconds, the wrong-CA refusal's exit status and message)."""
    from edgefpga.cli import main
    from edgefpga.fleet.federated.certs import make_certificates
    from edgefpga.fleet.federated.deploy import LocalFederation

    tmp = tmp_path_factory.mktemp("federation")
    sites_root = tmp / "sites"
    part.partition_elpv(sites_root, seed=0, limit=24)
    sites = {name: sites_root / name for name in SITES}
    settings = RunSettings(rounds=2, out_dir=str(tmp / "run"), **TINY)
    started = time.perf_counter()
    with LocalFederation(tmp / "fed", certs, sites) as fed:
        # a SuperNode given another CA is refused with the reason, before Flower starts (it would retry forever)
        other = make_certificates(tmp / "other_ca")["ca"]
        import contextlib
        import io

        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            refused = main(["fed", "supernode", "--superlink", fed.superlink, "--ca", str(other), "--data",
                            str(sites["site_mono"])])

        def drop_and_rejoin():
            wait_for(fed.log("run"), r"\[ROUND 2/2\]", 600)
            fed.kill("site_mixed")
            fed.start_site("site_mixed")

        chaos = threading.Thread(target=drop_and_rejoin, daemon=True)
        chaos.start()
        fed.run(settings, timeout=600)
        chaos.join(5)
    return tmp / "run", sites_root, time.perf_counter() - started, refused, err.getvalue()


@pytest.mark.slow
@pytest.mark.xdist_group("federation")
@pytest.mark.timeout(600)
def test_superlink_and_three_supernodes_over_tls_survive_a_dropped_site(dropped_site_run):
    """A real SuperLink and 3 SuperNodes (separate processes, TLS on loopback), 2 rounds; a site
    killed during round 2 is not waited for, the run finishes, the restarted site rejoins. Only
    weights (and a few scores) reached the ServerApp."""
    run, _, seconds, refused, err = dropped_site_run
    assert refused == 2 and "not trusted" in err
    history = json.loads((run / "history.json").read_text())
    rounds = history["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert rounds[1]["trained"] == 3
    assert rounds[2]["trained"] == 2 and len(rounds[2]["failed"]) == 1  # the dropped site, not waited for
    assert "site_mixed" in rounds[2]["sites"]  # the restarted SuperNode evaluated round 2's model: rejoined
    assert all(np.isfinite(r["test"]["accuracy"]) for r in rounds)
    assert (run / "global.npz").is_file()
    print(f"federated run: {seconds:.0f} s, round seconds {[r['seconds'] for r in rounds]}, "
          f"test accuracy {[r['test']['accuracy'] for r in rounds]}")

    # what reached the ServerApp: per train reply one ArrayRecord of exactly the model's float tensors, a few
    # scalar metrics; per evaluate reply scalar metrics and the site's name. No other record, no other array.
    model = initial_model(RunSettings(**TINY))
    expected = {k: list(v.shape) for k, v in model.state_dict().items() if v.dtype.is_floating_point}
    received = json.loads((run / "received.json").read_text())
    replies = [m for r in received.values() for m in r["train"] if "error" not in m]
    assert len(replies) == 3 + 2
    for reply in replies:
        assert list(reply["arrays"]) == ["arrays"]
        assert {k: v["shape"] for k, v in reply["arrays"]["arrays"].items()} == expected
        assert reply["metrics"] == {"metrics": ["num-examples", "train-loss", "train-seconds"]}
        assert reply["configs"] == {}
    for reply in (m for r in received.values() for m in r["evaluate"] if "error" not in m):
        assert reply["arrays"] == {}
        assert reply["metrics"] == {"metrics": ["accuracy", "balanced-accuracy", "f1-defective", "num-examples"]}
        assert reply["configs"] == {"site": {"name": "str"}}


@pytest.fixture(scope="module")
def federated_model(dropped_site_run, tmp_path_factory) -> Path:
    """The run's model through ``edgefpga fed export`` (with the partition record)."""
    from edgefpga.cli import main

    run, sites_root, *_ = dropped_site_run
    out = tmp_path_factory.mktemp("fedmodel") / "elpv_fed_tiny"
    assert main(["fed", "export", str(run), str(out), "--name", "elpv_fed_tiny", "--partition",
                 str(sites_root / part.PARTITION_RECORD)]) == 0
    return out


@pytest.mark.slow
@pytest.mark.xdist_group("federation")
@pytest.mark.timeout(120)
def test_the_exported_card_and_the_registry_carry_the_federated_history(dropped_site_run, federated_model,
                                                                          tmp_path):
    """Down the road, the cheap part: the card's federated block is the run's history round for
    round (the dropped site included), and the registry keeps it (card artifact, version tag, per
    round metric). Converting, RTL on the 654 cells and serving: bench/federated_road.py."""
    from edgefpga.fleet.registry import ModelRegistry

    run = dropped_site_run[0]
    history = json.loads((run / "history.json").read_text())
    card = json.loads((federated_model / "card.json").read_text())
    block = card["federated"]
    assert block["rounds"] == 2 and block["selected_round"] == history["selected_round"]
    assert [(r["round"], r["test_accuracy"], r["trained_sites"], r["failed"]) for r in block["history"]] == [
        (r["round"], r["test"]["accuracy"], r["trained"], len(r["failed"])) for r in history["rounds"]]
    assert block["history"][2]["trained_sites"] == 2 and block["history"][2]["failed"] == 1
    assert block["partition"]["seed"] == 0 and set(block["partition"]["sites"]) == set(SITES)
    assert card["metrics"]["test"]["n"] == 654 and card["input"]["shape"] == [1, 1, 16, 16]

    registry = ModelRegistry(f"sqlite:///{tmp_path / 'registry.db'}")
    version = registry.register(federated_model)
    tag = json.loads(version.tags["federated"])
    assert tag == {"strategy": "FedAvg", "rounds": 2, "local_epochs": 1, "selected_round": block["selected_round"],
                   "sites": sorted(SITES)}
    got = registry.download("elpv_fed_tiny", version.version, tmp_path / "site")
    assert json.loads((got / "model" / "card.json").read_text())["federated"] == block
    steps = registry.client.get_metric_history(version.run_id, "federated_round_test_accuracy")
    assert [(m.step, m.value) for m in sorted(steps, key=lambda m: m.step)] == [
        (r["round"], r["test"]["accuracy"]) for r in history["rounds"]]


@pytest.mark.slow
@pytest.mark.xdist_group("federation")
@pytest.mark.timeout(120)
def test_the_inspection_node_serves_the_federated_model(federated_model, elpv_data, tmp_path):
    """The exported federated model served by the inspection node (ONNX Runtime backend): every
    answer names the model and equals the Engine's. Converted, verified 654/654 in RTL and served
    from the registry: bench/federated_road.py (minutes of conversion and simulation)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ros_nodes"))
    from ros_helpers import Probe, domain_for, spin_until, start_node

    import edgefpga.runtime as rt
    from edgefpga.models import elpv

    cells = list(elpv_data.images[elpv.split(elpv_data).test[:8]])
    with rt.open(str(federated_model), backend="onnx") as engine:
        expected = [r.label for r in engine.infer(cells)]

    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_DOMAIN_ID"] = str(domain_for(__name__))
    import rclpy

    rclpy.init()
    node = start_node(tmp_path, "fed_node", model=str(federated_model), backend="onnx")
    try:
        probe = Probe(rclpy)
        probe.wait_matched()
        for i, cell in enumerate(cells):
            probe.send(cell, sec=i)
            assert spin_until(probe.node, lambda: len(probe.results) > i, 60), node.output()[-2000:]
        got = sorted(probe.results, key=lambda m: m.header.stamp.sec)
        assert [m.label for m in got] == expected
        assert {m.model_id.partition("@")[0] for m in got} == {"elpv_fed_tiny"}
        assert {m.backend for m in got} == {"onnx"}
        probe.close()
    finally:
        node.stop()
        rclpy.shutdown()


@pytest.fixture
def in_a_flower_task():
    """Flower's Messages need the task identity its runtime sets in an app's process."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def test_fedavgm_moves_the_weights_with_momentum_and_averages_batchnorm_statistics(in_a_flower_task):
    """Two sites reply the global model +1 and +3: round 1 takes the average (+2) everywhere;
    round 2 (same replies: a zero pseudo-gradient) still moves the weights by the momentum
    (0.9 x 2), while BatchNorm's running statistics stay the plain average."""
    from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

    from edgefpga.fleet.federated.server_app import make_strategy
    from edgefpga.fleet.federated.task import to_arrays

    settings = RunSettings(size=16, widths=(4, 8), strategy="fedavgm", server_momentum=0.9)
    start = to_arrays(initial_model(settings))
    _, guarded = make_strategy(settings, initial_model(settings))
    guarded.current_arrays = start  # what configure_train sets in a run

    def reply(shift: float) -> Message:
        sent = Message(RecordDict({"arrays": start}), dst_node_id=1, message_type="train")
        arrays = ArrayRecord({k: Array(a.numpy() + shift) for k, a in start.items()})
        return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": 10})}), reply_to=sent)

    def moved(arrays) -> dict[str, float]:
        return {k: round(float((arrays[k].numpy() - start[k].numpy()).mean()), 4) for k in arrays}

    first, _ = guarded.aggregate_train(1, [reply(1.0), reply(3.0)])
    assert set(moved(first).values()) == {2.0}
    second, _ = guarded.aggregate_train(2, [reply(1.0), reply(3.0)])
    assert {k: v for k, v in moved(second).items() if ".running_" in k and v != 2.0} == {}
    assert {v for k, v in moved(second).items() if ".running_" not in k} == {3.8}
