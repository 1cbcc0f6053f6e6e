"""A content-keyed cache shared by every build folder on this machine: the Verilator harness
program and the Yosys counts of each unit are looked up by a digest of everything they are made
from (sources, tool version, flags), so a second build of the same design (a copied build
folder, the next test or bench run, CI on the same machine) skips minutes of Verilator and
Yosys. The ELPV cells decoded from the dataset package's PNGs are kept as arrays (models/elpv.py:
3.6 s of decoding per process becomes 0.6 s of reading), and ccache keeps its objects here
(sim/verilator.py). The emulator's library is cached too, but it reads its weights from the absolute path of
its folder (hls4ml compiles that path in), so its key includes the folder: only a build made
again in the same place reuses it. A different input is a different key: nothing is ever reused
for what it was not made from.

Where: ``$EDGEFPGA_CACHE`` if set (``off`` turns the cache off), else
``$XDG_CACHE_HOME/edgefpga``, else ``~/.cache/edgefpga``. Deleting the folder is always safe.
An unwritable cache is skipped silently: it saves time, it is never needed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path


def cache_root() -> Path | None:
    """The cache folder, or None when ``EDGEFPGA_CACHE=off``."""
    value = os.environ.get("EDGEFPGA_CACHE")
    if value == "off":
        return None
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgefpga"


def digest(*parts: str | bytes) -> str:
    """sha256 (24 hex digits) of the parts, each length-prefixed (no two part lists collide)."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:24]


def cached_file(kind: str, key: str, name: str) -> Path | None:
    """The cached file for ``key`` if present (``kind``: emulator | verilator | yosys)."""
    root = cache_root()
    if root is None:
        return None
    path = root / kind / key / name
    return path if path.is_file() else None


def store_file(kind: str, key: str, source: Path, name: str | None = None) -> None:
    """Copy ``source`` into the cache under ``key`` as ``name`` (default: its own name), atomically:
    a reader never sees half a file."""
    root = cache_root()
    if root is None or not source.is_file():
        return
    folder = root / kind / key
    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{source.name}.{uuid.uuid4().hex}"
        shutil.copy2(source, partial)
        os.replace(partial, folder / (name or source.name))
    except OSError:
        pass


def store_array(kind: str, key: str, name: str, array) -> None:
    """Save a numpy array into the cache under ``key`` as ``name`` (.npy), atomically."""
    import numpy as np

    root = cache_root()
    if root is None:
        return
    folder = root / kind / key
    partial = folder / f".{name}.{uuid.uuid4().hex}.npy"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(partial, array, allow_pickle=False)
        os.replace(partial, folder / name)
    except OSError:
        partial.unlink(missing_ok=True)


def fetch_file(kind: str, key: str, name: str, dest: Path) -> bool:
    """Copy the cached file for ``key`` to ``dest``; False when it is not cached."""
    cached = cached_file(kind, key, name)
    if cached is None:
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}")
    try:
        shutil.copy2(cached, partial)
        os.replace(partial, dest)
    except OSError:
        return False
    return True
