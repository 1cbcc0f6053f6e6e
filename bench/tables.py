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


# the placed-and-routed stages of each reference shape's PYNQ-Z2 build (bench/run.py timing_<...>)
TIMING_RESULTS = {"resnet8_ref": "timing_resnet8.json", "mobilenet_v1_025_ref": "timing_mobilenet.json",
                  "dense_head_ref": "timing_dense_head.json"}


def placed_clock(name: str, row: dict) -> tuple[str, str, str]:
    """(slowest stage's fmax cell, frames/s cell at the placed clock, the timing result's commit)
    from the shape's timing bench, by the rule `verify --timing` uses (rate_at_placed_clock), or
    "not placed" cells when there is none for this board's build or a stage is unmeasured: a rate
    is only quoted at a clock place and route has shown."""
    from edgefpga.sim.verify import rate_at_placed_clock

    path = RESULTS / TIMING_RESULTS.get(name, "-")
    timing = json.loads(path.read_text()) if path.is_file() else None
    if timing is None or not timing.get("build", "").endswith(f"{name}_{row['board']}"):
        return "not placed", "", ""
    placed = rate_at_placed_clock(row, timing)
    if not placed:
        return "not placed", "", ""
    return (f"{timing['min_fmax_mhz']:.1f} ({timing['slowest_stage']})",
            f"{placed['fps_at_placed_clock']:,.0f} at {placed['placed_clock_mhz']:.1f} MHz",
            f"{path.name} {timing.get('commit', '?')}")


def nominal_rate(row: dict) -> str:
    """Frames/s at the board's nominal clock, quoted only for a design that fits."""
    return f"{row['fps_at_clock']:,.0f}" if row["resources"]["fits_within_80_percent"] else \
        "(does not fit: no rate quoted)"


def reference_row(name: str, row: dict, sources: list[str]) -> str:
    if "refused" in row:
        reason = row["refused"].split(" does not fit ", 1)[-1]
        return f"| {name} | refused by convert: does not fit {reason} | | | | | | | | | |"
    fits = row["resources"]["fits_within_80_percent"]
    rate = nominal_rate(row)
    fmax, placed_rate, source = placed_clock(name, row)
    if source:
        sources.append(source)
    placed_rate = placed_rate if fits else ""
    errors = ", ".join(f"{k} {v:+.0%}" for k, v in row.get("predicted", {}).get("error_vs_yosys", {}).items()
                       if v is not None)
    return (f"| {name} | {row['rtl_bit_exact_frames']} of {row['frames']} | {row['emulator_bit_exact_frames']} of "
            f"{row['frames']} | {row['ii_cycles']:,} | {row['ii_over_roofline']} | {row['latency_cycles']:,} | "
            f"{rate} | {fmax} | {placed_rate} | {fits_cell(row)} | {errors} |")


def reference_models() -> str:
    data = json.loads((RESULTS / "reference_models.json").read_text())
    lines = ["| shape | RTL bit-exact | emulator = integer model | II (cycles) | x roofline | latency (cycles) | "
             "frames/s at the nominal clock (not placed) | slowest stage placed on the ECP5, MHz | frames/s at the "
             "placed clock (capped at the nominal) | Yosys, share of the board | predicted - Yosys |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    sources: list[str] = []
    for name, row in data["models"].items():
        lines.append(reference_row(name, row, sources))
        alt = row.get("on_smallest_board_that_holds_it")
        if alt:
            lines.append(reference_row(f"{name} on {alt['board']}", alt, sources))
    return "\n".join(lines) + (f"\n\n(bench/results/reference_models.json, commit {data.get('commit', '?')}"
                               + "".join(f"; {s}" for s in sources) + ")")


def anchors() -> str:
    """Our reference shapes' rates beside the published ones they are judged against, each
    labelled for what it measures: ours the accelerator's interval at the board's nominal clock
    (a projection; fits by Yosys; the slowest stage's placed clock), theirs end to end on a board."""
    from reference_models import MLPERF_TINY_V1_0, MLPERF_TINY_V1_1_XC7Z020

    data = json.loads((RESULTS / "reference_models.json").read_text())
    lines = ["| shape | edgefpga on a PYNQ-Z2: frames/s, the accelerator's interval at 100 MHz (a projection) | "
             "fits by Yosys (80 % of each resource) | slowest stage placed on the ECP5, MHz | frames/s at that clock "
             "(capped at 100 MHz) | published, measured end to end on a board |", "|---|---|---|---|---|---|"]
    for name, row in data["models"].items():
        if "refused" in row:
            continue
        fits = row["resources"]["fits_within_80_percent"]
        rate = nominal_rate(row)
        fmax, placed_rate, _ = placed_clock(name, row)
        published = [f"{a['inferences_per_s']:,g}/s: {a['system']} ({label})"
                     for table, label in ((MLPERF_TINY_V1_1_XC7Z020, "MLPerf Tiny v1.1"),
                                          (MLPERF_TINY_V1_0, "MLPerf Tiny v1.0"))
                     for a in [table.get(name)] if a]
        lines.append(f"| {name} | {rate} | {'yes' if fits else 'no'}, at most "
                     f"{max(row['resources']['share'].values()):.0%} | {fmax} | {placed_rate if fits else ''} | "
                     f"{'; '.join(published) or 'none (a shape of our own)'} |")
    return "\n".join(lines) + f"\n\n(bench/results/reference_models.json, commit {data.get('commit', '?')})"


TABLES = {"reference_models": reference_models, "anchors": anchors}

if __name__ == "__main__":
    for name in sys.argv[1:] or list(TABLES):
        print(TABLES[name]())
