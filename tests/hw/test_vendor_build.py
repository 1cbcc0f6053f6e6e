"""`edgefpga build`: the Vivado Tcl for each board, exit 2 without Vivado (Tcl written), the log's
errors and exit 1 when Vivado fails, only that run's bitstream collected; the ZU+ hardware
handoff read by PYNQ's parser; damaged bitstreams named before PYNQ is asked to load them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bitfiles import bit_file

from edgefpga.hw.boards import get_board
from edgefpga.hw.overlay import bitstream_problem, read_bit_header, write_overlay
from edgefpga.hw.vendor_build import write_tcl

EDGEFPGA = Path(sys.executable).parent / "edgefpga"


@pytest.fixture
def build(elpv_build, tmp_path) -> Path:
    """What `edgefpga build` reads of the ELPV build (report, RTL, overlay), in a folder of its own."""
    copy = tmp_path / "elpv_defect"
    copy.mkdir()
    shutil.copyfile(elpv_build / "report.json", copy / "report.json")
    for part in ("rtl", "overlay"):
        shutil.copytree(elpv_build / part, copy / part)
    return copy


def run_build(build: Path, path_dirs: list[Path], *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=os.pathsep.join([*map(str, path_dirs), "/usr/bin", "/bin"]))
    return subprocess.run([str(EDGEFPGA), "build", str(build), *extra], capture_output=True, text=True, env=env,
                          timeout=120)


def fake_vivado(folder: Path, body: str) -> Path:
    """A `vivado` for the test: a shell script that gets the same arguments Vivado would."""
    folder.mkdir(exist_ok=True)
    script = folder / "vivado"
    script.write_text("#!/bin/sh\n# args: -mode batch -nojournal -log LOG -source TCL\nLOG=$5\nTCL=$7\n" + body)
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("board, ps_cell, master, slave", [
    ("pynq-z2", "processing_system7", "M_AXI_GP0", "S_AXI_HP0"),
    ("zcu104", "zynq_ultra_ps_e", "M_AXI_HPM0_FPD", "S_AXI_HP0_FPD"),
    ("kv260", "zynq_ultra_ps_e", "M_AXI_HPM0_FPD", "S_AXI_HP0_FPD")])
def test_the_tcl_builds_the_overlay_the_backend_drives(build, board, ps_cell, master, slave):
    spec = get_board(board)
    tcl = write_tcl(build, spec).read_text()
    assert f"-part {spec.part}" in tcl and spec.vivado_board_part in tcl
    assert f"xilinx.com:ip:{ps_cell}" in tcl and f"/{master}\"" in tcl and f"/{slave}\"" in tcl
    assert "create_bd_cell -type ip -vlnv xilinx.com:ip:axi_dma axi_dma_0" in tcl
    assert "create_bd_cell -type module -reference elpv_defect_top_axi elpv_defect_top_axi_0" in tcl
    assert ("0x40400000" if ps_cell == "processing_system7" else "0xA0000000") in tcl
    added = [line.split("$build/")[1] for line in tcl.splitlines() if line.startswith("add_files -norecurse $build/")]
    assert added and all((build / path).is_file() for path in added)  # every source the Tcl names exists
    assert any(path.endswith("elpv_defect_top_axi.v") for path in added)


def test_without_vivado_the_tcl_is_written_and_the_command_exits_2(build):
    run = run_build(build, [EDGEFPGA.parent])
    assert run.returncode == 2, run.stderr
    assert f"wrote {build / 'vivado' / 'build_overlay.tcl'}; Vivado is not on PATH" in run.stderr
    assert "vivado -mode batch" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert (build / "vivado" / "build_overlay.tcl").is_file() and not (build / "bitstream").exists()


def test_a_failing_vivado_exits_1_with_the_logs_errors_and_leaves_no_stale_bitstream(build, tmp_path):
    stale = build / "bitstream"
    stale.mkdir()
    bit_file(stale / "elpv_defect.bit", "7z020clg400")
    (stale / "elpv_defect.hwh").write_text("<old/>")
    fake = fake_vivado(tmp_path / "bin", "echo 'INFO: [Common 17-206] Exiting Vivado' > $LOG\n"
                       "echo \"ERROR: [Synth 8-439] module 'ef_conv2d' not found\" >> $LOG\nexit 1\n")
    run = run_build(build, [EDGEFPGA.parent, fake.parent])
    assert run.returncode == 1, run.stderr
    assert "Vivado exited with status 1" in run.stderr and "ERROR: [Synth 8-439] module 'ef_conv2d' not found" in run.stderr
    assert not (stale / "elpv_defect.bit").exists() and not (stale / "elpv_defect.hwh").exists()


def test_a_vivado_that_writes_nothing_fails(build, tmp_path):
    fake = fake_vivado(tmp_path / "bin", "echo 'INFO: done' > $LOG\nexit 0\n")
    run = run_build(build, [EDGEFPGA.parent, fake.parent])
    assert run.returncode == 1 and "this run wrote no" in run.stderr, run.stderr


def test_a_successful_run_collects_that_runs_bitstream_and_handoff(build, tmp_path):
    good = bit_file(tmp_path / "made.bit", "7z020clg400")
    fake = fake_vivado(tmp_path / "bin", f'OUT=$(dirname "$TCL")/out\nmkdir -p "$OUT"\n'
                       f'cp {good} "$OUT/elpv_defect.bit"\necho "<hwh/>" > "$OUT/elpv_defect.hwh"\nexit 0\n')
    run = run_build(build, [EDGEFPGA.parent, fake.parent])
    assert run.returncode == 0, run.stderr
    assert (build / "bitstream" / "elpv_defect.bit").read_bytes() == good.read_bytes()
    assert bitstream_problem(build / "bitstream" / "elpv_defect.bit", "xc7z020clg400-1") is None


def test_a_bitstream_for_another_part_is_refused(build, tmp_path):
    wrong = bit_file(tmp_path / "made.bit", "xczu7ev-ffvc1156-2-e")
    fake = fake_vivado(tmp_path / "bin", f'OUT=$(dirname "$TCL")/out\nmkdir -p "$OUT"\n'
                       f'cp {wrong} "$OUT/elpv_defect.bit"\necho "<hwh/>" > "$OUT/elpv_defect.hwh"\nexit 0\n')
    run = run_build(build, [EDGEFPGA.parent, fake.parent])
    assert run.returncode == 1 and "built for xczu7ev-ffvc1156-2-e, not xc7z020clg400-1" in run.stderr, run.stderr


@pytest.mark.parametrize("args, text", [(["--board", "zynq-9000"], "unknown board 'zynq-9000'"),
                                        (["--board", "kv260"], "was converted for pynq-z2, not kv260")])
def test_a_wrong_board_is_a_clear_error(build, args, text):
    run = run_build(build, [EDGEFPGA.parent], *args)
    assert run.returncode == 2 and text in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_damaged_and_truncated_bitstreams_are_named(tmp_path):
    good = bit_file(tmp_path / "good.bit", "7z020clg400")
    (tmp_path / "good.hwh").write_text("<hwh/>")
    assert read_bit_header(good)["part"] == "7z020clg400"
    truncated = tmp_path / "cut.bit"
    truncated.write_bytes(good.read_bytes()[:-100])
    assert "truncated: 3,996 of 4,096 bytes" in bitstream_problem(truncated)
    (tmp_path / "text.bit").write_text("hello")
    assert "not a Xilinx bitstream" in bitstream_problem(tmp_path / "text.bit")
    assert "built for 7z020clg400, this build is for xck26" in bitstream_problem(good, "xck26-sfvc784-2LV-c")
    assert "no bitstream" in bitstream_problem(tmp_path / "none.bit")
    (tmp_path / "good.hwh").unlink()
    assert "no hardware handoff beside the bitstream" in bitstream_problem(good)


@pytest.mark.parametrize("board", ["zcu104", "kv260"])
def test_the_zynq_ultrascale_handoff_reads_as_pynq_reads_it(build, board):
    from pynqmetadata.frontends import Metadata
    from pynqmetadata.views.runtime import IpDictView

    overlay = write_overlay(build, get_board(board).to_dict(), "test")
    ip_dict = IpDictView(Metadata(str(build / "overlay" / overlay["hwh"]))).view
    assert ip_dict["axi_dma_0"]["type"].startswith("xilinx.com:ip:axi_dma:")
    assert ip_dict["axi_dma_0"]["phys_addr"] == 0xA0000000
    assert overlay["processing_system"] == "ps8"
