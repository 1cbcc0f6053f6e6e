"""The one parallelism planner (hw/plan.py): hls4ml's own reuse-factor rule, the RTL engines'
cycle counts, the DSP budget, and fit before speed."""

import onnx
import pytest

from edgefpga.hw.graph import canonical_graph
from edgefpga.hw.plan import (LUT_MULTIPLIER_SHARE, engine_cycles, hls4ml_reuse, layer_sizes, plan_network,
                              roofline_cycles, valid_reuse_factors)


@pytest.mark.parametrize("n_in, n_out", [(9, 8), (72, 16), (144, 32), (8, 16), (80, 2), (75, 8)])
def test_valid_reuse_factors_match_hls4ml(n_in, n_out):
    from hls4ml.backends import get_backend

    assert valid_reuse_factors(n_in, n_out) == get_backend("Vivado").get_valid_reuse_factors(n_in, n_out)


@pytest.fixture(scope="module")
def elpv_canonical(zoo_model):
    return canonical_graph(onnx.load(str(zoo_model / "model.onnx")), "elpv", 1 / 255, [0.5], [0.25])


def test_elpv_plan_reaches_the_roofline_within_the_board(elpv_canonical):
    layers = layer_sizes(elpv_canonical)
    assert sum(lp.macs for lp in layers) == 9_372_832  # the card's MAC count
    plan = plan_network(elpv_canonical, board_dsp=220, board_lut=53_200)
    assert plan.roofline == roofline_cycles(9_372_832, 96 * 96, 220)
    assert plan.ii_cycles <= 1.25 * plan.roofline
    assert plan.dsp_multipliers <= plan.dsp_budget == 176
    assert plan.lut_multiplier_cost() <= LUT_MULTIPLIER_SHARE * 53_200
    for lp in plan.layers.values():
        assert lp.cycles == engine_cycles(lp, lp.ci, lp.po, lp.kp)
        if lp.multipliers:
            assert lp.reuse in valid_reuse_factors(lp.n_in, lp.outputs)


def test_a_small_board_relaxes_the_interval_to_fit(elpv_canonical):
    roomy = plan_network(elpv_canonical, board_dsp=220, board_lut=53_200)
    tight = plan_network(elpv_canonical, board_dsp=220, board_lut=8_000)
    assert tight.relaxed > 0 and tight.ii_cycles > roomy.ii_cycles
    assert tight.lut_multiplier_cost() <= LUT_MULTIPLIER_SHARE * 8_000


def test_depthwise_cycles_are_bound_by_window_steps():
    from edgefpga.hw.plan import LayerPlan, lanes_for

    dw = LayerPlan("dw", "depthwise", 48, 48 * 48, 8, 8, (3, 3), 96 * 96, 48 * 48 * 8 * 9)
    ci, po, kp = lanes_for(dw, 1)  # an impossible budget: the most parallel choice
    assert (ci, po, kp) == (1, 8, 3)
    assert engine_cycles(dw, ci, po, kp) == 48 * 48 * 3  # one window row per cycle: the line-buffer bound


def test_hls4ml_reuse_matches_the_multipliers():
    assert hls4ml_reuse(72, 16, 16 * 72) == 1
    assert hls4ml_reuse(72, 16, 16) == 72
