"""ef_concat: the join of two branches by channel concatenation (SqueezeNet's fire modules,
Inception blocks), its hardware model. It is built like a residual block (hw/layers/add.py): the
fork (``ef_fork``) and the FIFO on the branch that runs ahead (``ef_fifo``, sized from both
branches' latency in hw/rtlgen.py) are the same; only the join differs. Concatenation computes
nothing, so it has no knob and no rounding: its output type holds both branches' values exactly
(the finer of their grids, enough integer bits for both), and each value is only widened.
"""

from __future__ import annotations

import numpy as np

from ..fixed import FixedType
from .base import Resources, hls_entries
from .estimate import Model, predict
from .rule import Capability, GraphView, Refusal, attribute
from .stage import Stage, StreamInfo

MODULES = ("ef_concat",)
OPS = ("Concat",)  # of the canonical graph: two computed maps joined along the channels
FUSES_ACTIVATION = False  # no cast of its own: a Relu after it is an ef_act stage


# ---- resources ---------------------------------------------------------------------------------

def model(module: str, params: dict) -> Model:
    """The output register: the branches' bits (sign or zero extension and the alignment's
    zeros are wires, or constant and duplicate flip-flops that Yosys merges), one pixel's valid."""
    ca, cb, ow = params.get("C_A", 1), params.get("C_B", 1), params.get("OW", 8)
    data = ca * params.get("AW_", 8) + cb * params.get("BW_", 8)
    m = Model()
    m.add("lut", "const", 1)
    m.add("lut", "data", data)
    m.add("ff", "const", 1)
    m.add("ff", "data", data)
    m.add("ff", "extension", (ca + cb) * ow - data)
    return m


def resources(module: str, params: dict) -> Resources:
    return predict(module, model(module, params))


# ---- the types (hw/precision.py) -----------------------------------------------------------------

def joined_type(a: FixedType, b: FixedType) -> FixedType:
    """The narrowest type holding every value of ``a`` and of ``b`` exactly: the finer grid, and
    integer bits for both (an unsigned branch gains a sign bit when the other is signed)."""
    signed = a.signed or b.signed
    frac = max(a.frac, b.frac)
    integer = max(t.integer + int(signed and not t.signed) for t in (a, b))
    return FixedType(integer + frac, integer, signed)


def knobs(model, node, ranges, is_output: bool) -> list:
    """None: concatenation rounds nothing, its type follows from its inputs'."""
    return []


def derive_types(model, node, p, by_tensor: dict) -> None:
    t = joined_type(p.tensors[node.input[0]], p.tensors[node.input[1]])
    p.tensors[node.output[0]] = t
    p.set_layer(node.name, "result", t)


# ---- the RTL instance ------------------------------------------------------------------------

def stage(model, p, node, inputs: list[StreamInfo], lanes=None) -> Stage:
    """ef_concat: a's channels then b's, each aligned to the output's fractional bits."""
    a, b = inputs
    a_t, b_t, out_t = p.tensors[node.input[0]], p.tensors[node.input[1]], p.tensors[node.output[0]]
    params = dict(C_A=a.channels, AW_=a_t.width, ASIGNED=int(a_t.signed), ALIGN_A=out_t.frac - a_t.frac,
                  C_B=b.channels, BW_=b_t.width, BSIGNED=int(b_t.signed), ALIGN_B=out_t.frac - b_t.frac,
                  OW=out_t.width)
    channels = a.channels + b.channels
    return Stage(node.name, "ef_concat", params, {}, [], [("out", node.output[0])], channels, out_t.width,
                 a.h * a.w, 0, node.name, np.arange(a.h * a.w))


# ---- hls4ml (its configuration; hw/hls.py) -------------------------------------------------------

def hls_precision(cl, node, p) -> dict[str, dict[str, str]]:
    """hls4ml's concatenate layer casts into its result type: ours holds both branches exactly."""
    return hls_entries(node, p)


# ---- capability rule (its row of the table in hw/capabilities.py; docs/onnx-support.md) ----------

def concat_axis(node, g: GraphView) -> int | None:
    """The Concat's axis counted from the front (a negative one resolved with the inputs' rank);
    None when the rank is unknown and the axis negative."""
    axis = int(attribute(node, "axis", 1))
    rank = len(g.shapes.get(node.input[0], []) or [])
    if axis < 0:
        return axis + rank if rank else None
    return axis


def check_concat(node, g: GraphView) -> None:
    """Two computed maps [N, C, H, W] of the same N, H, W joined along the channels."""
    inputs = [t for t in node.input if t]
    constant = [t for t in inputs if t in g.constants]
    if constant:
        raise Refusal("inputs", f"a constant input ('{constant[0]}'): only two computed branches are joined "
                      "(a constant channel block is not built)")
    if len(inputs) != 2:
        raise Refusal("inputs", f"{len(inputs)} inputs: exactly two branches are joined (nest two-input "
                      "Concats for more)")
    axis = concat_axis(node, g)
    if axis != 1:
        raise Refusal("axis", f"axis={attribute(node, 'axis')}: only the channels (axis 1 of [N, C, H, W]) are "
                      "concatenated")
    shapes = [g.shapes.get(t) for t in inputs]
    if any(s is not None and len(s) != 4 for s in shapes):
        raise Refusal("inputs", f"shapes {shapes[0]} and {shapes[1]}: only maps [N, C, H, W] are concatenated")
    if all(shapes) and (shapes[0][0], *shapes[0][2:]) != (shapes[1][0], *shapes[1][2:]):
        raise Refusal("inputs", f"shapes {shapes[0]} and {shapes[1]}: both branches need the same height and "
                      "width")


CONCAT_TESTS = ("tests/hw/test_concat.py::test_fire_module_is_bit_exact",
                "tests/hw/test_concat.py::test_exports_give_one_canonical_graph",
                "tests/hw/test_concat.py::test_identity_branch_is_bit_exact",
                "tests/hw/test_concat.py::test_other_concats_are_refused",
                "tests/hw/test_concat.py::test_constant_branch_is_refused")

CAPABILITIES: tuple[Capability, ...] = (
    Capability("Concat", "the channel join of two branches (SqueezeNet's fire module, Inception), built like a "
               "residual block: a fork, a FIFO on the branch that runs ahead sized from both branches' latency, "
               "and the join, a's channels then b's, each widened exactly to one type (the finer grid, integer "
               "bits for both; no rounding)", "axis 1 (channels) of exactly two computed 4-D maps of the same "
               "height and width, the branches of one fork; a branch may not fork again", check_concat,
               "ef_concat (+ ef_fork, ef_fifo)", CONCAT_TESTS,
               emulator="qonnx's channels-last conversion has no Concat: the integer model stands in"),
)
