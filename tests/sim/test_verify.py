"""`edgefpga verify` fails loudly: exit 1, naming the failed check, whenever a check fails; an
edited or half-written build folder is caught before anything runs; `convert` exits non-zero when
its own checks fail."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from edgefpga.sim.verify import judge

pytestmark = pytest.mark.slow


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "edgefpga.cli", *args], capture_output=True, text=True)


@pytest.fixture
def copied_build(foreign_build, tmp_path):
    copy = tmp_path / "build"
    shutil.copytree(foreign_build, copy, ignore=shutil.ignore_patterns("sim", "yosys", "verify.json"))
    return copy


def change_one_rom_word(build) -> str:
    """Flip the low bit of one weight word of the first conv layer's ROM; return the file."""
    rom = sorted((build / "rtl" / "src").glob("Conv_*_WFILE.mem"))[0]
    words = rom.read_text().split()
    words[len(words) // 2] = format(int(words[len(words) // 2], 16) ^ 1, "x")
    rom.write_text("\n".join(words) + "\n")
    return str(rom.relative_to(build))


def test_a_changed_rom_word_fails_verify(copied_build, foreign_dir):
    images = str(foreign_dir / "test.npz")
    assert run_cli("verify", str(copied_build), "--images", images, "--limit", "16", "--quiet").returncode == 0
    changed = change_one_rom_word(copied_build)
    run = run_cli("verify", str(copied_build), "--images", images, "--limit", "16", "--quiet")
    assert run.returncode == 1
    assert f"FAILED integrity: changed since convert: {changed}" in run.stderr
    # with the edit accepted, the RTL itself no longer matches the integer model
    run = run_cli("verify", str(copied_build), "--images", images, "--limit", "16", "--quiet", "--accept-edits")
    assert run.returncode == 1 and "FAILED rtl_bit_exact" in run.stderr, run.stderr
    result = json.loads((copied_build / "verify.json").read_text())
    assert result["rtl"]["bit_exact_frames"] < 16
    assert result["rtl"]["verilator_cached"]  # the same program: ROM words are read when it runs
    assert [c["check"] for c in result["failed"]] == ["integrity", "rtl_bit_exact"]


def test_the_harness_cache_key_follows_the_verilog_not_the_rom(copied_build):
    """The Verilator program is reused (edgefpga/cache.py) only for the same Verilog and harness: an
    edited source is a new key; other ROM contents are not (the program reads them at run time)."""
    from edgefpga.sim.rtl_harness import harness_key

    rtl = copied_build / "rtl"
    manifest = json.loads((rtl / "manifest.json").read_text())
    key = harness_key(rtl, manifest, ["-O3"])
    assert harness_key(rtl, manifest, ["-O2"]) != key
    change_one_rom_word(copied_build)
    assert harness_key(rtl, manifest, ["-O3"]) == key
    source = rtl / manifest["sources"][-1]
    source.write_text(source.read_text() + "\n// edited\n")
    assert harness_key(rtl, manifest, ["-O3"]) != key


def test_a_half_written_build_fails_verify(copied_build, foreign_dir):
    (copied_build / "rtl" / "src" / "Conv_0_WFILE.mem").unlink()
    run = run_cli("verify", str(copied_build), "--images", str(foreign_dir / "test.npz"), "--limit", "4", "--quiet")
    assert run.returncode == 1 and "FAILED integrity: missing: rtl/src/Conv_0_WFILE.mem" in run.stderr


def test_agreement_and_resources_are_judged():
    base = {"integrity": {"ok": True, "detail": ""}, "emulator": {"n": 10, "top1_agreement": 0.9},
            "rtl": {"n": 10, "bit_exact_frames": 10, "framing_errors": 0}}
    assert [c["check"] for c in judge(base, 0.8)] == []
    assert [c["check"] for c in judge(base, 0.95)] == ["agreement"]
    over = dict(base, resources={"fits": False, "limit_share": 0.8, "share": {"LUT": 0.93, "DSP": 0.5}})
    failed = judge(over, 0.8)
    assert [c["check"] for c in failed] == ["resources_fit"] and "LUT" in failed[0]["detail"]
    fit = {"board": "pynq-z2", "fits": False, "over": ["BRAM36"], "budget_share": 0.8,
           "used": {"BRAM36": 130.0}, "available": {"BRAM36": 140}, "share": {"BRAM36": 0.929}}
    failed = judge(dict(base, fit=fit), 0.8)
    assert [c["check"] for c in failed] == ["predicted_fit"] and "BRAM36" in failed[0]["detail"]
    assert judge(dict(base, fit=dict(fit, fits=True, over=[])), 0.8) == []
    emulator_off = dict(base, emulator={"n": 10, "top1_agreement": 1.0, "integer_model_bit_exact_images": 9})
    assert [c["check"] for c in judge(emulator_off, 0.8)] == ["emulator_bit_exact"]


def test_convert_fails_when_its_own_check_fails(foreign_dir, tmp_path):
    """Types forced far too narrow: the bit-accurate model disagrees with the float one, and
    convert stops non-zero naming the check, leaving no build folder."""

    overrides = tmp_path / "narrow.json"
    overrides.write_text(json.dumps({"Conv_0.weight": 2, "Conv_1.weight": 2, "Conv_2.weight": 2, "MatMul_0.weight": 2}))
    out = tmp_path / "narrow"
    run = run_cli("convert", str(foreign_dir / "foreign.onnx"), "--out", str(out), "--calibration",
                  str(foreign_dir / "calib.npz"), "--calibration-images", "200", "--scale", str(1 / 255), "--mean", "0.5",
                  "--std", "0.25", "--overrides", str(overrides), "--agreement", "0.99", "--quiet")
    assert run.returncode == 2 and "agreement" in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert not out.exists()
