"""What ``convert`` wrote, fingerprinted, so that ``verify`` can tell an edited or half-written
build folder from the one it checks against (``fingerprints.json``: sha256 per file)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

FINGERPRINTS_FILE = "fingerprints.json"
# what later steps trust; caches (rtl/yosys, sim/) and verify's own output are not in it
FINGERPRINTED = ("model", "rtl/src", "rtl/manifest.json", "hls/firmware", "overlay", "precisions.json", "plan.json",
                 "report.json")
SKIPPED_SUFFIXES = (".so", ".o")  # the emulator's compiled library is rebuilt by whoever loads it


def fingerprint_files(build_dir: Path) -> dict[str, str]:
    """sha256 of every fingerprinted file in ``build_dir``, by path relative to it."""
    files = {}
    for entry in FINGERPRINTED:
        path = build_dir / entry
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in candidates:
            if f.suffix in SKIPPED_SUFFIXES or "__pycache__" in f.parts:
                continue
            files[str(f.relative_to(build_dir))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return files


def write_fingerprints(build_dir: Path) -> int:
    """Record the folder as it is now (convert's last step); return how many files."""
    files = fingerprint_files(build_dir)
    (build_dir / FINGERPRINTS_FILE).write_text(json.dumps(files, indent=1, sort_keys=True) + "\n")
    return len(files)


def check_integrity(build_dir: Path) -> dict:
    """Files missing or changed since convert wrote them: {ok, files, missing, changed, detail}."""
    path = build_dir / FINGERPRINTS_FILE
    if not path.is_file():
        return {"ok": False, "files": 0, "missing": [FINGERPRINTS_FILE], "changed": [],
                "detail": f"{path} is missing: the build is incomplete or from an older version; run "
                          "`edgefpga convert` again"}
    recorded = json.loads(path.read_text())
    current = fingerprint_files(build_dir)
    missing = sorted(f for f in recorded if f not in current)
    changed = sorted(f for f in recorded if f in current and current[f] != recorded[f])
    parts = [f"missing: {', '.join(missing[:5])}" if missing else "",
             f"changed since convert: {', '.join(changed[:5])}" if changed else ""]
    detail = "; ".join(p for p in parts if p) or f"{len(recorded)} files as convert wrote them"
    return {"ok": not missing and not changed, "files": len(recorded), "missing": missing, "changed": changed,
            "detail": detail}
