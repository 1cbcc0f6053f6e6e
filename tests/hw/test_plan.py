"""The one planner (hw/plan.py): hls4ml's own reuse-factor rule, the RTL engines' cycle counts
(hw/layers), every resource within the board's budget, fit before speed, and a refusal naming
the resource when nothing fits."""

import json
from dataclasses import replace

import onnx
import pytest

from edgefpga.hw.boards import get_board
from edgefpga.hw.graph import canonical_graph
from edgefpga.hw.plan import (LayerPlan, PlanError, Widths, engine_cycles, hls4ml_reuse, lanes_for, layer_sizes,
                              load_pins, plan_layers, plan_network, roofline_cycles, valid_reuse_factors)

pytestmark = pytest.mark.timeout(120)
PYNQ = get_board("pynq-z2")
# 9-bit operands: each product its own DSP48 (2*9 + 9 + 1 > 25 bits: no two output lanes share one)
UNPAIRED = Widths(xw=9, ww=9)


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
    plan = plan_network(elpv_canonical, PYNQ)
    assert plan.roofline == roofline_cycles(9_372_832, 96 * 96, 220)
    assert plan.ii_cycles <= 1.25 * plan.roofline
    # DSP48s within the budget; at these default 8-bit widths a conv's output lanes go two to a
    # DSP48 (PACK), so the products in DSPs may reach twice it
    dsp48 = sum(lp.resources.dsp for lp in plan.layers.values())
    assert dsp48 <= plan.dsp_budget == 176
    assert plan.dsp_multipliers - plan.paired_multipliers / 2 <= dsp48
    fit = plan.fit()
    assert fit["fits"] and all(fit["used"][k] <= 0.8 * fit["available"][k] for k in fit["used"])
    assert fit["used"] == plan.total().board_use()
    for lp in plan.layers.values():
        assert lp.cycles == engine_cycles(lp, lp.ci, lp.po, lp.kp)
        assert lp.resources == lp.estimate()  # every layer priced by its own hardware model
        if lp.multipliers:
            assert lp.reuse in valid_reuse_factors(lp.n_in, lp.outputs)


def test_a_dense_head_takes_the_whole_interval():
    """Frames overlap in every stage, so a layer with one output row (a dense layer) gets the
    whole interval, not a share of it: the multipliers go where the MACs are. The dense-head
    reference shape (a fifth of its MACs in a 1,024 -> 128 dense layer) is planned at its
    roofline; when a dense layer got a sixth of the interval it took 128 multipliers for a
    quarter of the conv trunk's interval and the trunk ran at twice it."""
    from edgefpga.models.card import ZOO

    model = canonical_graph(onnx.load(str(ZOO / "dense_head_ref" / "model.onnx")), "dense_head", 1 / 255,
                            [0.5], [0.25])
    plan = plan_network(model, PYNQ)
    dense = [lp for lp in plan.layers.values() if lp.kind == "dense"]
    assert [lp.channels * lp.in_pixels for lp in dense[:1]] == [1024]
    assert plan.ii_cycles <= 1.1 * plan.roofline and plan.fits
    assert all(lp.cycles > plan.ii_cycles // 6 for lp in dense[:2])  # not sized for a sixth of the interval


def zoo_canonical(name: str):
    from edgefpga.models.card import ZOO

    return canonical_graph(onnx.load(str(ZOO / name / "model.onnx")), name, 1 / 255, [0.5], [0.25])


def test_past_the_dsp_roofline_with_lut_multipliers():
    """The roofline counts DSP48s; with LUT multipliers the planner builds a faster layout when it
    fits (ResNet-8 at 9-bit operands, one product a DSP48: a layout below the roofline within the
    budget). With ``--fps`` it builds the rate asked, not a faster one."""
    model = zoo_canonical("resnet8_ref")
    plan = plan_network(model, PYNQ, UNPAIRED)
    assert plan.below_roofline and plan.ii_cycles < plan.roofline and plan.fits
    assert any(lp.multipliers and not lp.dsp for lp in plan.layers.values())  # the products past the DSPs
    assert plan.to_dict()["below_roofline"] is True
    asked = plan_network(model, PYNQ, UNPAIRED, fps=PYNQ.clock_mhz * 1e6 / plan.roofline)
    assert not asked.below_roofline and plan.ii_cycles < asked.ii_cycles <= plan.roofline
    assert asked.multipliers < plan.multipliers


def test_two_products_per_dsp48_where_the_widths_allow(elpv_canonical):
    """At 8-bit operands two output lanes of a convolution share a DSP48 (PACK, hw/layers/conv.py):
    the planner prefers paired lanes and counts one DSP48 per pair, so the same budget holds more
    products and ELPV's net plans faster than with every product in a DSP48 of its own (the rule
    turned off: the baseline; bench/pack.py measures the same on a trained W8A8 model), within the
    budget either way."""
    from unittest import mock

    paired = plan_network(elpv_canonical, PYNQ, Widths(xw=8, ww=8))
    with mock.patch("edgefpga.hw.layers.conv.packable", lambda xw, ww: False):
        single = plan_network(elpv_canonical, PYNQ, Widths(xw=8, ww=8))
    assert single.paired_multipliers == 0 < paired.paired_multipliers
    assert paired.ii_cycles < single.ii_cycles and paired.fits and single.fits
    dsp48 = sum(lp.resources.dsp for lp in paired.layers.values())
    assert dsp48 <= paired.dsp_budget < paired.dsp_multipliers
    for lp in paired.layers.values():
        if lp.paired_products:
            lone = (lp.po % 2) * lp.kp * lp.ci  # an odd last lane keeps a DSP48 of its own
            assert lp.paired_products == lp.multipliers - lone  # the planner pairs whole layers
            assert lp.resources.dsp == lp.paired_products // 2 + lone


def test_pairs_only_where_they_buy_rate(elpv_canonical):
    """At 4-bit operands ELPV's LUT multipliers are cheap: without pairs the planner reaches the
    same interval, so it builds none (a pair costs LUTs, flip-flops and ECP5 clock); at 8 bits pairs
    shorten the interval, and are built."""
    from edgefpga.hw.plan import plan_some_way

    four = Widths(xw=4, ww=4, accw=16, ow=4, x_signed=False)
    narrow = plan_network(elpv_canonical, PYNQ, four)
    assert narrow.paired_multipliers == 0 and narrow.fits
    assert not any(lp.rtl_params().get("PACK") for lp in narrow.layers.values())
    forced = plan_some_way(layer_sizes(elpv_canonical), 96 * 96, PYNQ, four)  # pairs allowed: not faster
    assert forced.paired_multipliers > 0 and forced.ii_cycles >= narrow.ii_cycles
    wide = plan_network(elpv_canonical, PYNQ, Widths(xw=8, ww=8))
    assert wide.paired_multipliers > 0


@pytest.mark.parametrize("xw, ww, pairs", [(8, 8, True), (9, 8, False), (10, 7, True), (12, 6, True),
                                            (4, 4, True), (8, 9, False), (17, 3, True), (18, 3, False),
                                            (4, 3, False)])  # 5 x 3 bits: Yosys builds it in LUTs
def test_which_widths_pair_in_a_dsp48(xw, ww, pairs):
    """The input (XW+1 bits, signed) on the 18-bit port, the pair's multiplicand (2*WW+XW+1 bits)
    on the 25-bit one; a product Yosys builds in LUTs stays there."""
    from edgefpga.hw.layers.conv import packable

    assert packable(xw, ww) is pairs


def test_lane_less_dsps_count_in_the_dsp_budget():
    """A global average pool has no lanes but divides in a DSP48: the knapsack that gives the
    conv layers their DSPs leaves it one (MobileNet-V1 0.25 was laid out at 177 DSPs of 176, and
    so relaxed to a layout 1.8x slower than one that fits)."""
    from edgefpga.hw.plan import layout_at

    plan = plan_network(zoo_canonical("mobilenet_v1_025_ref"), PYNQ)
    layers = list(plan.layers.values())
    assert any(lp.kind == "gpool" and lp.resources.dsp for lp in layers)
    for interval in (73_728, 41_472, 36_864):
        layout_at(layers, interval, plan.dsp_budget)
        assert plan.total().dsp <= plan.dsp_budget


def test_a_small_board_relaxes_the_interval_to_fit(elpv_canonical):
    roomy = plan_network(elpv_canonical, PYNQ, UNPAIRED)
    used = roomy.fit()["used"]
    small = replace(PYNQ, name="small", lut=int(used["LUT"] * 0.9 / 0.8))  # 10 % too few LUTs for the fastest
    tight = plan_network(elpv_canonical, small, UNPAIRED)
    assert tight.relaxed > 0 and tight.ii_cycles > roomy.ii_cycles
    assert tight.fits and tight.fit()["used"]["LUT"] <= 0.8 * small.lut


def test_a_slower_frame_rate_gives_a_smaller_design(elpv_canonical):
    fastest = plan_network(elpv_canonical, PYNQ)
    slow = plan_network(elpv_canonical, PYNQ, fps=500)
    assert 500 <= slow.fps() < fastest.fps()  # meets the rate asked, no faster than needed
    assert slow.multipliers < fastest.multipliers
    assert slow.total().board_use()["LUT"] + slow.total().board_use()["DSP"] < \
        fastest.total().board_use()["LUT"] + fastest.total().board_use()["DSP"]


def test_pinned_lanes_are_kept_and_a_plan_reads_back(elpv_canonical, tmp_path):
    plan = plan_network(elpv_canonical, PYNQ)
    (tmp_path / "plan.json").write_text(json.dumps(plan.to_dict()))
    pins = load_pins(tmp_path / "plan.json")
    again = plan_network(elpv_canonical, PYNQ, pins=pins)
    assert {n: (lp.ci, lp.po, lp.kp) for n, lp in again.layers.items()} == \
        {n: (lp.ci, lp.po, lp.kp) for n, lp in plan.layers.items()}
    first = next(lp for lp in plan.layers.values() if lp.kind == "conv")
    (tmp_path / "pin.json").write_text(json.dumps({first.node: {"ci": 1, "po": 1, "kp": 1}}))
    pinned = plan_network(elpv_canonical, PYNQ, pins=load_pins(tmp_path / "pin.json"))
    assert (pinned.layers[first.node].ci, pinned.layers[first.node].po, pinned.layers[first.node].kp) == (1, 1, 1)
    assert pinned.ii_cycles == pinned.layers[first.node].cycles  # the pinned layer is the slowest
    (tmp_path / "bad.json").write_text(json.dumps({first.node: {"ci": 7, "po": 1, "kp": 1}}))
    with pytest.raises(PlanError, match=rf"{first.node} cannot take lanes \(7, 1, 1\)"):
        plan_network(elpv_canonical, PYNQ, pins=load_pins(tmp_path / "bad.json"))


def resnet18_layers() -> list[LayerPlan]:
    """ResNet-18's convolutions at 224x224 (torchvision's layout) and its 1000-way dense layer."""
    layers = [LayerPlan("stem", "conv", 112, 112 * 112, 3, 64, (7, 7), 224 * 224, 112 * 112 * 49 * 3 * 64,
                        49 * 3 * 64, op="Conv", in_shape=(224, 224), out_shape=(112, 112), stride=(2, 2), pads=(3, 3))]
    size, cin = 56, 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            s = stride if block == 0 else 1
            out = size // s
            for i, (ci, k) in enumerate(((cin, 3), (cout, 3))):
                layers.append(LayerPlan(f"c{cout}_{block}_{i}", "conv", out, out * out, ci, cout, (k, k), size * size,
                                        out * out * k * k * ci * cout, k * k * ci * cout, op="Conv",
                                        in_shape=(size, size), out_shape=(out, out), stride=(s if i == 0 else 1,) * 2,
                                        pads=(1, 1)))
                size, cin = out, cout
    layers.append(LayerPlan("fc", "dense", 1, 1, 512, 1000, (1, 1), 1, 512_000, 513_000, op="MatMul"))
    return layers


def test_a_network_that_fits_no_design_is_refused_naming_the_resource():
    layers = resnet18_layers()
    assert 11_000_000 < sum(lp.params for lp in layers) < 12_000_000
    with pytest.raises(PlanError, match=r"resnet18 does not fit pynq-z2 at any frame rate: BRAM36 needs [\d,.]+ of 112 "
                                        r"\(80% of 140\).*; (no preset board holds it|the smallest preset board)"):
        plan_layers(layers, 3 * 224 * 224, PYNQ, what="resnet18")


def test_depthwise_cycles_are_bound_by_window_steps():
    dw = LayerPlan("dw", "depthwise", 48, 48 * 48, 8, 8, (3, 3), 96 * 96, 48 * 48 * 8 * 9)
    ci, po, kp = lanes_for(dw, 1)  # an impossible budget: the most parallel choice
    assert (ci, po, kp) == (1, 8, 3)
    assert engine_cycles(dw, ci, po, kp) == 48 * 48 * 3  # one window row per cycle: the line-buffer bound


def test_hls4ml_reuse_matches_the_multipliers():
    assert hls4ml_reuse(72, 16, 16 * 72) == 1
    assert hls4ml_reuse(72, 16, 16) == 72
