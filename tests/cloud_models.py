"""A tiny cloud-architecture model folder (32 px, seeded random weights, exported with a batch
axis by the pipeline's exporter), for tests of the Zenoh service and of escalation: the shipped
cloud model is trained with `make train-cloud` and not kept in git (9.6 MB)."""

from __future__ import annotations

import signal
import subprocess

import torch

from edgefpga.fleet.cloud_model import CloudArchConfig
from edgefpga.models.card import write_card
from edgefpga.models.export import export_onnx

SIZE = 32


def tiny_model(folder, classes=("functional", "defective"), seed: int = 0, size: int = SIZE):
    """A cloud-architecture model folder (default 32 px) with seeded random weights."""
    torch.manual_seed(seed)
    arch = CloudArchConfig(size=size, stem=8, widths=(8, 16), blocks=(1, 1), num_classes=len(classes))
    net = arch.build_model().eval()
    folder.mkdir(parents=True, exist_ok=True)
    export_onnx(net, (1, size, size), folder / "model.onnx", batch_axis=True)
    write_card(folder, {"name": folder.name, "classes": list(classes),
                        "input": {"shape": [1, 1, size, size], "color": "gray", "resize": "area",
                                  "scale": 1 / 255, "mean": 0.5, "std": 0.25},
                        "dataset": {"name": "random"}, "params": 0, "macs": 0,
                        "metrics": {"test": {"accuracy": 0, "balanced_accuracy": 0, "f1_defective": 0, "n": 0}}})
    return folder


def stop_service(proc: subprocess.Popen, timeout_s: float = 10.0) -> str:
    """SIGTERM to an ``edgefpga-cloud`` process, and its output once it exits. One that does not
    exit within ``timeout_s`` is killed (never left running past the test) and the test fails
    with what it printed."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=timeout_s)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        out = proc.communicate()[0]
        raise AssertionError(f"edgefpga-cloud did not exit within {timeout_s:g} s of SIGTERM; it printed:\n"
                             f"{out[-2000:]}") from None
