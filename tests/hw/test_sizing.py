"""Sizing an architecture for a board and a frame rate before training (hw/sizing.py): the
projection is the converter's own plan, the choice meets the rate, an impossible rate is refused."""

from __future__ import annotations

import json
import subprocess
import sys

import onnx
import pytest

from edgefpga.hw.boards import get_board
from edgefpga.hw.graph import canonical_graph
from edgefpga.hw.plan import plan_network
from edgefpga.hw.sizing import SizingError, candidates, choose, plan_architecture, plan_candidate
from edgefpga.models.arch import MAX_MACS, MAX_PARAMS

pytestmark = pytest.mark.timeout(120)


def test_the_projection_is_the_plan_convert_makes_of_the_real_graph(zoo_model):
    """The shipped model's architecture, planned from its layers alone, gives the interval and
    multipliers the converter plans from its exported, canonicalized graph."""
    card = json.loads((zoo_model / "card.json").read_text())
    arch = card["architecture"]
    board = get_board("pynq-z2")
    graph = canonical_graph(onnx.load(str(zoo_model / "model.onnx")), "elpv", 1 / 255, [0.5], [0.25])
    real = plan_network(graph, board)
    layers, plan = plan_architecture(board, arch["size"], tuple(arch["widths"]), 1, 2)
    assert (plan.ii_cycles, plan.dsp_multipliers) == (real.ii_cycles, real.dsp_multipliers)
    assert [lp.node for lp in layers if lp.macs] == [lp.node for lp in real.layers.values() if lp.macs]
    cand = plan_candidate(board, arch["size"], tuple(arch["widths"]), 1, 2)
    assert (cand.params, cand.macs) == (card["params"], card["macs"])
    assert cand.ii_cycles >= 1.03 * plan.ii_cycles  # the projection keeps the margins over the plan
    verified = json.loads((zoo_model.parent.parent.parent / "bench" / "results" / "board.json").read_text())
    assert verified["projection"]["ii_cycles"] <= cand.ii_cycles  # the RTL measured within the projection


def test_the_choice_meets_the_rate_and_has_the_most_capacity():
    board = get_board("pynq-z2")
    found = candidates(board, 8000, 1, 4, MAX_PARAMS, MAX_MACS)
    chosen = choose(found, board, 8000)
    assert chosen.fps >= 8000 and chosen.fits
    assert all(c.macs <= chosen.macs for c in found if c.meets_fps and c.fits)
    assert any(c.macs > chosen.macs and not c.meets_fps for c in found)  # the rate is what bounds it
    roomy = choose(candidates(get_board("zcu104"), 8000, 1, 4, MAX_PARAMS, MAX_MACS), get_board("zcu104"), 8000)
    assert roomy.macs > chosen.macs  # a larger board (more DSPs, faster clock) affords a larger model


def test_an_impossible_rate_is_refused_naming_the_fastest():
    board = get_board("pynq-z2")
    with pytest.raises(SizingError, match=r"no architecture reaches 1,000,000 frames/s on pynq-z2.*fastest"):
        choose(candidates(board, 1e6, 1, 2, MAX_PARAMS, MAX_MACS), board, 1e6)


def test_train_dry_run_prints_the_candidates_and_refuses_without_a_board(tmp_path):
    from edgefpga.models.folder import export_elpv

    export_elpv(tmp_path / "bins", "type-defect", False, 4, 0)
    run = subprocess.run([sys.executable, "-m", "edgefpga.cli", "train", str(tmp_path / "bins"), "--board", "pynq-z2",
                          "--fps", "8000", "--dry-run"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    chosen = [line for line in run.stdout.splitlines() if line.startswith("->")]
    assert len(chosen) == 1 and "ok" in chosen[0]
    assert not (tmp_path / "out").exists()
    run = subprocess.run([sys.executable, "-m", "edgefpga.cli", "train", str(tmp_path / "bins"), "--fps", "8000",
                          "--dry-run"], capture_output=True, text=True)
    assert run.returncode == 2 and "add --board" in run.stderr
