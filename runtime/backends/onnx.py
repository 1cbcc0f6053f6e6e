"""``onnx``: the float model in ONNX Runtime, the reference every other backend is compared with
and the CPU baseline of the benchmarks.

The accelerator drops a final Softmax or Sigmoid (neither changes the ranking), so its scores are
logits. For a model that ends in Softmax this backend returns log-probabilities, which are logits
up to a constant (the engine's softmax of either gives the model's probabilities); for one that
ends in Sigmoid it returns the logits themselves (the engine applies the sigmoid again)."""

from __future__ import annotations

import numpy as np

from edgefpga.models.detect import stream_order
from edgefpga.models.preprocess import normalize

from .base import Backend, BackendOutput, BackendUnavailable


class OnnxBackend(Backend):
    name = "onnx"

    def __init__(self, model, threads: int = 0):
        import onnxruntime as ort

        super().__init__(model)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(model.onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises several private exception types
            raise BackendUnavailable(f"{model.onnx_path}: ONNX Runtime cannot load it ({exc})") from exc
        self.input_name = self.session.get_inputs()[0].name
        self.batch_dim = self.session.get_inputs()[0].shape[0]
        self.final = final_activation(model.onnx_path)
        self.nhwc = takes_nhwc(model.onnx_path)

    def run(self, pixels: np.ndarray) -> BackendOutput:
        x = normalize(pixels, self.model.spec)
        if self.nhwc:  # a Keras / tf2onnx-style graph: NHWC in, transposed inside
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        if self.batch_dim == 1:  # exported with a fixed batch of one
            scores = np.asarray([self.session.run(None, {self.input_name: x[i:i + 1]})[0][0] for i in range(len(x))])
        else:
            scores = self.session.run(None, {self.input_name: x})[0]
        scores = stream_order(scores.astype(np.float64))  # a detector's map as the accelerator streams it
        if self.final == "softmax":
            scores = np.log(np.maximum(scores, 1e-30))
        elif self.final == "sigmoid":
            p = np.clip(scores, 1e-15, 1 - 1e-15)
            scores = np.log(p / (1 - p))
        return BackendOutput(scores)

    def describe(self) -> str:
        return f"onnx (ONNX Runtime, float model {self.model.onnx_path.name})"


def final_activation(path) -> str | None:
    """"softmax" / "sigmoid" when the model's output node is one, else None."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # noqa: BLE001 -- an unreadable file: the backend that loads it names the error
        return None
    producers = {out: node.op_type for node in graph.node for out in node.output}
    op = producers.get(graph.output[0].name)
    return op.lower() if op in ("Softmax", "Sigmoid") else None


def takes_nhwc(path) -> bool:
    """Whether the model's input is NHWC, transposed to NCHW as its first node (the rule
    ``edgefpga convert`` folds into the stream order, hw/onnx_check.py)."""
    import onnx

    from edgefpga.hw.onnx_check import input_transpose

    return input_transpose(onnx.load(str(path), load_external_data=False)) is not None
