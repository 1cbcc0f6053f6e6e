"""What every hardware layer kind shares: its resource figure and the calibration it is fitted on.

A hardware layer kind is one Verilog module of ``hw/rtl`` (``ef_conv2d``, ``ef_dense``, ...).
Its Python module under ``hw/layers/`` owns what the rest of the flow asks of it (FINN's
HWCustomOp, in our terms): the lanes it can take, its cycles per frame for a choice of lanes,
and its resources as a function of its RTL parameters (the ``params`` the manifest records for
each stage), fitted on Yosys counts (``sim/calibrate.py`` regenerates ``calibration/*.json``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path

CALIBRATION_DIR = Path(__file__).resolve().parent / "calibration"
BRAM18_BITS = 18 * 1024


@dataclass(frozen=True)
class Resources:
    """One design's (or one stage's) use of the fabric, in the cells Yosys's ``synth_xilinx``
    counts: ``lut`` logic LUTs, ``lutram`` LUTs used as distributed RAM, ``ff`` flip-flops, ``dsp``
    DSP48E1 slices, ``bram18`` block RAM in RAMB18 halves (a RAMB36 counts 2)."""

    lut: float = 0.0
    lutram: float = 0.0
    ff: float = 0.0
    dsp: float = 0.0
    bram18: float = 0.0

    def __add__(self, other: "Resources") -> "Resources":
        return Resources(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def scaled(self, k: float) -> "Resources":
        return Resources(*(getattr(self, f.name) * k for f in fields(self)))

    def board_use(self) -> dict[str, float]:
        """The board's four budgets as ``verify --resources`` reports them (sim/resources.py
        ``used_resources``): LUT RAM counts as LUTs, two RAMB18 as one RAMB36."""
        return {"LUT": round(self.lut + self.lutram), "FF": round(self.ff), "DSP": round(self.dsp),
                "BRAM36": round(self.bram18 / 2, 1)}

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 1) for k, v in asdict(self).items()}


def total(parts) -> Resources:
    out = Resources()
    for part in parts:
        out = out + part
    return out


@lru_cache(maxsize=None)
def calibration(module: str) -> dict:
    """The fitted coefficients of ``module`` (``calibration/<module>.json``: the Yosys data
    points, the fit, and how well it fits)."""
    path = CALIBRATION_DIR / f"{module}.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def clog2(n: int) -> int:
    """Verilog's $clog2."""
    return max(0, math.ceil(math.log2(n))) if n > 1 else 0


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def hls_entries(node, p, params: tuple[str, ...] = (), names: dict[str, str] | None = None,
                skip: tuple[str, ...] = ()) -> dict[str, dict[str, str]]:
    """hls4ml layer name -> precision entries for ``node``: its own types (``p.layers``, under
    hls4ml's ``names`` for them, less ``skip``) and, for each field in ``params`` in input order,
    the result type of hls4ml's constant layer ``<node>_param<i>``. Left to hls4ml, a type would be
    its default ``ap_fixed<16,6>``, cast by truncation."""
    fields = p.layers.get(node.name, {})
    names = names or {}
    out = {node.name: {names.get(k, k): str(v) for k, v in fields.items() if k not in skip}}
    for index, key in enumerate(params):
        if key in fields:
            out[f"{node.name}_param{index}"] = {"result": str(fields[key])}
    return out
