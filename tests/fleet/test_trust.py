"""The site's trust on the edge-cloud link (fleet/trust.py): real eclipse-zenoh sessions over
``tls/`` on loopback with certificates made by ``edgefpga fleet certs``.

What is checked is what a plant relies on: a cell of the site gets answers signed and named by
the service; a client whose certificate another CA signed, or that has none, gets nothing; a
service that impersonates the cloud without the site CA's certificate is never heard by the cell;
an answer altered or signed outside the site is refused; plain endpoints off loopback need
``--insecure`` and say so.
"""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

zenoh = pytest.importorskip("zenoh")
torch = pytest.importorskip("torch")

from edgefpga.cli import main  # noqa: E402
from edgefpga.fleet.cloud import (  # noqa: E402
    NO_ROUTE, TIMEOUT, UNTRUSTED, CloudClient, CloudError, CloudModel, CloudService, open_session,
)
from edgefpga.fleet.trust import (  # noqa: E402
    Credentials, Signer, TrustError, check_endpoints, make_site, read_site, verify_answer,
)

from cloud_models import stop_service, tiny_model  # noqa: E402

CLASSES = ["functional", "defective"]
pytestmark = pytest.mark.timeout(60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    """Two sites, each with its own CA: ``a`` (the plant) and ``b`` (anyone else)."""
    root = tmp_path_factory.mktemp("sites")
    return {name: (root / name, make_site(root / name, ["cell-1", "cell-2"], site=f"site {name}"))
            for name in ("a", "b")}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return CloudModel(tiny_model(tmp_path_factory.mktemp("cloud") / "cloud"), threads=1)


def creds(sites, site: str, identity: str) -> Credentials:
    return Credentials.of(sites[site][0], identity)


def image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (64, 64), dtype=np.uint8)


class Service:
    """A cloud service on ``tls/127.0.0.1:<free port>`` with the given identity's certificate."""

    def __init__(self, model, credentials: Credentials):
        self.endpoint = f"tls/127.0.0.1:{free_port()}"
        self.session = open_session(listen=[self.endpoint], credentials=credentials)
        self.service = CloudService(self.session, model, credentials=credentials)

    def close(self):
        self.service.close()
        self.session.close()


@pytest.fixture
def cloud(model, sites):
    service = Service(model, creds(sites, "a", "edgefpga-cloud"))
    yield service
    service.close()


def ask_once(endpoint: str, credentials: Credentials, deadline_s: float = 1.0):
    """One escalation from a fresh cell session; the answer and the client's counts."""
    with CloudClient(endpoint, deadline_s=deadline_s, classes=CLASSES, credentials=credentials,
                     connect_timeout_s=1.0) as client:
        return client.ask(image()), client


def test_site_certificates_and_cli(tmp_path, capsys):
    site = tmp_path / "site"
    assert main(["fleet", "certs", "--out", str(site), "--cell", "line1-cam", "--host", "127.0.0.1",
                 "--site", "Plant 7"]) == 0
    assert "identities edgefpga-cloud, line1-cam" in capsys.readouterr().out
    info = read_site(site)
    assert info["identities"] == {"edgefpga-cloud": "O=Plant 7,CN=edgefpga-cloud",
                                  "line1-cam": "O=Plant 7,CN=line1-cam"}
    assert info["labelers"] == ["O=Plant 7,CN=edgefpga-cloud"]  # a cell is no labeller
    for key in ("ca.key", "edgefpga-cloud.key", "line1-cam.key"):
        assert stat.S_IMODE((site / key).stat().st_mode) == 0o600
    before = {p.name: p.read_bytes() for p in site.glob("*.crt")}
    assert main(["fleet", "certs", "--out", str(site), "--cell", "line2-cam"]) == 0  # a cell added later
    after = {p.name: p.read_bytes() for p in site.glob("*.crt")}
    assert all(after[name] == data for name, data in before.items())  # the CA and old identities kept
    assert "line2-cam.crt" in after and "line2-cam" in read_site(site)["identities"]
    assert main(["fleet", "certs", "--out", str(tmp_path / "bad"), "--cell", "../x"]) == 2
    assert "identity '../x'" in capsys.readouterr().err
    with pytest.raises(TrustError, match="missing; make the site's certificates"):
        Credentials.of(site, "line9-cam")


@pytest.mark.timeout(60)
def test_a_site_cell_gets_signed_answers_named_by_the_service(cloud, model, sites):
    answer, client = ask_once(cloud.endpoint, creds(sites, "a", "cell-1"), deadline_s=5.0)
    assert answer.answered, answer
    assert answer.service_identity == "O=site a,CN=edgefpga-cloud" and answer.model_id == model.model_id
    np.testing.assert_allclose(answer.probabilities, model.probabilities([image()])[0], rtol=1e-5, atol=1e-6)
    # the service counts an answer after its reply has left: the client may hold it a moment sooner
    deadline = time.monotonic() + 2.0
    while cloud.service.counts["answered"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cloud.service.counts["answered"] == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("who", ["other CA", "no certificate", "plain tcp"])
def test_a_client_outside_the_site_ca_gets_nothing(cloud, sites, tmp_path, who):
    if who == "other CA":
        answer, client = ask_once(cloud.endpoint, creds(sites, "b", "cell-1"))
    elif who == "no certificate":  # trusts the site CA, but has no certificate of its own to show
        config = zenoh.Config()
        config.insert_json5("listen/endpoints", "[]")
        config.insert_json5("connect/endpoints", json.dumps([cloud.endpoint]))
        config.insert_json5("scouting/multicast/enabled", "false")
        config.insert_json5("transport/link/tls", json.dumps({"root_ca_certificate": str(sites["a"][0] / "ca.crt")}))
        with zenoh.open(config) as session:
            time.sleep(0.5)
            assert not list(session.info.peers_zid())
            client = CloudClient(session, deadline_s=1.0, classes=CLASSES)
            answer = client.ask(image())
    else:
        answer, client = ask_once(cloud.endpoint.replace("tls/", "tcp/"), None)
    assert not answer.answered and answer.reason in (NO_ROUTE, TIMEOUT), answer
    assert cloud.service.counts["queries"] == 0  # the image never reached the service


@pytest.mark.timeout(60)
def test_a_service_impersonating_the_cloud_is_refused(model, sites):
    impostor = Service(model, creds(sites, "b", "edgefpga-cloud"))  # another CA's "edgefpga-cloud"
    try:
        answer, client = ask_once(impostor.endpoint, creds(sites, "a", "cell-1"))
        assert not answer.answered and answer.reason in (NO_ROUTE, TIMEOUT), answer
        assert impostor.service.counts["queries"] == 0  # the cell's image never reached it
        assert client.service_info is None
    finally:
        impostor.close()


def test_another_site_identity_answering_in_the_clouds_place_is_named(model, sites):
    """A cell's own certificate names the cell, not the address the cells dial: the cell's TLS
    refuses it as the service. A site identity issued for that address passes the link, but its
    answers carry its own subject, which the site does not list as a labeller."""
    cell_as_service = Service(model, creds(sites, "a", "cell-2"))
    try:
        answer, _ = ask_once(cell_as_service.endpoint, creds(sites, "a", "cell-1"))
        assert not answer.answered and cell_as_service.service.counts["queries"] == 0
    finally:
        cell_as_service.close()
    info = make_site(sites["a"][0], [], service="spare-server", hosts=["127.0.0.1"])
    assert info["labelers"] == ["O=site a,CN=edgefpga-cloud"]  # issuing another identity trusts nobody new
    rogue = Service(model, creds(sites, "a", "spare-server"))
    try:
        answer, _ = ask_once(rogue.endpoint, creds(sites, "a", "cell-1"), deadline_s=5.0)
        assert answer.answered and answer.service_identity == "O=site a,CN=spare-server"
    finally:
        rogue.close()


def test_altered_or_foreign_answers_are_refused(sites):
    body = {"request_id": "r1", "label": "functional", "probabilities": [0.9, 0.1], "model_id": "cloud@1"}
    ca = sites["a"][0] / "ca.crt"
    signed = Signer(creds(sites, "a", "edgefpga-cloud")).sign(body)
    assert verify_answer(json.loads(json.dumps(signed)), ca) == "O=site a,CN=edgefpga-cloud"  # through JSON
    with pytest.raises(TrustError, match="signature does not match"):
        verify_answer(signed | {"label": "defective"}, ca)
    with pytest.raises(TrustError, match="signature does not match O=site a,CN=cell-1"):  # a cell claiming the cloud
        other = Signer(creds(sites, "a", "cell-1")).sign(body)
        verify_answer(other | {"service": signed["service"]}, ca)
    liar = Signer(creds(sites, "a", "cell-1"))
    liar.subject = signed["service"]  # a site cell that signs its own claim to be the cloud
    with pytest.raises(TrustError, match="claims 'O=site a,CN=edgefpga-cloud' but is signed by 'O=site a,CN=cell-1'"):
        verify_answer(liar.sign(body), ca)
    with pytest.raises(TrustError, match="not signed by the site CA"):
        verify_answer(Signer(creds(sites, "b", "edgefpga-cloud")).sign(body), ca)
    with pytest.raises(TrustError, match="unsigned answer"):
        verify_answer(body, ca)


@pytest.mark.timeout(60)
def test_an_unsigned_service_is_untrusted_by_a_cell_with_credentials(model, sites):
    """Over plain loopback a service without credentials answers unsigned: a cell that has the
    site's credentials counts that as untrusted and keeps its own verdict."""
    endpoint = f"tcp/127.0.0.1:{free_port()}"
    with open_session(listen=[endpoint]) as server, CloudService(server, model):
        answer, client = ask_once(endpoint, creds(sites, "a", "cell-1"), deadline_s=2.0)
    assert not answer.answered and answer.reason == UNTRUSTED and "unsigned answer" in answer.detail
    assert client.counts["untrusted_replies"] == 1


def test_plain_endpoints_only_on_loopback_or_insecure(sites):
    assert check_endpoints(["tcp/127.0.0.1:7447", "tcp/[::1]:7447", "tcp/localhost:7447", "tls/10.0.0.5:7447"])
    with pytest.raises(TrustError, match="tcp/ is not encrypted and not on loopback"):
        check_endpoints(["tcp/10.0.0.5:7447"])
    warnings = []
    check_endpoints(["tcp/10.0.0.5:7447"], insecure=True, warn=warnings.append)
    assert len(warnings) == 1 and "WARNING" in warnings[0] and "unencrypted" in warnings[0]
    with pytest.raises(CloudError, match="needs the site's certificates"):
        open_session(connect=["tls/127.0.0.1:7447"])
    with pytest.raises(TrustError, match="not encrypted"):
        CloudClient("tcp/192.0.2.1:7447", deadline_s=0.5)


def test_service_cli_refuses_plain_defaults(tmp_path, capsys):
    from edgefpga.fleet.cloud import main as cloud_main

    folder = tiny_model(tmp_path / "cloud")
    assert cloud_main(["--model", str(folder), "--threads", "1"]) == 2
    assert "needs the site's certificates: --certs SITE" in capsys.readouterr().err
    assert cloud_main(["--model", str(folder), "--threads", "1", "--listen", "tcp/192.0.2.1:7447"]) == 2
    assert "tcp/ is not encrypted and not on loopback" in capsys.readouterr().err


@pytest.mark.timeout(60)
def test_console_script_serves_over_tls(tmp_path, sites):
    endpoint = f"tls/127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-m", "edgefpga.fleet.cloud", "--model", str(tiny_model(tmp_path / "m")),
                             "--certs", str(sites["a"][0]), "--listen", endpoint, "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "signed as O=site a,CN=edgefpga-cloud" in proc.stdout.readline()
        answer, _ = ask_once(endpoint, creds(sites, "a", "cell-1"), deadline_s=5.0)
        assert answer.answered and answer.service_identity == "O=site a,CN=edgefpga-cloud"
    finally:
        out = stop_service(proc)
    assert proc.returncode == 0 and "'answered': 1" in out


class Tap:
    """A TCP relay on loopback that forwards to ``port`` and keeps every byte it carried: what a
    capture on the plant network would see."""

    def __init__(self, port: int):
        import threading

        self.port, self.seen, self._server = port, bytearray(), socket.create_server(("127.0.0.1", 0))
        self.listen_port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading

        while True:
            try:
                inbound, _ = self._server.accept()
            except OSError:
                return
            outbound = socket.create_connection(("127.0.0.1", self.port))
            for a, b in ((inbound, outbound), (outbound, inbound)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while data := src.recv(65536):
                self.seen += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            dst.close()

    def close(self):
        self._server.close()


@pytest.mark.parametrize("secure", [True, False])
def test_a_capture_of_the_link_shows_no_image_bytes_in_the_clear(model, sites, secure):
    """The escalated PNG crosses the wire: over the site's TLS not one 48-byte run of it is
    readable in the capture; over plain tcp/ (the control) it is."""
    from edgefpga.fleet.cloud import encode_png

    service_creds, cell = (creds(sites, "a", "edgefpga-cloud"), creds(sites, "a", "cell-1")) if secure else (None, None)
    port = free_port()
    scheme = "tls" if secure else "tcp"
    with open_session(listen=[f"{scheme}/127.0.0.1:{port}"], credentials=service_creds) as server, \
            CloudService(server, model, credentials=service_creds):
        tap = Tap(port)
        try:
            with CloudClient(f"{scheme}/127.0.0.1:{tap.listen_port}", deadline_s=5.0, classes=CLASSES,
                             credentials=cell, connect_timeout_s=2.0) as client:
                png = encode_png(image(7))
                assert client.ask(png).answered
        finally:
            tap.close()
    runs = [png[i:i + 48] for i in range(64, len(png) - 48, 48)]
    assert len(tap.seen) > len(png)  # the image did cross the tap
    leaked = sum(run in tap.seen for run in runs)
    assert (leaked == 0) if secure else (leaked == len(runs)), (leaked, len(runs))
