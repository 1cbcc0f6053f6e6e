"""Hard examples escalate from the inspection node to the cloud model over a real Zenoh session on
loopback (issue 15), with the site's mutual TLS (issue 31): the cloud decides the hard ones, both
models' probabilities travel in the message, every hard sample is kept in the store with the
service identity that labelled it; with the cloud gone the edge verdict stands after the deadline,
counted, and nothing is lost. A service impersonating the cloud with another CA's certificate is
never heard by the node."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import pytest
from ros_helpers import Probe, ros, spin_until, start_node  # noqa: F401  (ros: fixture)

pytestmark = pytest.mark.slow
HARD = 0.9  # confidence under which a result is hard: a good share of ELPV's test cells
DEADLINE_S = 2.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def probe(ros):
    p = Probe(ros)
    yield p
    p.close()


def send_all(probe: Probe, cells: list, first: int) -> None:
    import rclpy

    for i, cell in enumerate(cells):
        probe.send(cell, sec=first + i)
        rclpy.spin_once(probe.node, timeout_sec=0.05)


def serve(tmp_path, site) -> tuple[subprocess.Popen, str]:
    """``edgefpga-cloud`` with ``site``'s service certificate on tls/127.0.0.1:<free port>."""
    from cloud_models import tiny_model

    model = tiny_model(tmp_path / "tiny_cloud")  # the edge's two classes; random weights: the link is under test
    endpoint = f"tls/127.0.0.1:{free_port()}"
    return subprocess.Popen([sys.executable, "-m", "edgefpga.fleet.cloud", "--model", str(model), "--listen", endpoint,
                             "--threads", "1", "--certs", str(site)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True), endpoint


@pytest.mark.timeout(300)
def test_hard_cells_go_to_the_cloud_and_the_edge_stands_when_it_is_gone(tmp_path, probe, elpv_data):
    from edgefpga.fleet.store import SampleStore
    from edgefpga.fleet.trust import make_site
    from edgefpga.models import elpv

    cells = list(elpv_data.images[elpv.subset("test", elpv_data)[:24]])
    site = make_site(tmp_path / "site", ["cell-1"])
    cloud, endpoint = serve(tmp_path, tmp_path / "site")
    node = start_node(tmp_path, "collab", hard_threshold=HARD, cloud=endpoint, cloud_deadline=DEADLINE_S,
                      store=str(tmp_path / "store"), cloud_certs=str(tmp_path / "site"), cloud_identity="cell-1")
    try:
        node.wait_for("engine:")
        probe.wait_matched()
        time.sleep(2.0)  # the service's session and the node's find each other
        send_all(probe, cells[:16], 1)
        assert spin_until(probe.node, lambda: len(probe.results) == 16, 60), node.output()[-3000:]
        cloud.terminate()
        cloud.wait(timeout=20)
        started = time.monotonic()
        send_all(probe, cells[16:], 17)
        assert spin_until(probe.node, lambda: len(probe.results) == 24, 60), node.output()[-3000:]
        gone_s = time.monotonic() - started
    finally:
        node.stop()
        if cloud.poll() is None:
            cloud.kill()
    by_stamp = {r.header.stamp.sec: r for r in probe.results}
    assert sorted(by_stamp) == list(range(1, 25))  # every image answered once
    first, second = [by_stamp[i] for i in range(1, 17)], [by_stamp[i] for i in range(17, 25)]
    hard_first = [r for r in first if r.hard]
    assert hard_first and any(not r.hard for r in first)
    for r in first:
        assert r.hard == (r.confidence < HARD) and len(r.edge_probabilities) == 2
        if r.hard:
            assert (r.escalation, r.decided_by) == ("answered", "cloud"), r.escalation
            assert r.cloud_model_id.startswith("tiny_cloud@") and len(r.cloud_probabilities) == 2
            assert list(r.class_probabilities) == list(r.cloud_probabilities)
        else:
            assert (r.escalation, r.decided_by, list(r.cloud_probabilities)) == ("", "edge", [])
    for r in second:  # the cloud is gone: the edge verdict stands, after at most the deadline
        assert r.decided_by == "edge"
        assert r.escalation in ("", "timeout", "no_route"), r.escalation
        assert (r.escalation != "") == r.hard
    assert gone_s < DEADLINE_S + 10
    store = SampleStore(tmp_path / "store")
    assert store.count() == sum(r.hard for r in first + second)
    assert store.count(decided_by="cloud") == len(hard_first)
    labelled = [s for s in store.samples() if s.cloud is not None]
    assert labelled and {s.cloud.service_identity for s in labelled} == {site["identities"]["edgefpga-cloud"]}
    assert all(s.cloud.model_version.startswith("tiny_cloud@") for s in labelled)


@pytest.mark.timeout(300)
def test_a_service_impersonating_the_cloud_is_refused_by_the_node(tmp_path, probe, elpv_data):
    """The node holds site A's cell certificate; the service answering at the cloud's address has a
    certificate of another CA: the TLS handshake fails, no image reaches it, the edge decides."""
    from edgefpga.fleet.store import SampleStore
    from edgefpga.fleet.trust import make_site
    from edgefpga.models import elpv

    cells = list(elpv_data.images[elpv.subset("test", elpv_data)[:8]])
    make_site(tmp_path / "site", ["cell-1"])
    make_site(tmp_path / "impostor", ["cell-1"], site="impostor")
    impostor, endpoint = serve(tmp_path, tmp_path / "impostor")
    node = start_node(tmp_path, "collab", hard_threshold=1.0, cloud=endpoint, cloud_deadline=1.0,
                      store=str(tmp_path / "store"), cloud_certs=str(tmp_path / "site"), cloud_identity="cell-1")
    try:
        node.wait_for("engine:")
        probe.wait_matched()
        time.sleep(2.0)  # time enough for a link, were one allowed
        send_all(probe, cells, 1)
        assert spin_until(probe.node, lambda: len(probe.results) == len(cells), 60), node.output()[-3000:]
    finally:
        node.stop()
        impostor.send_signal(signal.SIGTERM)
        out, _ = impostor.communicate(timeout=20)
    hard = [r for r in probe.results if r.hard]
    assert hard and all(r.decided_by == "edge" for r in probe.results)
    assert all(r.escalation in ("no_route", "timeout") for r in hard), [r.escalation for r in hard]
    assert "'answered'" not in out and "'queries'" not in out, out  # not one image reached the impostor
    store = SampleStore(tmp_path / "store")
    assert store.count() == len(hard) and store.count(decided_by="cloud") == 0
