"""Xilinx .bit files for tests: the real header layout around a payload of our choosing."""

from __future__ import annotations

from pathlib import Path


def bit_file(path: Path, part: str, payload: bytes = b"\xaa" * 4096) -> Path:
    """A .bit in Xilinx's header format (fields a-d, then e: the data length and the data)."""
    header = bytes.fromhex("00090ff00ff00ff00ff0000001")
    for key, text in zip("abcd", ("elpv_defect_wrapper;UserID=0XFFFFFFFF", part, "2026/12/02", "02:00:00")):
        raw = text.encode() + b"\0"
        header += key.encode() + len(raw).to_bytes(2, "big") + raw
    path.write_bytes(header + b"e" + len(payload).to_bytes(4, "big") + payload)
    return path
