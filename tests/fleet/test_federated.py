"""Federated learning with Flower (fleet/federated): the sites, the app config, bad input, and a
real SuperLink + 3 SuperNodes over TLS on loopback that loses a site mid-round and finishes."""

from __future__ import annotations

import json
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


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_superlink_and_three_supernodes_over_tls_survive_a_dropped_site(tmp_path, certs, capsys):
    """A real SuperLink and 3 SuperNodes (separate processes, TLS on loopback), 3 rounds on small
    sites; site_mixed is killed when round 2 starts and restarted: round 2 averages the other two,
    the run finishes, the site rejoins. Only weights (and a few scores) reached the ServerApp."""
    from edgefpga.cli import main
    from edgefpga.fleet.federated.certs import make_certificates
    from edgefpga.fleet.federated.deploy import LocalFederation

    sites_root = tmp_path / "sites"
    part.partition_elpv(sites_root, seed=0, limit=40)
    sites = {name: sites_root / name for name in SITES}
    settings = RunSettings(rounds=3, size=32, eval_limit=100, round_timeout=300, out_dir=str(tmp_path / "run"))
    work = tmp_path / "fed"
    started = time.perf_counter()
    with LocalFederation(work, certs, sites) as fed:
        # a SuperNode given another CA is refused with the reason, before Flower starts (it would retry forever)
        other = make_certificates(tmp_path / "other_ca")["ca"]
        assert main(["fed", "supernode", "--superlink", fed.superlink, "--ca", str(other), "--data",
                     str(sites["site_mono"])]) == 2
        assert "not trusted" in capsys.readouterr().err

        def drop_and_rejoin():
            wait_for(fed.log("run"), r"\[ROUND 2/3\]", 600)
            fed.kill("site_mixed")
            time.sleep(5)
            fed.start_site("site_mixed")

        chaos = threading.Thread(target=drop_and_rejoin, daemon=True)
        chaos.start()
        fed.run(settings, timeout=1000)
        chaos.join(5)
    seconds = time.perf_counter() - started
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    rounds = history["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2, 3]
    assert rounds[1]["trained"] == 3
    assert rounds[2]["trained"] == 2 and len(rounds[2]["failed"]) == 1  # the dropped site, not waited for
    assert rounds[3]["trained"] >= 2
    assert all(np.isfinite(r["test"]["accuracy"]) for r in rounds)
    assert (tmp_path / "run" / "global.npz").is_file()
    print(f"federated run: {seconds:.0f} s, round seconds {[r['seconds'] for r in rounds]}, "
          f"round 3 trained {rounds[3]['trained']} sites, test accuracy {[r['test']['accuracy'] for r in rounds]}")

    # what reached the ServerApp: per train reply one ArrayRecord of exactly the model's float tensors, a few
    # scalar metrics; per evaluate reply scalar metrics and the site's name. No other record, no other array.
    model = initial_model(settings)
    expected = {k: list(v.shape) for k, v in model.state_dict().items() if v.dtype.is_floating_point}
    received = json.loads((tmp_path / "run" / "received.json").read_text())
    replies = [m for r in received.values() for m in r["train"] if "error" not in m]
    assert len(replies) >= 3 + 2 + 2
    for reply in replies:
        assert list(reply["arrays"]) == ["arrays"]
        assert {k: v["shape"] for k, v in reply["arrays"]["arrays"].items()} == expected
        assert reply["metrics"] == {"metrics": ["num-examples", "train-loss", "train-seconds"]}
        assert reply["configs"] == {}
    for reply in (m for r in received.values() for m in r["evaluate"] if "error" not in m):
        assert reply["arrays"] == {}
        assert reply["metrics"] == {"metrics": ["accuracy", "balanced-accuracy", "f1-defective", "num-examples"]}
        assert reply["configs"] == {"site": {"name": "str"}}
