"""The readable side of a build report: a Markdown summary and a plot of value ranges against
the ranges of the chosen fixed-point types (in the style of hls4ml's profiling plots)."""

from __future__ import annotations

import math
from pathlib import Path

from .fixed import FixedType


def type_text(row: dict, key: str) -> str:
    t = row["types"].get(key)
    return t["hls"].split(",AP_")[0] + ">" if t else ""


def summary_lines(report: dict) -> list[str]:
    """The few lines a user wants after `convert`: what was built and how faithful it is."""
    est, emu = report["estimate"], report["emulator_on_calibration"]
    search = report["precision_search"]
    return [
        f"{report['name']} for {report['board']['name']} ({report['board']['part']}): "
        f"{report['totals']['params']:,} parameters, {report['totals']['macs']:,} MACs per frame; hls4ml "
        + (f"{report['hls']['backend']} project in hls/" if report["hls"]["project"]
           else f"project not generated ({'; '.join(report['hls']['not_generated_because'])})"),
        (f"precision: the model's own types ({search['skipped']}); no search"
         + (f"; the integer model equals qonnx's execution on {report['qonnx_check']['bit_exact_images']} of "
            f"{report['qonnx_check']['n']} images" if report.get("qonnx_check") else "")
         + (f"; ONNX Runtime's output integers on {report['onnxruntime_check']['bit_exact_images']} of "
            f"{report['onnxruntime_check']['n']} images (largest difference "
            f"{report['onnxruntime_check']['max_abs_diff_steps']} step), top-1 agreement "
            f"{report['onnxruntime_check']['top1_agreement']:.2%}" if report.get("onnxruntime_check") else "")
         if search.get("skipped") else
         search_line(search)),
        *([f"warning: {search['warning']}"] if search.get("warning") else []),
        f"{emu['model']} vs {'the model' if search.get('skipped') else 'float'} on {emu['n']} calibration images: top-1 agreement {emu['agreement']:.2%}"
        + (f", accuracy {emu['accuracy']:.4f} (float {emu['accuracy'] + emu['accuracy_drop']:.4f})"
           if emu.get("accuracy") is not None else ""),
        f"plan: {est['multipliers']} multipliers ({est['dsp_multipliers']} in DSPs"
        + (f", {est['paired_multipliers']} of them two to a DSP48" if est.get("paired_multipliers") else "")
        + f", budget {est['dsp_budget']} DSP48s), "
        f"II {est['ii_cycles']:,} cycles "
        f"({est['ii_over_roofline']}x roofline {est['roofline_cycles']:,}"
        + (f", relaxed {est['relaxed_to_fit']}x to fit" if est.get("relaxed_to_fit") else "")
        + f"), latency ~{est['latency_cycles']:,} cycles, {est['fps_at_clock']:,} frames/s at the nominal "
        f"{est['clock_mhz']:.0f} MHz (not placed and routed)",
        *fit_lines(report),
    ]


def search_line(search: dict) -> str:
    """What the search tried, and how its design agrees with float on all calibration images and on
    the held-out part alone (the images no width was tuned on, only judged on)."""
    return (f"precision search: {search['evaluations']} designs tried on {search['calibration']['n']} calibration "
            f"images ({search['calibration']['source']}); top-1 agreement with float "
            f"{search['proxy_on_calibration']['agreement']:.2%} on them, "
            f"{search['proxy_on_held_out']['agreement']:.2%} on the {search['held_out']['n']} held out")


def fit_lines(report: dict) -> list[str]:
    """The predicted fit of the generated design (every stage priced by its hardware model)."""
    from .plan import format_fit

    fit = report.get("rtl", {}).get("predicted_fit") or report["estimate"].get("fit")
    if not fit:
        return []
    verdict = "fits" if fit["fits"] else "does NOT fit"
    return [f"predicted use ({verdict}; `edgefpga verify --resources` counts with Yosys): {format_fit(fit)}"]


def write_markdown(report: dict, path: Path) -> None:
    lines = [f"# {report['name']}: conversion report", "", *[f"- {line}" for line in summary_lines(report)], "",
             "| layer | op | output shape | weight | bias | result | lanes (ci x po x kp) | multipliers | planned cycles "
             "| observed range |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["layers"]:
        rng = row["range"]
        plan = row.get("plan", {})
        lanes = f"{plan['ci']} x {plan['po']} x {plan['kp']}" if plan.get("multipliers") else ""
        lines.append(f"| {row['node']} | {row['op']} | {row['shape']} | {type_text(row, 'weight')} | "
                     f"{type_text(row, 'bias')} | {type_text(row, 'result')} | {lanes} | "
                     f"{plan.get('multipliers') or ''} | {plan.get('cycles', '')} | [{rng['min']:.3g}, {rng['max']:.3g}] |")
    if report["model"]["assumed"]:
        lines += ["", "Assumed (no model card):", *[f"- {a}" for a in report["model"]["assumed"]]]
    path.write_text("\n".join(lines) + "\n")


def plot_ranges(report: dict, path: Path) -> None:
    """One row per typed layer output: the chosen type's span (smallest step to largest value, log2)
    as a bar, the observed maximum |x| and its 99.9th percentile as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["layers"] if "result" in r["types"]]
    fig, ax = plt.subplots(figsize=(8, 0.38 * len(rows) + 1.4))
    for i, row in enumerate(rows):
        t = FixedType.from_dict(row["types"]["result"])
        low, high = -t.frac, math.log2(t.high + t.step)
        ax.barh(i, high - low, left=low, color="#9ecae1", edgecolor="#3182bd")
        for value, marker, label in ((row["range"]["max_abs"], "o", "max |x|"),
                                     (row["range"]["p999"], "|", "99.9th pct |x|")):
            if value > 0:
                ax.plot(math.log2(value), i, marker, color="#e6550d", markersize=7, label=label if i == 0 else None)
    ax.set_yticks(range(len(rows)), [f"{r['node']} {type_text(r, 'result')}" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("log2 of value: bar = chosen type (resolution .. largest value)")
    ax.set_title(f"{report['name']}: layer outputs vs chosen fixed-point types")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
