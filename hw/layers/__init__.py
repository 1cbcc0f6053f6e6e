"""One hardware model per layer kind (DESIGN.md contract 8): each Verilog module of ``hw/rtl``
has one Python module here that owns its capability rule (its rows of the table and their
checks: ``CAPABILITIES``, on ``rule.py``), its lanes, cycles per frame, planning parameters,
resources (fitted on Yosys: ``sim/calibrate.py``), its planner row where the planner prices it
(``layer_plan(model, node)``), its RTL instance (``stage(model, p, node, inputs, lanes)``, on
``stage.py``: ``inputs`` the streams it reads, ``lanes`` its planner row or None), its precision (``OPS``, the canonical graph's ops it computes; ``knobs()``, the
types the search sets; ``derive_types()``, the types that follow from them) and its hls4ml
configuration (``hls_precision()``; where hls4ml 1.3 needs a workaround, ``hls_graph()`` before
and ``patch_hls_model()`` after its conversion). The capability check (hw/capabilities.py
assembles the table), the precision search (hw/precision.py), the planner (hw/plan.py), rtlgen
(which wires the stages), the hls4ml project (hw/hls.py) and the predicted fit of ``edgefpga
verify`` read them; adding a layer kind is one file here and its tests.
"""

from __future__ import annotations

from types import ModuleType

from . import act, add, affine, concat, conv, dense, gpool, pool, resize
from .base import Resources, total

LANE_KINDS: dict[str, ModuleType] = {kind: m for m in (conv, dense, gpool, pool, resize) for kind in m.KINDS}
# the kind computing each op of the canonical graph (its ``OPS``; gpool's ops become pool windows there)
OP_KINDS: dict[str, ModuleType] = {op: m for m in (act, add, affine, concat, conv, dense, pool, resize)
                                 for op in m.OPS}


def kind_model(kind: str) -> ModuleType:
    """The hardware model of a planner layer kind (conv, depthwise, dense, gpool, fixed)."""
    return LANE_KINDS[kind]


def op_kind(op: str) -> ModuleType | None:
    """The hardware model computing ``op`` of the canonical graph (its knobs, derived types and
    hls4ml configuration), or None for wiring and ops no kind computes."""
    return OP_KINDS.get(op)


__all__ = ["LANE_KINDS", "OP_KINDS", "Resources", "kind_model", "op_kind", "total"]
