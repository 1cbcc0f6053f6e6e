"""Hard examples from the inspection node to the cloud model, without ever blocking the edge.

A result whose confidence is under the node's ``hard_threshold`` (and within its
``escalation_budget``, fleet/mining.py) is *hard*. With a cloud service
configured (``cloud``: a Zenoh locator, fleet/cloud.py) its image is sent there; the engine's
worker goes on with the next frame at once (``CloudClient.submit``), and the result is published
when the cloud answers or its deadline passes, whichever is first: ``decided_by`` says whose
verdict it is, both models' probabilities travel in the message, ``escalation`` says what
happened (``answered``, ``timeout``, ``no_route``, ...; the edge verdict stands unless
answered). At most ``MAX_IN_FLIGHT`` escalations wait; beyond that a hard result is published
with the edge verdict at once (``escalation: overflow``), so a slow or absent cloud cannot grow
the node's memory or delay the line. With a sample store (``store``: a folder, fleet/store.py)
every hard sample is kept with both outputs, marked escalated or not: images leave the site only
when ``cloud`` is set.
"""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np

MAX_IN_FLIGHT = 64


def cloud_verdict(msg, answer, defect_classes: list[str]) -> None:
    """Restate ``msg`` (an edge InspectionResult) with the cloud's answer."""
    probs = [float(p) for p in answer.probabilities]
    msg.decided_by, msg.cloud_model_id = "cloud", answer.model_id or ""
    msg.cloud_probabilities, msg.class_probabilities = probs, probs
    msg.label_index = int(np.argmax(probs))
    msg.label = msg.class_names[msg.label_index]
    msg.score = float(sum(p for c, p in zip(msg.class_names, probs) if c in defect_classes))
    msg.defective = msg.score >= msg.defect_threshold


class Escalator:
    """Sends hard results to the cloud (when configured), stores them (when configured) and
    publishes each exactly once through ``publish``."""

    def __init__(self, client, store, publish: Callable, count: Callable[[str], None], log: Callable[[str], None]):
        self.client, self.store = client, store
        self.publish, self.count, self.log = publish, count, log
        self.lock = threading.Lock()
        self.in_flight = 0

    def close(self) -> None:
        for part in (self.client, self.store):
            if part is not None:
                part.close()

    def handle(self, msg, image: np.ndarray, result, model_version: str) -> None:
        """A hard result: escalate it (publication deferred to the answer) or publish it now."""
        if self.client is None:
            self.finish(msg, image, result, model_version, None)
            return
        with self.lock:
            full = self.in_flight >= MAX_IN_FLIGHT
            if not full:
                self.in_flight += 1
        if full:
            msg.escalation = "overflow"
            self.finish(msg, image, result, model_version, None)
            return
        future = self.client.submit(image, edge_scores=[float(v) for v in result.scores],
                                    edge_model=result.model_id)
        future.add_done_callback(lambda f: self._answered(f, msg, image, result, model_version))

    def _answered(self, future, msg, image, result, model_version: str) -> None:
        with self.lock:
            self.in_flight -= 1
        try:
            answer = future.result()
        except Exception as exc:  # noqa: BLE001  (the edge verdict stands, whatever the link did)
            msg.escalation = f"error: {type(exc).__name__}"
            self.finish(msg, image, result, model_version, None)
            return
        msg.escalation = "answered" if answer.answered else (answer.reason or "no_answer")
        if answer.answered:
            cloud_verdict(msg, answer, list(result.defect_classes))
        self.finish(msg, image, result, model_version, answer if answer.answered else None)

    def finish(self, msg, image, result, model_version: str, answer) -> None:
        """Store, then publish: a hard result anyone has seen is already in the store (a node
        stopped right after its last result loses no sample)."""
        self.count(f"escalation.{msg.escalation}" if msg.escalation else "hard")
        if self.store is not None:
            self.keep(image, result, model_version, answer, escalated=bool(msg.escalation) and
                      msg.escalation != "overflow")
        self.publish(msg)

    def keep(self, image, result, model_version: str, answer, escalated: bool) -> None:
        from edgefpga.fleet.store import CloudOutput, EdgeOutput, StoreError

        cloud = None if answer is None else CloudOutput(answer.label, list(answer.classes),
                                                        [float(p) for p in answer.probabilities], answer.model_id,
                                                        answer.service_identity)
        try:
            self.store.add(image, EdgeOutput.from_result(result, model_version), cloud=cloud,
                           escalated=escalated or cloud is not None, source="inspection node")
            self.count("stored")
        except (StoreError, ValueError) as exc:  # a full disk must not stop the line: counted, logged
            self.count("store_failed")
            self.log(f"hard sample not stored: {exc}")
