"""Frames waiting for the engine, under a declared policy (the node's ``queue_policy``).

The subscription callbacks only put messages here; one worker thread takes them to the engine,
so a 200 ms inference never stalls the executor (diagnostics, lifecycle and parameter services).

- ``latest``: each take returns only the newest frame; the older waiting ones are returned as
  stale, for the node to count. A cell controller wants the newest frame's verdict, not a backlog:
  a frame's wait is at most one engine call, so stamp-to-result stays under two engine latencies.
- ``all``: each take returns every waiting frame, oldest first, up to the engine's batch, so a
  burst goes through in few engine calls. Beyond ``max_pending`` waiting frames the oldest is
  dropped as overflow (memory stays bounded when the source outruns the engine for good).

Pure Python: no rclpy, so it is tested on its own.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

QUEUE_POLICIES = ("latest", "all")


class FrameQueue:
    def __init__(self):
        self._items: deque[Any] = deque()
        self._ready = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        with self._ready:
            return len(self._items)

    def put(self, item: Any, max_pending: int) -> list[Any]:
        """Add a frame; return the frames dropped to keep at most ``max_pending`` waiting."""
        with self._ready:
            self._items.append(item)
            dropped = [self._items.popleft() for _ in range(len(self._items) - max(1, max_pending))]
            self._ready.notify()
            return dropped

    def take(self, policy: str, max_batch: int, timeout_s: float) -> tuple[list[Any], list[Any]]:
        """(frames for the next engine call, stale frames) once a frame waits or ``timeout_s``
        passed (then both are empty, as after ``close``)."""
        if policy not in QUEUE_POLICIES:
            raise ValueError(f"queue_policy must be one of {', '.join(QUEUE_POLICIES)}, got {policy!r}")
        with self._ready:
            self._ready.wait_for(lambda: self._items or self._closed, timeout_s)
            if not self._items:
                return [], []
            if policy == "latest":
                newest = self._items.pop()
                stale = list(self._items)
                self._items.clear()
                return [newest], stale
            return [self._items.popleft() for _ in range(min(max(1, max_batch), len(self._items)))], []

    def drain(self) -> list[Any]:
        """Every waiting frame, removed (on deactivate: the node counts them as not served)."""
        with self._ready:
            items = list(self._items)
            self._items.clear()
            return items

    def close(self) -> None:
        """Wake a waiting take for good (the worker then stops)."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
