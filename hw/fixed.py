"""Fixed-point types as hls4ml's ``ap_fixed`` / ``ap_ufixed`` define them, and numpy quantizers
that reproduce their casts. Every type edgefpga chooses rounds to nearest even and saturates
(``AP_RND_CONV, AP_SAT``): ap_fixed's default truncation biases each layer downward and cost
about 14 points of top-1 agreement on the ELPV model (docs/dev/hls4ml-emulator-prototype.md).

The precision search, the ONNX proxy of the quantized network and the report all speak in
these types; ``str(t)`` is the exact string handed to hls4ml, so what the report says is what
the HLS code declares.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

ROUND = "AP_RND_CONV"  # round to nearest, ties to even: ONNX Round and numpy.round do the same
SATURATE = "AP_SAT"


@dataclass(frozen=True)
class FixedType:
    """``width`` bits of which ``integer`` are integer bits (sign included when ``signed``).
    ``integer`` may be negative or exceed ``width``: hls4ml accepts both."""

    width: int
    integer: int
    signed: bool = True

    @property
    def frac(self) -> int:
        return self.width - self.integer

    @property
    def step(self) -> float:
        return 2.0 ** -self.frac

    @property
    def low(self) -> float:
        return -(2.0 ** (self.integer - 1)) if self.signed else 0.0

    @property
    def high(self) -> float:
        return (2.0 ** (self.integer - 1) if self.signed else 2.0 ** self.integer) - self.step

    def __str__(self) -> str:
        base = "ap_fixed" if self.signed else "ap_ufixed"
        return f"{base}<{self.width},{self.integer},{ROUND},{SATURATE}>"

    def with_width(self, width: int) -> "FixedType":
        """Same integer bits (same range), ``width`` total bits: only the resolution changes."""
        return FixedType(width, self.integer, self.signed)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """The value ``x`` takes once cast to this type (round half to even, saturate)."""
        q = np.round(np.asarray(x, np.float64) / self.step) * self.step
        return np.clip(q, self.low, self.high)

    def to_dict(self) -> dict:
        return {**asdict(self), "hls": str(self)}

    @classmethod
    def from_dict(cls, raw: dict) -> "FixedType":
        return cls(int(raw["width"]), int(raw["integer"]), bool(raw.get("signed", True)))


def integer_bits_for(max_abs: float, signed: bool) -> int:
    """Fewest integer bits whose range holds ``max_abs`` (a power of two needs the next bit up)."""
    if max_abs <= 0:
        return 1 if signed else 0
    return math.floor(math.log2(max_abs)) + 1 + int(signed)


def type_for_range(width: int, max_abs: float, signed: bool) -> FixedType:
    """A ``width``-bit type whose range just covers ``max_abs`` (values beyond it saturate)."""
    return FixedType(width, integer_bits_for(max_abs, signed), signed)


def parse_hls_type(text: str) -> FixedType:
    """Parse ``ap_fixed<W,I>`` / ``ap_ufixed<W,I>`` / ``ap_int<W>`` / ``ap_uint<W>`` (the override
    file's spelling; rounding and saturation modes written after W,I are ignored: edgefpga always
    rounds to nearest even and saturates); raise ValueError naming the text otherwise."""
    text = text.replace(" ", "")
    for prefix, signed in (("ap_fixed<", True), ("ap_ufixed<", False), ("ap_int<", True), ("ap_uint<", False)):
        if text.startswith(prefix) and text.endswith(">"):
            parts = text[len(prefix):-1].split(",")
            try:
                width = int(parts[0])
                integer = width if prefix.startswith(("ap_int", "ap_uint")) else int(parts[1])
            except (ValueError, IndexError):
                break
            return FixedType(width, integer, signed)
    raise ValueError(f"'{text}' is not an hls4ml fixed-point type such as ap_fixed<16,6> or ap_ufixed<8,8>")
