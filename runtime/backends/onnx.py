"""``onnx``: the float model in ONNX Runtime, the reference every other backend is compared with
and the CPU baseline of the benchmarks.

The accelerator drops a final Softmax (it does not change the top-1), so its scores are logits.
For a model that ends in Softmax this backend returns log-probabilities, which are logits up to a
constant: the engine's softmax of either gives the model's probabilities."""

from __future__ import annotations

import numpy as np

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
        self.ends_in_softmax = ends_in_softmax(model.onnx_path)

    def run(self, pixels: np.ndarray) -> BackendOutput:
        x = normalize(pixels, self.model.spec)
        if self.batch_dim == 1:  # exported with a fixed batch of one
            scores = np.asarray([self.session.run(None, {self.input_name: x[i:i + 1]})[0][0] for i in range(len(x))])
        else:
            scores = self.session.run(None, {self.input_name: x})[0]
        scores = scores.astype(np.float64)
        return BackendOutput(np.log(np.maximum(scores, 1e-30)) if self.ends_in_softmax else scores)

    def describe(self) -> str:
        return f"onnx (ONNX Runtime, float model {self.model.onnx_path.name})"


def ends_in_softmax(path) -> bool:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producers = {out: node.op_type for node in graph.node for out in node.output}
    return producers.get(graph.output[0].name) == "Softmax"
