"""Value ranges of every tensor of the canonical graph on calibration images.

Integer bits come from these ranges (a type must hold the largest value seen), fractional bits
from the precision search. The float graph runs in ONNX Runtime with every intermediate tensor
exposed as an output, in batches.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx
from qonnx.core.modelwrapper import ModelWrapper
from edgefpga.progress import progress_bar

from .graph import onnx_session


@dataclass
class TensorRange:
    """What calibration showed for one tensor; ``p999`` (99.9th percentile of |x|) shows how much
    of the range only outliers use."""

    min: float
    max: float
    max_abs: float
    p999: float

    def to_dict(self) -> dict:
        return asdict(self)


def with_outputs(model: ModelWrapper, tensors: list[str]) -> onnx.ModelProto:
    """A copy of the graph that also returns ``tensors``, batch size free."""
    proto = onnx.ModelProto()
    proto.CopyFrom(model.model)
    known = {o.name for o in proto.graph.output}
    for name in tensors:
        if name not in known:
            proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    del proto.graph.value_info[:]
    for value in (*proto.graph.input, *proto.graph.output):
        if value.type.tensor_type.HasField("shape"):
            value.type.tensor_type.shape.dim[0].dim_param = "N"
    return proto


def activation_tensors(model: ModelWrapper) -> list[str]:
    return [node.output[0] for node in model.graph.node]


def run_batches(session, pixels: np.ndarray, batch: int = 64, progress: bool = False, desc: str = "profile"):
    """Yield the session's outputs batch by batch for (N, C, H, W) float pixels."""
    name = session.get_inputs()[0].name
    for start in progress_bar(range(0, len(pixels), batch), progress=progress, desc=desc, unit="batch"):
        yield session.run(None, {name: pixels[start:start + batch]})


def profile_activations(model: ModelWrapper, pixels: np.ndarray, progress: bool = False) -> dict[str, TensorRange]:
    """Range of the graph input and of every node output over the calibration pixels (N, C, H, W)."""
    tensors = [model.graph.input[0].name, *activation_tensors(model)]
    session = onnx_session(with_outputs(model, tensors))
    order = [o.name for o in session.get_outputs()]
    lows = {t: np.inf for t in tensors}
    highs = {t: -np.inf for t in tensors}
    p999 = {t: 0.0 for t in tensors}
    for outputs in run_batches(session, pixels, progress=progress):
        values = dict(zip(order, outputs))
        values[tensors[0]] = None
        for t in tensors[1:]:
            v = values[t]
            lows[t], highs[t] = min(lows[t], float(v.min())), max(highs[t], float(v.max()))
            p999[t] = max(p999[t], float(np.quantile(np.abs(v), 0.999)))
    lows[tensors[0]], highs[tensors[0]] = float(pixels.min()), float(pixels.max())
    p999[tensors[0]] = float(np.quantile(np.abs(pixels), 0.999))
    return {t: TensorRange(lows[t], highs[t], max(abs(lows[t]), abs(highs[t])), p999[t]) for t in tensors}
