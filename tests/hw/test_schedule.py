"""The reuse planner uses hls4ml's own validity rule and stays within the DSP budget."""

import onnx
import pytest

from edgefpga.hw.graph import canonical_graph
from edgefpga.hw.schedule import layer_costs, plan_reuse, roofline_cycles, valid_reuse_factors


@pytest.mark.parametrize("n_in, n_out", [(9, 8), (72, 16), (144, 32), (8, 16), (80, 2), (75, 8)])
def test_valid_reuse_factors_match_hls4ml(n_in, n_out):
    from hls4ml.backends import get_backend

    assert valid_reuse_factors(n_in, n_out) == get_backend("Vivado").get_valid_reuse_factors(n_in, n_out)


def test_elpv_plan_fits_the_pynq_z2_budget(zoo_model):
    canon = canonical_graph(onnx.load(str(zoo_model / "model.onnx")), "elpv", 1 / 255, [0.5], [0.25])
    costs = layer_costs(canon)
    assert sum(c.macs for c in costs) == 9_372_832  # the card's MAC count
    interval = plan_reuse(costs, 96 * 96, 176)
    assert sum(c.multipliers for c in costs) <= 176
    assert interval == max(c.cycles for c in costs) >= roofline_cycles(9_372_832, 96 * 96, 220)
