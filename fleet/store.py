"""The sample store: every hard sample the edge saw, kept as training data with what was said about it.

One folder is two things at once:

    <root>/<class>/sample_0000042.png   a dataset folder exactly as ``edgefpga train <root>`` reads it:
    <root>/unlabeled/...                 one subfolder per class, filed by the operator's true label,
                                         else the cloud's label, else under unlabeled/ (training skips it)
    <root>/index.sqlite                 one row per sample: the edge's scores, label, confidence and
                                         model version, the cloud's answer if any (with the model version
                                         and the service identity that signed it), the true label if any,
                                         who decided (edge | cloud), and whether the image left the site

Images are written whole, as the camera gave them (training resizes), as PNG: lossless, so a
retrained model sees the pixels the edge saw. A sample is written atomically (a temporary file
renamed into place, its index row committed in the same step), so a crash or a full disk never
leaves a half-written image in a class folder nor an index row without its image; what was stored
before stays as it was.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from edgefpga.models.folder import SPLIT_NAMES, UNLABELED

INDEX_FILE = "index.sqlite"
DECIDERS = ("edge", "cloud")
SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    image TEXT,                 -- relative to the store's root: <folder label>/sample_<id>.png
    created REAL NOT NULL,      -- unix time, seconds
    source TEXT NOT NULL,       -- camera, file or stream the image came from
    edge_model TEXT NOT NULL,   -- the edge model's version
    edge_label TEXT NOT NULL,
    edge_classes TEXT NOT NULL, -- JSON list, the order of the scores
    edge_scores TEXT NOT NULL,  -- JSON list
    edge_probabilities TEXT NOT NULL,
    confidence REAL NOT NULL,
    cloud_model TEXT,
    cloud_label TEXT,
    cloud_classes TEXT,
    cloud_probabilities TEXT,
    cloud_identity TEXT,        -- the answering service's certificate subject (signed answer); NULL: unsigned
    decided_by TEXT NOT NULL CHECK (decided_by IN ('edge', 'cloud')),
    true_label TEXT,
    labeled_by TEXT,
    escalated INTEGER NOT NULL  -- 1: the image left the site (sent to the cloud)
);
CREATE INDEX IF NOT EXISTS samples_created ON samples (created);
CREATE TABLE IF NOT EXISTS retrains (   -- one row per `edgefpga retrain` that ran (its trigger counts from the last)
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,           -- unix time, seconds
    last_sample INTEGER NOT NULL, -- the highest sample id it saw: later ones are new to the next
    base_model TEXT NOT NULL,   -- what it fine-tuned
    outcome TEXT NOT NULL,      -- registered | rejected | failed
    detail TEXT NOT NULL        -- JSON: the gates' figures, the version registered
);
"""
# the label a sample is filed under (and trained as): the operator's, else the cloud's
FOLDER_LABEL = f"COALESCE(true_label, cloud_label, '{UNLABELED}')"
GROUPS = {"label": FOLDER_LABEL, "decided_by": "decided_by", "escalated": "escalated", "edge_model": "edge_model"}


class StoreError(Exception):
    """The store cannot take or change a sample; the message names the folder and the reason.
    Nothing already stored is lost or changed when it is raised."""


@dataclass(frozen=True)
class EdgeOutput:
    """What the edge model said about an image."""

    label: str
    classes: list[str]
    scores: list[float]
    probabilities: list[float]
    confidence: float
    model_version: str

    @classmethod
    def from_result(cls, result, model_version: str | None = None) -> "EdgeOutput":
        """From an Engine ``Result``; ``model_version`` defaults to the result's model id."""
        return cls(result.label, list(result.classes), list(result.scores), list(result.probabilities),
                   float(result.confidence), model_version or result.model_id)


@dataclass(frozen=True)
class CloudOutput:
    """What the cloud model answered for an escalated image."""

    label: str
    classes: list[str]
    probabilities: list[float]
    model_version: str
    service_identity: str | None = None  # who labelled it: the signing certificate's subject (None: unsigned)


@dataclass(frozen=True)
class Sample:
    """One stored sample, as its index row says."""

    id: int
    image: Path  # absolute
    created: float
    source: str
    edge: EdgeOutput
    cloud: CloudOutput | None
    decided_by: str
    true_label: str | None
    labeled_by: str | None
    escalated: bool

    @property
    def label(self) -> str:
        """The label training sees: the folder the image is filed under."""
        return self.true_label or (self.cloud.label if self.cloud else UNLABELED)


def check_label(label: str, what: str) -> str:
    """A label becomes a class folder and a class name in a card: an identifier, and none of the
    names a dataset folder gives another meaning (train/val/test, unlabeled)."""
    if not isinstance(label, str) or not label.isidentifier() or label in (*SPLIT_NAMES, UNLABELED):
        raise StoreError(f"{what} {label!r} cannot name a class folder: it must be an identifier (letters, "
                         f"digits, _) and not one of {', '.join((*SPLIT_NAMES, UNLABELED))}")
    return label


def encode_png(image: np.ndarray) -> bytes:
    """The image as PNG bytes (8- or 16-bit, gray or BGR), encoded before anything touches the disk."""
    import cv2

    if not isinstance(image, np.ndarray) or image.dtype not in (np.uint8, np.uint16) or image.ndim not in (2, 3) \
            or (image.ndim == 3 and image.shape[2] not in (1, 3)) or image.size == 0:
        raise StoreError(f"a sample image must be an 8- or 16-bit gray (H, W) or BGR (H, W, 3) array, got "
                         f"{getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}")
    ok, buffer = cv2.imencode(".png", image)
    if not ok:
        raise StoreError(f"OpenCV could not encode an image of shape {image.shape} as PNG")
    return buffer.tobytes()


def write_atomic(path: Path, data: bytes) -> None:
    """``data`` at ``path`` whole or not at all: written to a temporary file beside it (suffix
    .tmp, which no image reader takes), flushed to the disk, then renamed over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)


def disk_error(folder: Path, exc: BaseException, doing: str) -> StoreError:
    """A StoreError naming the folder; a full disk said as such, since it is the one the site can fix."""
    full = (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or \
        (isinstance(exc, sqlite3.OperationalError) and "full" in str(exc))
    reason = "the disk is full (no space left on device)" if full else str(exc)
    return StoreError(f"{folder}: {doing}: {reason}; nothing of this sample was stored, earlier samples are intact")


def as_time(since: float | datetime | None) -> float | None:
    return since.timestamp() if isinstance(since, datetime) else since


class SampleStore:
    """The store at ``root`` (created if missing). Safe to share between threads of one process;
    several processes may use one store (SQLite locks the index)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.root / INDEX_FILE, isolation_level=None, check_same_thread=False,
                                       timeout=30)
            self._db.executescript(SCHEMA)
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{self.root}: cannot open the sample store: {exc}") from exc
        self._lock = threading.Lock()

    def _migrate(self) -> None:
        """A store made before labels named their source gains the column; its old rows stay NULL
        (no identity recorded: ``edgefpga retrain`` skips their cloud labels and says so)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(samples)")}
        if "cloud_identity" not in columns:
            try:
                self._db.execute("ALTER TABLE samples ADD COLUMN cloud_identity TEXT")
            except sqlite3.OperationalError as exc:  # another process opening the store added it first
                if "duplicate column" not in str(exc):
                    raise

    # ---- writing -------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One exclusive write: committed when the block ends, rolled back if it raises."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # a failed COMMIT may have rolled back already
                    self._db.execute("ROLLBACK")
                raise

    def add(self, image: np.ndarray, edge: EdgeOutput, *, cloud: CloudOutput | None = None,
            true_label: str | None = None, labeled_by: str | None = None, decided_by: str | None = None,
            escalated: bool = False, source: str = "", created: float | None = None) -> Sample:
        """Keep one sample. ``escalated``: the image was sent off the site (required with a cloud
        answer); ``decided_by`` defaults to the cloud when it answered, else the edge."""
        decided_by = decided_by or ("cloud" if cloud else "edge")
        self._check_sample(edge, cloud, true_label, decided_by, escalated)
        png = encode_png(image)
        label = true_label or (cloud.label if cloud else UNLABELED)
        folder = self.root / label
        row = {
            "created": time.time() if created is None else float(created), "source": source,
            "edge_model": edge.model_version, "edge_label": edge.label, "edge_classes": json.dumps(edge.classes),
            "edge_scores": json.dumps(edge.scores), "edge_probabilities": json.dumps(edge.probabilities),
            "confidence": edge.confidence, "cloud_model": cloud.model_version if cloud else None,
            "cloud_label": cloud.label if cloud else None,
            "cloud_classes": json.dumps(cloud.classes) if cloud else None,
            "cloud_probabilities": json.dumps(cloud.probabilities) if cloud else None, "decided_by": decided_by,
            "cloud_identity": cloud.service_identity if cloud else None,
            "true_label": true_label, "labeled_by": labeled_by if true_label else None, "escalated": int(escalated),
        }
        path = None
        try:
            with self._transaction() as db:
                cur = db.execute(f"INSERT INTO samples ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                                 list(row.values()))
                path = folder / f"sample_{cur.lastrowid:07d}.png"
                db.execute("UPDATE samples SET image = ? WHERE id = ?", (str(path.relative_to(self.root)),
                                                                         cur.lastrowid))
                folder.mkdir(exist_ok=True)
                write_atomic(path, png)
                sample_id = cur.lastrowid
        except (OSError, sqlite3.Error) as exc:
            if path is not None and path.exists() and not self._indexed(path):
                path.unlink()  # the image made it, its index row did not (commit failed)
            raise disk_error(folder, exc, f"writing {path.name if path else 'a sample'}") from exc
        return self.get(sample_id)

    def _check_sample(self, edge: EdgeOutput, cloud: CloudOutput | None, true_label: str | None,
                      decided_by: str, escalated: bool) -> None:
        """Refuse a sample whose record would contradict itself, before anything is written."""
        if decided_by not in DECIDERS:
            raise StoreError(f"decided_by must be one of {DECIDERS}, got {decided_by!r}")
        if cloud is not None and not escalated:
            raise StoreError("a cloud answer for an image that was not escalated: an image the cloud saw has left "
                             "the site, pass escalated=True")
        if decided_by == "cloud" and cloud is None:
            raise StoreError("decided_by='cloud' without the cloud's answer")
        if len(edge.scores) != len(edge.classes) or len(edge.probabilities) != len(edge.classes):
            raise StoreError(f"the edge output has {len(edge.classes)} classes but {len(edge.scores)} scores and "
                             f"{len(edge.probabilities)} probabilities")
        if cloud is not None:
            check_label(cloud.label, "the cloud's label")
        if true_label is not None:
            check_label(true_label, "the true label")

    def _indexed(self, path: Path) -> bool:
        rel = str(path.relative_to(self.root))
        return self._db.execute("SELECT 1 FROM samples WHERE image = ?", (rel,)).fetchone() is not None

    def set_true_label(self, sample_id: int, label: str, labeled_by: str = "operator") -> Sample:
        """An operator's verdict on a stored sample: the image moves to that class folder (training
        sees it as that class from now on) and the index records who labelled it."""
        check_label(label, "the true label")
        old = self.get(sample_id)
        new = self.root / label / old.image.name
        try:
            with self._transaction() as db:
                db.execute("UPDATE samples SET true_label = ?, labeled_by = ?, image = ? WHERE id = ?",
                           (label, labeled_by, str(new.relative_to(self.root)), sample_id))
                new.parent.mkdir(exist_ok=True)
                os.replace(old.image, new)
        except (OSError, sqlite3.Error) as exc:
            if new.exists() and not old.image.exists():
                os.replace(new, old.image)  # the move happened, the commit did not: undo it
            raise StoreError(f"{self.root}: labelling sample {sample_id} as {label!r}: {exc}; the sample is "
                             "unchanged") from exc
        if old.image.parent != new.parent and not any(old.image.parent.iterdir()):
            old.image.parent.rmdir()  # an empty class folder would stop `edgefpga train`
        return self.get(sample_id)

    # ---- reading -------------------------------------------------------------------------------

    def get(self, sample_id: int) -> Sample:
        rows = self._select("WHERE id = ?", [sample_id])
        if not rows:
            raise StoreError(f"{self.root}: no sample {sample_id}")
        return rows[0]

    def samples(self, since: float | datetime | None = None, label: str | None = None,
                decided_by: str | None = None, escalated: bool | None = None) -> list[Sample]:
        """Stored samples, oldest first, optionally only those created at or after ``since``, filed
        under ``label``, decided by ``decided_by`` or (not) sent off the site."""
        return self._select(*self._filters(since, label, decided_by, escalated))

    def _select(self, clause: str, args: list) -> list[Sample]:
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM samples {clause} ORDER BY id", args).fetchall()
            names = [d[0] for d in self._db.execute("SELECT * FROM samples LIMIT 0").description]
        return [self._sample(dict(zip(names, row))) for row in rows]

    def count(self, since: float | datetime | None = None, label: str | None = None,
              decided_by: str | None = None, escalated: bool | None = None) -> int:
        """How many samples match (the same filters as ``samples``): what a retraining trigger asks."""
        clause, args = self._filters(since, label, decided_by, escalated)
        with self._lock:
            return self._db.execute(f"SELECT COUNT(*) FROM samples {clause}", args).fetchone()[0]

    def count_by(self, group: str, since: float | datetime | None = None) -> dict:
        """Samples per ``label`` (the folder they are filed under), ``decided_by``, ``escalated``
        (True: the image left the site) or ``edge_model``."""
        if group not in GROUPS:
            raise StoreError(f"cannot count by {group!r}: choose one of {sorted(GROUPS)}")
        clause, args = self._filters(since, None, None, None)
        with self._lock:
            rows = self._db.execute(f"SELECT {GROUPS[group]} AS g, COUNT(*) FROM samples {clause} GROUP BY g "
                                    "ORDER BY g", args).fetchall()
        return {(bool(g) if group == "escalated" else g): n for g, n in rows}

    @staticmethod
    def _filters(since, label, decided_by, escalated) -> tuple[str, list]:
        """A WHERE clause and its arguments; a filter left at None does not restrict."""
        terms, args = [], []
        for term, value in (("created >= ?", as_time(since)), (f"{FOLDER_LABEL} = ?", label),
                            ("decided_by = ?", decided_by),
                            ("escalated = ?", None if escalated is None else int(escalated))):
            if value is not None:
                terms.append(term)
                args.append(value)
        return ("WHERE " + " AND ".join(terms) if terms else ""), args

    def _sample(self, row: dict) -> Sample:
        cloud = None if row["cloud_label"] is None else CloudOutput(
            row["cloud_label"], json.loads(row["cloud_classes"]), json.loads(row["cloud_probabilities"]),
            row["cloud_model"], row["cloud_identity"])
        edge = EdgeOutput(row["edge_label"], json.loads(row["edge_classes"]), json.loads(row["edge_scores"]),
                          json.loads(row["edge_probabilities"]), row["confidence"], row["edge_model"])
        return Sample(id=row["id"], image=self.root / row["image"], created=row["created"], source=row["source"],
                      edge=edge, cloud=cloud, decided_by=row["decided_by"], true_label=row["true_label"],
                      labeled_by=row["labeled_by"], escalated=bool(row["escalated"]))

    # ---- retraining ----------------------------------------------------------------------------

    def record_retrain(self, last_sample: int, base_model: str, outcome: str, detail: dict,
                       at: float | None = None) -> None:
        """A retraining run on this store, passed or not: the next run's ``--min-new`` counts the
        samples after ``last_sample``."""
        row = (time.time() if at is None else at, int(last_sample), base_model, outcome, json.dumps(detail))
        try:
            with self._transaction() as db:
                db.execute("INSERT INTO retrains (at, last_sample, base_model, outcome, detail) VALUES (?, ?, ?, ?, ?)",
                           row)
        except (OSError, sqlite3.Error) as exc:
            raise disk_error(self.root, exc, "recording a retraining run") from exc

    def last_retrain(self) -> dict | None:
        """The latest retraining run on this store (None before the first)."""
        with self._lock:
            row = self._db.execute("SELECT at, last_sample, base_model, outcome, detail FROM retrains "
                                   "ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return {"at": row[0], "last_sample": row[1], "base_model": row[2], "outcome": row[3],
                "detail": json.loads(row[4])}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "SampleStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
