"""Two products per DSP48E1 (issue 29, item 1): what pairing output lanes in one DSP48 buys a
quantized model on a PYNQ-Z2. `python bench/run.py pack` writes bench/results/pack.json.

ELPV's architecture trained quantization-aware at W8A8 and W4A4 (``edgefpga train elpv --like
elpv_defect --epochs E --qat WxAy``, E = $EDGEFPGA_PACK_EPOCHS, default 2: the accelerator of a
QONNX model has the model's own widths, so its II and resources do not depend on how long it
trained; its accuracy does, and is reported, not judged). Each is converted for a PYNQ-Z2 twice
in the same run: as ``convert`` builds it (output lanes 2q and 2q+1 of a convolution share one
DSP48 where 2*WW + XW + 1 <= 25, hw/layers/conv.py ``packable``, if that plans a shorter interval
than without pairs: hw/plan.py ``plan_layers``) and, the baseline, with that rule off (every
product its own DSP48, as before). Reported side by side: the planned II and
frames/s at the nominal 100 MHz (not placed and routed), DSP products per cycle, the predicted
resources and whether they fit. The packed W8A8 build is then verified on all 654 test cells:
the integer model against qonnx's execution of the QONNX file, the RTL bit for bit against the
integer model, and Yosys's count of the design (``verify --resources``).

The rule, fixed before the results: the same model files for both arms; checks: the packed
design fits, its II is at most the baseline's, and it is bit-exact on 654 of 654.

And why the float models keep their widths (``float_models``): the shipped ELPV model and the
reference shapes converted with the precision search's widest types capped at packable widths
(8-bit weights and activations; 7-bit weights and 10-bit activations): the agreement with float
that the widest capped design reaches on the calibration images, against each model's bar. Below
the bar convert refuses the caps, and these models are built at their searched widths, unpaired.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from unittest import mock

from qat import exactness, hardware, progress, trained

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "pack"
ARMS = ("W8A8", "W4A4")
VERIFIED = "W8A8"


def converted(model_dir: Path, out: Path, pack: bool) -> Path:
    """``model_dir`` converted for a PYNQ-Z2 into ``out``; with ``pack`` False, the baseline: the
    rule that pairs output lanes in a DSP48 turned off for this conversion only."""
    from edgefpga.hw.convert import ConvertConfig, convert

    if out.exists():
        shutil.rmtree(out)
    start = time.perf_counter()
    config = ConvertConfig(board="pynq-z2", progress=False)
    if pack:
        convert(str(model_dir), out, config, force=True)
    else:
        with mock.patch("edgefpga.hw.layers.conv.packable", lambda xw, ww: False):
            convert(str(model_dir), out, config, force=True)
    progress(f"converted {model_dir.name} {'packed' if pack else 'unpacked'} in {time.perf_counter() - start:.0f} s")
    return out


def dsp_products(build: Path) -> dict:
    """Products per cycle in DSP48s and the DSP48s they take (the plan's layers)."""
    plan = json.loads((build / "plan.json").read_text())
    rows = [row for row in plan["layers"] if row["dsp"] and row["multipliers"]]
    return {"products_in_dsps": sum(row["multipliers"] for row in rows),
            "dsp48_for_products": round(sum(row["resources"]["dsp"] for row in rows)),
            "layers": {row["node"]: {"lanes": [row["ci"], row["po"], row["kp"]], "multipliers": row["multipliers"],
                                     "dsp": row["dsp"], "dsp48": round(row["resources"]["dsp"]),
                                     "widths": [row["widths"]["xw"], row["widths"]["ww"]]}
                       for row in plan["layers"] if row["multipliers"]}}


def placed(packed_build: Path, unpacked_build: Path) -> dict:
    """The packed convolutions placed and routed on the ECP5 (sim/timing.py, as `verify --timing`),
    and the same layers unpacked: fmax per stage, side by side (the ECP5's 18 x 18 multipliers take
    a pair's 9 x 25 product in two, with the offset's adder after them)."""
    from edgefpga.sim.timing import timing_report

    manifest = json.loads((packed_build / "rtl" / "manifest.json").read_text())
    names = [st["name"] for st in manifest["stages"] if st["module"] == "ef_conv2d" and st["params"].get("PACK")
             and st["dsp"] and st["params"]["PO"] > 1]
    result = {}
    for form, build in (("packed", packed_build), ("unpacked", unpacked_build)):
        report = timing_report(build / "rtl", 100.0, jobs=2, progress=False, only=names)
        result[form] = {"fmax_mhz": {k: v for k, v in report["stages"].items() if k in names},
                        "slowest": report["slowest_stage"], "min_fmax_mhz": report["min_fmax_mhz"],
                        "device": report["device"], "tool": report["tool"]}
        progress(f"timing {form}: {result[form]['fmax_mhz']}")
    return result


FLOAT_MODELS = ("elpv_defect", "mobilenet_v1_025_ref", "resnet8_ref")
CAPS = ((8, 8), (7, 10))  # (weight bits, activation bits): 2*WW + XW + 1 <= 25
AGREEMENT = re.compile(r"top-1 agreement ([0-9.]+)% on the search part and ([0-9.]+)% on the held-out part.*"
                       r"below the ([0-9.]+)% agreement bar")


def capped(name: str, weight_bits: int, activation_bits: int) -> dict:
    """``name`` converted with the search's widest types capped: the agreement its widest capped
    design reaches (convert's own refusal, read back), or, where that meets the bar, the build's II."""
    from edgefpga.hw import precision
    from edgefpga.hw.convert import ConvertConfig, convert
    from edgefpga.hw.precision import PrecisionError
    from edgefpga.models.card import ZOO

    out = WORK / f"{name}_w{weight_bits}a{activation_bits}"
    start = time.perf_counter()
    with mock.patch.object(precision, "WEIGHT_BITS", (precision.WEIGHT_BITS[0], weight_bits)), \
            mock.patch.object(precision, "ACTIVATION_BITS", (precision.ACTIVATION_BITS[0], activation_bits)):
        try:
            report = convert(str(ZOO / name), out, ConvertConfig(board="pynq-z2", progress=False), force=True)
        except PrecisionError as refused:
            found = AGREEMENT.search(str(refused))
            return {"meets_bar": False, "refusal": str(refused), "seconds": round(time.perf_counter() - start, 1),
                    **({"agreement_search_part": float(found.group(1)) / 100,
                        "agreement_held_out": float(found.group(2)) / 100, "bar": float(found.group(3)) / 100}
                       if found else {})}
    return {"meets_bar": True, "ii_cycles": report["estimate"]["ii_cycles"],
            "paired_multipliers": report["estimate"]["paired_multipliers"],
            "seconds": round(time.perf_counter() - start, 1)}


def float_models() -> dict:
    rows = {}
    for name in FLOAT_MODELS:
        for weight_bits, activation_bits in CAPS:
            row = capped(name, weight_bits, activation_bits)
            rows.setdefault(name, {})[f"W{weight_bits}A{activation_bits}"] = row
            progress(f"{name} at W{weight_bits}A{activation_bits}: " + (
                "meets its bar" if row["meets_bar"] else
                f"{row.get('agreement_search_part', float('nan')):.2%} agreement, bar {row.get('bar', float('nan')):.2%}"))
    return rows


def bench_pack(epochs: int | None = None, arms: tuple[str, ...] = ARMS) -> dict:
    epochs = epochs or int(os.environ.get("EDGEFPGA_PACK_EPOCHS", "2"))
    rows, checks = {}, {}
    for arm in arms:
        model_dir = trained(arm, epochs, WORK)
        card = json.loads((model_dir / "card.json").read_text())
        row = {"test_accuracy": card["metrics"]["test"]["accuracy"], "epochs": epochs}
        for form, pack in (("packed", True), ("unpacked", False)):
            build = converted(model_dir, WORK / f"{arm.lower()}_{form}", pack)
            row[form] = {**hardware(build), **dsp_products(build)}
        packed, unpacked = row["packed"], row["unpacked"]
        row["ii_ratio_unpacked_over_packed"] = round(unpacked["ii_cycles"] / packed["ii_cycles"], 3)
        progress(f"{arm}: II {unpacked['ii_cycles']:,} -> {packed['ii_cycles']:,} "
                 f"({row['ii_ratio_unpacked_over_packed']}x), DSP48 products/cycle "
                 f"{unpacked['products_in_dsps']} -> {packed['products_in_dsps']}")
        checks[f"{arm.lower()}_fits"] = bool(packed["fits"])
        checks[f"{arm.lower()}_ii_not_worse"] = packed["ii_cycles"] <= unpacked["ii_cycles"]
        rows[arm] = row
    if VERIFIED in rows:
        build = WORK / f"{VERIFIED.lower()}_packed"
        exact = exactness(build, WORK / "models" / VERIFIED.lower(), resources=True)
        rows[VERIFIED]["packed"]["exactness"] = exact
        rows[VERIFIED]["timing"] = placed(build, WORK / f"{VERIFIED.lower()}_unpacked")
        checks[f"{VERIFIED.lower()}_bit_exact_654"] = (
            exact["integer_vs_qonnx"]["equal_images"] == exact["integer_vs_qonnx"]["n"]
            == exact["rtl"]["bit_exact_frames"] == exact["rtl"]["n"] == 654)
    floats = float_models()
    return {"board": "pynq-z2", "float_models_at_packable_widths": floats, "recipe": "edgefpga train elpv --like elpv_defect --epochs E --threads 1 --qat WxAy; "
            "convert for pynq-z2 packed (the default) and with packing off (baseline), same run",
            "note": "II and frames/s at the board's nominal 100 MHz, not placed and routed; predicted: the hardware "
                    "models (hw/layers); accuracy after E epochs is reported, not judged",
            "arms": rows, "checks": checks, "passed": all(checks.values())}
