"""Markdown tables for README/docs from bench/results/*.json: `python bench/tables.py reference_models`.

The README's figures are pasted from this output, so that each is one command away from the
measurement it comes from.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def fits_cell(row: dict) -> str:
    share = row["resources"]["share"]
    text = ", ".join(f"{k} {v:.0%}" for k, v in share.items())
    if row["resources"]["fits_within_80_percent"]:
        return text
    over = "; ".join(f"{k} {v['used']:,.0f} > {v['limit']:,.0f}" for k, v in row.get("over_80_percent", {}).items())
    boards = [f"{b} ({max(alt['share'].values()):.0%} at most)" for b, alt in row.get("larger_boards", {}).items()
              if alt["fits_within_80_percent"]]
    return f"{text}; **over the 80 % bar**: {over}; fits {', '.join(boards) or 'none of the larger boards'}"


def reference_row(name: str, row: dict) -> str:
    if "refused" in row:
        reason = row["refused"].split(" does not fit ", 1)[-1]
        return f"| {name} | refused by convert: does not fit {reason} | | | | | | | |"
    fits = row["resources"]["fits_within_80_percent"]
    rate = f"{row['fps_at_clock']:,.0f}" if fits else "(does not fit: no rate quoted)"
    errors = ", ".join(f"{k} {v:+.0%}" for k, v in row.get("predicted", {}).get("error_vs_yosys", {}).items()
                       if v is not None)
    return (f"| {name} | {row['rtl_bit_exact_frames']} of {row['frames']} | {row['emulator_bit_exact_frames']} of "
            f"{row['frames']} | {row['ii_cycles']:,} | {row['ii_over_roofline']} | {row['latency_cycles']:,} | "
            f"{rate} | {fits_cell(row)} | {errors} |")


def reference_models() -> str:
    data = json.loads((RESULTS / "reference_models.json").read_text())
    lines = ["| shape | RTL bit-exact | emulator = integer model | II (cycles) | x roofline | latency (cycles) | "
             "frames/s at the nominal 100 MHz (not placed) | Yosys, share of the board | predicted - Yosys |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, row in data["models"].items():
        lines.append(reference_row(name, row))
        alt = row.get("on_smallest_board_that_holds_it")
        if alt:
            lines.append(reference_row(f"{name} on {alt['board']}", alt))
    return "\n".join(lines) + f"\n\n(bench/results/reference_models.json, commit {data.get('commit', '?')})"


TABLES = {"reference_models": reference_models}

if __name__ == "__main__":
    for name in sys.argv[1:] or list(TABLES):
        print(TABLES[name]())
