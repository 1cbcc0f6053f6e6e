"""The cloud service and client over a real Zenoh session on loopback (fleet/cloud.py).

A tiny cloud model (the cloud architecture at 32 px, random weights, exported by the pipeline's
exporter with its batch axis) keeps these quick; what is checked is the transport and the
contract: answers equal ONNX Runtime's on the same images, the deadline holds when the service
is slow or absent, replies for other requests are ignored and counted, other classes are refused.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

zenoh = pytest.importorskip("zenoh")
torch = pytest.importorskip("torch")

from edgefpga.fleet.cloud import (  # noqa: E402
    ERROR, NO_ROUTE, TIMEOUT, UNKNOWN_ID, WRONG_CLASSES, CloudClassMismatch, CloudClient, CloudModel, CloudService,
    zenoh_config,
)

from cloud_models import stop_service, tiny_model  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def endpoint():
    return f"tcp/127.0.0.1:{free_port()}"


@pytest.fixture
def server(endpoint):
    session = zenoh.open(zenoh_config(listen=[endpoint]))
    yield session
    session.close()


@pytest.fixture
def client_session(endpoint, server):
    session = zenoh.open(zenoh_config(connect=[endpoint]))
    time.sleep(0.3)  # the peers connect
    yield session
    session.close()


def images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (60 + i, 64), dtype=np.uint8) for i in range(n)]


@pytest.mark.timeout(60)
def test_answers_match_onnxruntime_and_batch(tmp_path, server, client_session):
    model = CloudModel(tiny_model(tmp_path / "cloud"), threads=1)
    with CloudService(server, model, max_batch=8, max_wait_s=0.05) as service:
        time.sleep(0.3)  # the queryable's declaration reaches the client peer
        client = CloudClient(client_session, deadline_s=5.0, classes=["functional", "defective"], edge_model="edge@1")
        assert client.service_info["model_id"] == model.model_id
        imgs = images(6)
        futures = [client.submit(img, edge_scores=[0.1, -0.1], request_id=f"r{i}") for i, img in enumerate(imgs)]
        answers = [f.result(timeout=10) for f in futures]
        direct = model.probabilities(imgs)
        for i, (answer, expected) in enumerate(zip(answers, direct)):
            assert answer.answered, answer
            assert answer.request_id == f"r{i}" and answer.model_id == model.model_id
            np.testing.assert_allclose(answer.probabilities, expected, rtol=1e-5, atol=1e-6)
            assert answer.label == model.classes[int(np.argmax(expected))]
            assert answer.bytes_sent > 0
        assert max(service.batch_sizes) > 1  # concurrent queries ran together
        assert client.counts["answered"] == 6 and client.counts["asked"] == 6


@pytest.mark.timeout(30)
def test_absent_service_no_route_within_deadline(client_session):
    client = CloudClient(client_session, deadline_s=0.5, classes=["functional", "defective"])
    assert client.service_info is None  # no service at connect is not an error
    start = time.perf_counter()
    answer = client.ask(images(1)[0])
    assert time.perf_counter() - start < 0.5 + 0.5
    assert not answer.answered and answer.reason in (NO_ROUTE, TIMEOUT)
    assert client.counts[answer.reason] == 1


@pytest.mark.timeout(30)
def test_slow_service_times_out_within_deadline(server, client_session):
    late: list = []

    def slow(query):  # answers after 3 s, from another thread (the late reply must be harmless)
        def reply():
            time.sleep(3)
            request = json.loads(query.attachment.to_bytes())
            query.reply("edgefpga/cloud/infer", json.dumps({
                "request_id": request["request_id"], "classes": ["functional", "defective"],
                "probabilities": [0.5, 0.5], "label": "functional", "model_id": "slow@1"}))
            late.append(True)
        threading.Thread(target=reply, daemon=True).start()

    queryable = server.declare_queryable("edgefpga/cloud/infer", slow)
    time.sleep(0.3)
    client = CloudClient(client_session, deadline_s=0.5, classes=["functional", "defective"])
    start = time.perf_counter()
    answer = client.ask(images(1)[0])
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5 + 0.5, elapsed
    assert not answer.answered and answer.reason == TIMEOUT
    assert client.counts[TIMEOUT] == 1 and client.counts["answered"] == 0
    queryable.undeclare()


@pytest.mark.timeout(30)
def test_reply_for_unknown_request_is_ignored_and_counted(server, client_session):
    def wrong(query):
        query.reply("edgefpga/cloud/infer", json.dumps({
            "request_id": "someone-else", "classes": ["functional", "defective"], "probabilities": [0.1, 0.9],
            "label": "defective", "model_id": "x@1"}))

    queryable = server.declare_queryable("edgefpga/cloud/infer", wrong)
    time.sleep(0.3)
    client = CloudClient(client_session, deadline_s=1.0, classes=["functional", "defective"])
    start = time.perf_counter()
    answer = client.ask(images(1)[0], request_id="mine")
    assert time.perf_counter() - start < 1.0 + 0.5
    assert not answer.answered and answer.reason == UNKNOWN_ID and answer.label is None
    assert client.counts["unknown_id_replies"] == 1 and client.counts[UNKNOWN_ID] == 1
    queryable.undeclare()


@pytest.mark.timeout(60)
def test_an_ensemble_averages_its_members_each_at_its_own_size(tmp_path, server, client_session):
    first, second = tiny_model(tmp_path / "a", seed=0), tiny_model(tmp_path / "b", seed=1, size=24)
    ensemble = CloudModel([first, second], threads=1)
    imgs = images(4)
    alone = [CloudModel(m, threads=1).probabilities(imgs) for m in (first, second)]
    assert not np.allclose(alone[0], alone[1])  # two different members, else the mean proves nothing
    np.testing.assert_allclose(ensemble.probabilities(imgs), (alone[0] + alone[1]) / 2, atol=1e-9)
    assert ensemble.model_id == "+".join(CloudModel(m, threads=1).model_id for m in (first, second))
    with CloudService(server, ensemble, max_wait_s=0.02):
        time.sleep(0.3)
        client = CloudClient(client_session, deadline_s=5.0, classes=["functional", "defective"])
        assert client.service_info["members"] == ensemble.model_id.split("+")
        answer = client.ask(imgs[0])
        assert answer.answered and answer.model_id == ensemble.model_id
        np.testing.assert_allclose(answer.probabilities, (alone[0][0] + alone[1][0]) / 2, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"members must decide the same classes"):
        CloudModel([first, tiny_model(tmp_path / "c", classes=("ok", "crack", "dark"))], threads=1)


@pytest.mark.timeout(60)
def test_cloud_model_with_other_classes_is_refused(tmp_path, server, client_session):
    model = CloudModel(tiny_model(tmp_path / "cloud3", classes=("ok", "crack", "dark")), threads=1)
    with CloudService(server, model):
        time.sleep(0.3)
        with pytest.raises(CloudClassMismatch, match=r"decides \['ok', 'crack', 'dark'\]"):
            CloudClient(client_session, deadline_s=2.0, classes=["functional", "defective"])
        # a service swapped after connect: it refuses queries in other classes, at once
        client = CloudClient(client_session, deadline_s=2.0)
        client.classes = ["functional", "defective"]
        start = time.perf_counter()
        answer = client.ask(images(1)[0])
        assert time.perf_counter() - start < 1.0
        assert not answer.answered and answer.reason == ERROR and "differ" in answer.detail


@pytest.mark.timeout(30)
def test_answer_in_other_classes_is_refused(server, client_session):
    def other(query):
        request = json.loads(query.attachment.to_bytes())
        query.reply("edgefpga/cloud/infer", json.dumps({
            "request_id": request["request_id"], "classes": ["ok", "bad"], "probabilities": [0.1, 0.9],
            "label": "bad", "model_id": "other@1"}))

    queryable = server.declare_queryable("edgefpga/cloud/infer", other)
    time.sleep(0.3)
    client = CloudClient(client_session, deadline_s=1.0, classes=["functional", "defective"])
    answer = client.ask(images(1)[0])
    assert not answer.answered and answer.reason == WRONG_CLASSES
    assert client.counts["wrong_classes_replies"] == 1
    queryable.undeclare()


@pytest.mark.timeout(60)
def test_bad_image_gets_an_error_reply_and_the_service_keeps_serving(tmp_path, server, client_session):
    model = CloudModel(tiny_model(tmp_path / "cloud"), threads=1)
    with CloudService(server, model):
        time.sleep(0.3)
        client = CloudClient(client_session, deadline_s=2.0, classes=["functional", "defective"])
        bad = client.ask(b"not a png")
        assert not bad.answered and bad.reason == ERROR and "not an image" in bad.detail
        assert client.ask(images(1)[0]).answered


@pytest.mark.timeout(60)
def test_console_script_serves(tmp_path, endpoint):
    folder = tiny_model(tmp_path / "cloud")
    proc = subprocess.Popen([sys.executable, "-m", "edgefpga.fleet.cloud", "--model", str(folder), "--listen", endpoint,
                             "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "on edgefpga/cloud/infer" in proc.stdout.readline()
        with CloudClient(endpoint, deadline_s=2.0, classes=["functional", "defective"]) as client:
            assert client.service_info is not None  # it waited for the link before checking the classes
            answer = client.ask(images(1)[0])
        assert answer.answered and answer.model_id.startswith("cloud@")
    finally:
        out = stop_service(proc)
    assert proc.returncode == 0 and "stopped" in out
