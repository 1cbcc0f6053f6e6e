"""The cloud inference service (``edgefpga-cloud``) and the edge's client for it, over Zenoh.

Why Zenoh between the edge and the cloud, not DDS: DDS discovery is multicast on one network and
every participant learns every other; a plant's cell and a server in another network (NAT, a
firewall that lets one TCP port through, a WAN) is exactly what it does not cross. Zenoh peers
connect to a named endpoint (``tcp/server:7447``), route through routers when they must, and
have the query/reply primitive an escalation is: one question, at most one answer, a timeout.
ROS 2 ships the same transport as rmw_zenoh, so a site that moves its cell to Zenoh keeps one stack.

Wire format (key expressions under a prefix, default ``edgefpga/cloud``):

``<prefix>/infer``  query payload: the image as PNG (lossless, what the edge saw, 8 or 16 bit);
                    query attachment: JSON ``{"request_id", "edge_model", "edge_classes",
                    "edge_scores"}``; reply: JSON ``{"request_id", "classes", "probabilities",
                    "label", "model_id", "service_s", "batch"}``, or a reply error naming the reason.
                    Over the site's TLS link the reply also carries ``service`` (the certificate's
                    subject), ``certificate`` (PEM) and ``signature`` (ECDSA over the rest): the edge
                    checks it against the site CA and records who labelled the sample (fleet/trust.py).
``<prefix>/info``   reply: JSON ``{"model_id", "classes", "input", "members", "providers", "max_batch"}``: what
                    the client checks at connect (a cloud model with other classes is refused).

The service batches concurrent queries: the queryable's callback only queues; one worker takes
the first waiting query, then whatever else arrives within ``max_wait_s`` up to ``max_batch``,
and runs them through ONNX Runtime in one call (the cloud model has a batch axis; the CUDA
provider where this onnxruntime has it, else the CPU).

The client never holds the caller past its deadline: ``submit`` returns a future at once and
``ask`` waits on it at most ``deadline_s``; a timeout, no route to a service, an error reply, a
malformed reply or one for another request is a ``CloudAnswer`` with ``answered=False`` and the
reason, and each is counted in ``CloudClient.counts``.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import zenoh

from edgefpga.fleet.trust import Credentials, Signer, TrustError, check_endpoints, verify_answer
from edgefpga.models.card import ModelCard, load_card, resolve_model_dir
from edgefpga.models.preprocess import ImageError, preprocess

# The cloud model the service, the loop demo and bench collab use by default: every EfficientNet-Lite0
# run of ``make train-cloud``, averaged (the rule is "every fine-tuned run, none left out", fixed
# before the runs' test results existed: docs/fleet.md). One would do (``--model elpv_cloud``);
# several, each at its own size, teacher, length or seed, err on fewer of the cells the edge is
# unsure of.
DEFAULT_MODELS = ("elpv_cloud", "elpv_cloud_160", "elpv_cloud_160_distilled", "elpv_cloud_160_e20", "elpv_cloud_s1",
                  "elpv_cloud_300")
DEFAULT_PREFIX = "edgefpga/cloud"
INSECURE_ENDPOINT = "tcp/0.0.0.0:7447"  # only with --insecure
DEFAULT_ENDPOINT = "tls/0.0.0.0:7447"  # the site's mutual TLS (fleet/trust.py); plain tcp/ needs --insecure

# why an escalation got no answer (CloudAnswer.reason, CloudClient.counts)
TIMEOUT = "timeout"  # the deadline passed
NO_ROUTE = "no_route"  # the query ended without any reply: no service reachable
ERROR = "error"  # the service answered with an error (e.g. an image it cannot decode)
MALFORMED = "malformed"  # a reply that is not the JSON the service sends
UNKNOWN_ID = "unknown_id"  # replies only for other request ids (ignored)
WRONG_CLASSES = "wrong_classes"  # an answer in other classes than the edge model's
UNTRUSTED = "untrusted"  # an answer not signed by a certificate of the site CA (with the site's credentials)
REASONS = (TIMEOUT, NO_ROUTE, ERROR, MALFORMED, UNKNOWN_ID, WRONG_CLASSES, UNTRUSTED)


class CloudError(RuntimeError):
    """A cloud service or client that cannot work as configured: the message says why."""


class CloudClassMismatch(CloudError):
    """The cloud model decides other classes than the edge model: its answers would be meaningless."""


def zenoh_config(listen: list[str] | None = None, connect: list[str] | None = None, mode: str = "peer",
                 multicast_scouting: bool = False, config_file: str | Path | None = None,
                 credentials: Credentials | None = None) -> zenoh.Config:
    """A Zenoh configuration with explicit endpoints. Multicast scouting is off by default: a
    plant's network should not find a cloud service by chance, and tests must not find each other.
    A session listens only where told (zenoh's peer default, ``tcp/[::]:0``, would open a plain
    port on every interface). ``credentials``: the site's mutual TLS for ``tls/`` endpoints."""
    config = zenoh.Config.from_file(str(config_file)) if config_file else zenoh.Config()
    config.insert_json5("mode", json.dumps(mode))
    if listen or not config_file:
        config.insert_json5("listen/endpoints", json.dumps(list(listen or [])))
    if connect:
        config.insert_json5("connect/endpoints", json.dumps(list(connect)))
    config.insert_json5("scouting/multicast/enabled", json.dumps(multicast_scouting))
    if credentials is not None:
        config.insert_json5("transport/link/tls", json.dumps(credentials.zenoh_tls()))
    return config


def open_session(listen: list[str] | None = None, connect: list[str] | None = None,
                 credentials: Credentials | None = None, insecure: bool = False, **options) -> zenoh.Session:
    """A Zenoh session under the site's rules: ``tls/`` needs credentials; plain endpoints only on
    loopback or with ``insecure`` (warned). ``options``: the rest of ``zenoh_config``."""
    endpoints = check_endpoints(list(listen or []) + list(connect or []), insecure)
    if credentials is None and any(e.startswith(("tls/", "quic/")) for e in endpoints):
        raise CloudError(f"{', '.join(endpoints)}: a tls/ endpoint needs the site's certificates "
                         "(--certs SITE, made by `edgefpga fleet certs`)")
    return zenoh.open(zenoh_config(listen, connect, credentials=credentials, **options))


def encode_png(image: np.ndarray) -> bytes:
    """The image as lossless PNG: the cloud sees exactly the pixels the edge saw."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image))
    if not ok:
        raise ImageError(f"cannot encode an image of shape {image.shape} and dtype {image.dtype} as PNG")
    return buf.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageError(f"the payload ({len(data)} bytes) is not an image OpenCV can decode")
    return image


def model_id_of(card: ModelCard) -> str:
    """``name@<sha256 prefix of model.onnx>``: names the exact weights that answered."""
    return f"{card.name}@{hashlib.sha256(card.model_path.read_bytes()).hexdigest()[:12]}"


def onnx_providers(prefer_gpu: bool = True) -> list[str]:
    """CUDA where this onnxruntime build has it (a GPU server), else the CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if prefer_gpu and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class _Member:
    """One model folder and its ONNX Runtime session."""

    def __init__(self, model: str | Path, providers: list[str] | None, threads: int):
        import onnxruntime as ort

        self.card = load_card(resolve_model_dir(model))
        self.model_id = model_id_of(self.card)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: onnxruntime's default (all cores)
        self.session = ort.InferenceSession(str(self.card.model_path), options,
                                            providers=providers or onnx_providers())
        self.input_name = self.session.get_inputs()[0].name
        batch = self.session.get_inputs()[0].shape[0]
        self.max_batch = None if not isinstance(batch, int) else batch  # None: any batch

    def logits(self, images: list[np.ndarray]) -> np.ndarray:
        """One ONNX Runtime call (or one per image when the model has a fixed batch of one)."""
        x = np.concatenate([preprocess(img, self.card.input, f"image {i}") for i, img in enumerate(images)])
        if self.max_batch == 1:
            return np.concatenate([self.session.run(None, {self.input_name: x[i:i + 1]})[0] for i in range(len(x))])
        return self.session.run(None, {self.input_name: x})[0]


class CloudModel:
    """A model folder run by ONNX Runtime on batches: probabilities for 8/16-bit images.

    Several folders make an ensemble: their probabilities are averaged, each member reading the
    image at its own input size. A server can afford it, and models that see the cells
    differently (a pretrained net at 224 px, the edge model's float weights at 96 px) err on
    different cells. The members must decide the same classes; the id names every member."""

    def __init__(self, model: str | Path | list[str | Path], providers: list[str] | None = None, threads: int = 0):
        folders = [model] if isinstance(model, (str, Path)) else list(model)
        if not folders:
            raise ValueError("the cloud model needs at least one model folder")
        self.members = [_Member(folder, providers, threads) for folder in folders]
        self.card = self.members[0].card
        for member in self.members[1:]:
            if member.card.classes != self.card.classes:
                raise ValueError(f"{member.card.path}: decides {member.card.classes}, but {self.card.path} decides "
                                 f"{self.card.classes}: an ensemble's members must decide the same classes")
        self.model_id = "+".join(member.model_id for member in self.members)

    @property
    def classes(self) -> list[str]:
        return self.card.classes

    @property
    def providers(self) -> list[str]:
        return self.members[0].session.get_providers()

    @property
    def max_batch(self) -> int | None:
        """The largest batch every member takes in one call (None: any)."""
        fixed = [m.max_batch for m in self.members if m.max_batch is not None]
        return min(fixed) if fixed else None

    def probabilities(self, images: list[np.ndarray]) -> np.ndarray:
        """(N, classes) softmax probabilities, the mean over the members."""
        return np.mean([softmax(m.logits(images).astype(np.float64)) for m in self.members], axis=0)

    def info(self, max_batch: int) -> dict:
        return {"model_id": self.model_id, "classes": self.classes, "input": self.card.input.to_dict(),
                "members": [m.model_id for m in self.members], "providers": self.providers,
                "max_batch": max_batch}


@dataclass
class _Pending:
    query: zenoh.Query
    image: np.ndarray
    request: dict
    arrived: float


class CloudService:
    """The Zenoh queryable that answers escalations with the cloud model, batching what arrives
    together. ``close()`` (or the context manager) undeclares it; the session stays the caller's."""

    def __init__(self, session: zenoh.Session, model: CloudModel, prefix: str = DEFAULT_PREFIX,
                 max_batch: int = 16, max_wait_s: float = 0.005, credentials: Credentials | None = None):
        self.session, self.model, self.prefix = session, model, prefix.rstrip("/")
        self.signer = Signer(credentials) if credentials is not None else None  # None: unsigned answers
        self.max_batch = max(1, min(max_batch, model.max_batch or max_batch))
        self.max_wait_s = max_wait_s
        self.counts: Counter = Counter()
        self.batch_sizes: list[int] = []
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._worker = threading.Thread(target=self._serve, name="cloud-batcher", daemon=True)
        self._worker.start()
        self._infer = session.declare_queryable(f"{self.prefix}/infer", self._on_query)
        self._info = session.declare_queryable(f"{self.prefix}/info", self._on_info)

    def _on_info(self, query: zenoh.Query) -> None:
        query.reply(f"{self.prefix}/info", json.dumps(self.model.info(self.max_batch)))
        query.drop()

    def _on_query(self, query: zenoh.Query) -> None:
        """Zenoh's callback: decode and queue, nothing slow (the worker runs the model)."""
        arrived = time.perf_counter()
        try:
            request = json.loads(query.attachment.to_bytes()) if query.attachment else {}
            if not isinstance(request, dict) or not isinstance(request.get("request_id"), str):
                raise ValueError("the attachment must be JSON with a request_id string")
            edge_classes = request.get("edge_classes")
            if edge_classes is not None and list(edge_classes) != self.model.classes:
                raise ValueError(f"edge classes {edge_classes} differ from the cloud model's {self.model.classes}")
            if query.payload is None:
                raise ImageError("no image in the query")
            image = decode_png(query.payload.to_bytes())
        except (ValueError, ImageError) as exc:  # json.JSONDecodeError is a ValueError
            self.counts["refused"] += 1
            query.reply_err(json.dumps({"error": str(exc)}))
            query.drop()  # finalize now: the client learns at once that no answer follows
            return
        self.counts["queries"] += 1
        self._queue.put(_Pending(query, image, request, arrived))

    def _next_batch(self) -> list[_Pending] | None:
        """The first waiting query, then what else arrives within max_wait_s, up to max_batch."""
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        until = time.perf_counter() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get(timeout=max(0.0, until - time.perf_counter()))
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # finish this batch, then stop
                break
            batch.append(item)
        return batch

    def _serve(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                probs = self.model.probabilities([p.image for p in batch])
            except Exception as exc:  # an image the preprocessing refuses, a runtime failure: answer, don't die
                for p in batch:
                    p.query.reply_err(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
                    p.query.drop()
                self.counts["failed"] += len(batch)
                continue
            self.batch_sizes.append(len(batch))
            done = time.perf_counter()
            for p, prob in zip(batch, probs):
                body = {"request_id": p.request["request_id"], "classes": self.model.classes,
                        "probabilities": [float(v) for v in prob], "label": self.model.classes[int(prob.argmax())],
                        "model_id": self.model.model_id, "service_s": done - p.arrived, "batch": len(batch)}
                # counted before it is sent: a client that has its answer never sees a count without it
                # (the console script prints the counts at SIGTERM)
                self.counts["answered"] += 1
                p.query.reply(f"{self.prefix}/infer", json.dumps(self.signer.sign(body) if self.signer else body))
                p.query.drop()  # finalize: the reply stream ends here, not when Python collects it

    def close(self) -> None:
        self._infer.undeclare()
        self._info.undeclare()
        self._queue.put(None)
        self._worker.join(timeout=5)

    def __enter__(self) -> "CloudService":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class CloudAnswer:
    """The outcome of one escalation. ``answered``: the cloud decided; else ``reason`` says why not
    (one of ``REASONS``) and the edge verdict stands."""

    request_id: str
    answered: bool
    reason: str | None = None
    detail: str = ""
    label: str | None = None
    classes: list[str] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)
    model_id: str | None = None
    latency_s: float = 0.0  # round trip seen by the edge
    service_s: float | None = None  # queue + batch inference at the service
    batch: int | None = None  # how many queries the service ran together with this one
    bytes_sent: int = 0
    service_identity: str | None = None  # the signing certificate's subject; None: unsigned (no site credentials)

    def to_dict(self) -> dict:
        return asdict(self)


class _Exchange:
    """One query in flight: collects its replies, completes its future once (first valid answer,
    or at the end of the query / the deadline with the reason)."""

    def __init__(self, client: "CloudClient", request_id: str, started: float, bytes_sent: int):
        self.client, self.request_id, self.started, self.bytes_sent = client, request_id, started, bytes_sent
        self.future: Future[CloudAnswer] = Future()
        self.rejected: tuple[str, str] | None = None  # the last refused reply's reason, detail
        self.lock = threading.Lock()

    def finish(self, answer: CloudAnswer) -> None:
        with self.lock:
            if self.future.done():
                return
            answer.latency_s = time.perf_counter() - self.started
            answer.bytes_sent = self.bytes_sent
            self.client._count(answer)
            self.future.set_result(answer)

    def fail(self, reason: str, detail: str = "") -> None:
        self.finish(CloudAnswer(self.request_id, answered=False, reason=reason, detail=detail))

    def reject(self, reason: str, detail: str) -> None:
        """A reply that does not answer this request: ignored, counted per kind."""
        self.client._bump(f"{reason}_replies")
        self.rejected = (reason, detail)

    def on_reply(self, reply: zenoh.Reply) -> None:
        if reply.err is not None:
            self.reject(ERROR, _text(reply.err.payload))
            return
        try:
            body = json.loads(reply.ok.payload.to_bytes())
            request_id = body["request_id"]
            probs = [float(p) for p in body["probabilities"]]
            answer = CloudAnswer(self.request_id, True, label=str(body["label"]), classes=list(body["classes"]),
                                 probabilities=probs, model_id=str(body["model_id"]),
                                 service_s=body.get("service_s"), batch=body.get("batch"))
        except (ValueError, KeyError, TypeError) as exc:
            self.reject(MALFORMED, f"{type(exc).__name__}: {exc}")
            return
        if request_id != self.request_id:
            self.reject(UNKNOWN_ID, f"a reply for request {request_id!r}, not {self.request_id!r}: ignored")
            return
        if self.client.ca is not None:
            try:
                answer.service_identity = verify_answer(body, self.client.ca)
            except (TrustError, ValueError) as exc:
                self.reject(UNTRUSTED, str(exc))
                return
        if self.client.classes is not None and answer.classes != self.client.classes:
            self.reject(WRONG_CLASSES, f"cloud classes {answer.classes} != edge classes {self.client.classes}")
            return
        self.finish(answer)

    def on_end(self) -> None:
        """Zenoh dropped the reply handler: every reply is in (or its timeout passed)."""
        if time.perf_counter() - self.started >= self.client.deadline_s:
            self.fail(TIMEOUT, f"no answer within {self.client.deadline_s:g} s")
        elif self.rejected:
            self.fail(*self.rejected)
        else:
            self.fail(NO_ROUTE, f"no cloud service answers on {self.client.prefix}/infer")


def _text(payload: zenoh.ZBytes) -> str:
    raw = payload.to_bytes().decode("utf-8", "replace")
    try:
        return str(json.loads(raw).get("error", raw))
    except (ValueError, AttributeError):
        return raw


class CloudClient:
    """The edge's side: escalate an image, get the cloud's answer or a counted 'no answer' within
    ``deadline_s``. ``session``: an open ``zenoh.Session`` (shared with the rest of the process),
    or a locator such as ``tls/cloud.example:7447`` to open one (closed by ``close()``) with
    ``credentials`` (the cell's, fleet/trust.py; plain ``tcp/`` off loopback needs ``insecure``).
    With ``credentials`` every answer must be signed by a certificate of the site CA (else it is
    ``untrusted``) and names its signer in ``service_identity``.

    ``classes``: the edge model's classes; when the service answers ``info`` at connect, a cloud
    model with other classes raises ``CloudClassMismatch`` here. A service that is not reachable
    at connect is not an error (the edge must start without the cloud): every answer is checked
    against ``classes`` anyway."""

    def __init__(self, session: zenoh.Session | str, deadline_s: float = 0.5, classes: list[str] | None = None,
                 prefix: str = DEFAULT_PREFIX, edge_model: str | None = None, connect_timeout_s: float | None = None,
                 credentials: Credentials | None = None, insecure: bool = False):
        if deadline_s <= 0:
            raise CloudError(f"deadline_s must be positive, got {deadline_s}")
        self._own = isinstance(session, str)
        self.session = open_session(connect=[session], credentials=credentials, insecure=insecure) if self._own \
            else session
        self.ca = credentials.ca if credentials is not None else None  # set: only answers signed under the site CA
        self.deadline_s, self.prefix = float(deadline_s), prefix.rstrip("/")
        self.classes = list(classes) if classes is not None else None
        self.edge_model = edge_model
        self.counts: Counter = Counter()
        self._lock = threading.Lock()
        if self._own:
            self.wait_connected(connect_timeout_s or deadline_s)
        self.service_info = self.check_service(connect_timeout_s or deadline_s)

    def wait_connected(self, timeout_s: float) -> bool:
        """Until the session we opened has a peer or router (at most ``timeout_s``): the
        connect-time class check must not run before the link exists."""
        until = time.perf_counter() + timeout_s
        while time.perf_counter() < until:
            info = self.session.info  # a property in zenoh-python 1.x
            if list(info.peers_zid()) or list(info.routers_zid()):
                time.sleep(0.05)  # the peer's declarations follow the link
                return True
            time.sleep(0.02)
        return False

    def check_service(self, timeout_s: float) -> dict | None:
        """Ask the service which model answers; refuse one with other classes. None: no service
        reachable now (not an error)."""
        info = None
        for reply in self.session.get(f"{self.prefix}/info", timeout=timeout_s):
            if reply.ok is not None:
                try:
                    info = json.loads(reply.ok.payload.to_bytes())
                    break
                except ValueError:
                    continue
        if info and self.classes is not None and list(info.get("classes", [])) != self.classes:
            raise CloudClassMismatch(
                f"cloud model {info.get('model_id')} on {self.prefix} decides {info.get('classes')}, the edge model "
                f"{self.edge_model or ''} decides {self.classes}: refusing to escalate to it")
        return info

    def _count(self, answer: CloudAnswer) -> None:
        """One outcome: ``answered`` or its reason; ``bytes_sent`` for what left the site."""
        with self._lock:
            self.counts["answered" if answer.answered else answer.reason] += 1
            self.counts["bytes_sent"] += answer.bytes_sent

    def _bump(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    def submit(self, image: np.ndarray | bytes, edge_scores: list[float] | None = None,
               request_id: str | None = None, edge_model: str | None = None) -> Future:
        """Send the escalation and return at once: a future that holds a ``CloudAnswer`` by the
        deadline (Zenoh's query timeout ends it). ``image``: an array (sent as PNG) or PNG bytes."""
        return self._send(image, edge_scores, request_id, edge_model).future

    def _send(self, image: np.ndarray | bytes, edge_scores: list[float] | None = None,
               request_id: str | None = None, edge_model: str | None = None) -> _Exchange:
        request_id = request_id or uuid.uuid4().hex
        payload = image if isinstance(image, (bytes, bytearray)) else encode_png(image)
        attachment = json.dumps({"request_id": request_id, "edge_model": edge_model or self.edge_model,
                                 "edge_classes": self.classes,
                                 "edge_scores": None if edge_scores is None else [float(s) for s in edge_scores]})
        exchange = _Exchange(self, request_id, time.perf_counter(), len(payload) + len(attachment))
        self._bump("asked")
        handler = zenoh.handlers.Callback(exchange.on_reply, exchange.on_end)
        try:
            self.session.get(f"{self.prefix}/infer", handler, payload=bytes(payload), attachment=attachment,
                             timeout=self.deadline_s, target=zenoh.QueryTarget.BEST_MATCHING,
                             consolidation=zenoh.ConsolidationMode.NONE)
        except zenoh.ZError as exc:  # a closed session: no route to anything
            exchange.fail(NO_ROUTE, str(exc))
        return exchange

    def ask(self, image: np.ndarray | bytes, edge_scores: list[float] | None = None,
            request_id: str | None = None, edge_model: str | None = None) -> CloudAnswer:
        """The cloud's answer, or a 'no answer' with its reason, within the deadline (plus the
        scheduling slack of one thread wake-up): the caller is never held longer."""
        exchange = self._send(image, edge_scores, request_id, edge_model)
        try:
            return exchange.future.result(timeout=self.deadline_s + 0.05)
        except TimeoutError:  # Zenoh did not end the query in time: the deadline is ours, not its
            exchange.fail(TIMEOUT, f"no answer within {self.deadline_s:g} s")
            return exchange.future.result()

    def close(self) -> None:
        if self._own:
            self.session.close()

    def __enter__(self) -> "CloudClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def build_arg_parser():
    import argparse

    p = argparse.ArgumentParser(prog="edgefpga-cloud", description=(
        "The cloud inference service: answers the edge's escalations over Zenoh with the cloud model "
        "(ONNX Runtime, concurrent queries batched; CUDA where onnxruntime has it)."))
    p.add_argument("--model", nargs="+", default=list(DEFAULT_MODELS), metavar="MODEL",
                   help=f"model folder or zoo name; several: an ensemble, probabilities averaged (default "
                   f"{' '.join(DEFAULT_MODELS)})")
    p.add_argument("--listen", action="append", metavar="ENDPOINT",
                   help=f"Zenoh endpoint to listen on (repeatable; default {DEFAULT_ENDPOINT}, with --insecure "
                   f"{INSECURE_ENDPOINT})")
    p.add_argument("--certs", type=Path, metavar="SITE", help="the site folder of `edgefpga fleet certs`: mutual TLS "
                   "with the service's certificate, answers signed with it")
    p.add_argument("--identity", help="whose certificate in SITE (default: site.json's service)")
    p.add_argument("--insecure", action="store_true", help="allow plain tcp/ off loopback without certificates "
                   "(prints a warning: images and labels cross the network in the clear)")
    p.add_argument("--connect", action="append", metavar="ENDPOINT", help="Zenoh endpoint (a router) to connect to")
    p.add_argument("--mode", default="peer", choices=["peer", "router", "client"], help="Zenoh mode (default peer)")
    p.add_argument("--zenoh-config", metavar="FILE", help="a Zenoh JSON5 configuration to start from")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"key expression prefix (default {DEFAULT_PREFIX})")
    p.add_argument("--max-batch", type=int, default=16, help="largest batch per ONNX Runtime call (default 16)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long the first query of a batch waits "
                   "for others (default 5 ms)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (default: all cores)")
    p.add_argument("--cpu", action="store_true", help="the CPU provider even where CUDA is available")
    return p


def service_session(args) -> tuple[Credentials | None, zenoh.Session]:
    """The service's credentials (``--certs``) and its session: TLS by default; without
    certificates only loopback endpoints or ``--insecure``."""
    from edgefpga.fleet.trust import read_site

    credentials = None
    if args.certs:
        credentials = Credentials.of(args.certs, args.identity or read_site(args.certs)["service"])
    elif not args.insecure and not args.listen and not args.connect:
        raise CloudError(f"listening on {DEFAULT_ENDPOINT} needs the site's certificates: --certs SITE (made by "
                         "`edgefpga fleet certs --out SITE`), or --listen tcp/127.0.0.1:PORT, or --insecure")
    default = DEFAULT_ENDPOINT if credentials else INSECURE_ENDPOINT
    listen = args.listen or ([] if args.connect else [default])
    return credentials, open_session(listen, args.connect, credentials, args.insecure, mode=args.mode,
                                     config_file=args.zenoh_config)


STOP_POLL_S = 0.1  # how often the console script looks whether SIGTERM has come


def main(argv: list[str] | None = None) -> int:
    """``edgefpga-cloud``: serve until interrupted (SIGINT / SIGTERM), then print the counts."""
    import signal
    import sys

    args = build_arg_parser().parse_args(argv)
    try:
        model = CloudModel(args.model, providers=onnx_providers(prefer_gpu=not args.cpu), threads=args.threads)
    except (OSError, ValueError) as exc:  # ModelCardError is a ValueError
        print(f"edgefpga-cloud: error: {exc}", file=sys.stderr)
        return 2
    try:
        credentials, session = service_session(args)
    except (CloudError, TrustError, zenoh.ZError) as exc:
        print(f"edgefpga-cloud: error: {exc}", file=sys.stderr)
        return 2
    # SIGTERM's handler only appends to a list: a handler that takes a lock (Event.set) can wait
    # forever on the one the main thread holds inside Event.wait when the signal lands (a clean CI
    # run saw the service hang at SIGTERM, printing nothing); the main thread polls instead
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    with session, CloudService(session, model, args.prefix, args.max_batch, args.max_wait_ms / 1000,
                               credentials=credentials) as service:
        print(f"edgefpga-cloud: {model.model_id} ({', '.join(model.classes)}) on {args.prefix}/infer, "
              f"providers {model.providers}, batches up to {service.max_batch}, "
              f"{'signed as ' + service.signer.subject if service.signer else 'unsigned answers, no TLS'}", flush=True)
        try:
            while not stopping:
                time.sleep(STOP_POLL_S)
        except KeyboardInterrupt:
            pass
        print(f"edgefpga-cloud: stopped; {dict(service.counts)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
