"""The simulation backends on the converted ELPV model: rtl and emulator identical on 32 test
cells (`verify` checks all 654 bit for bit), onnx the float model's accuracy on all 654; and the
pynq driver on the simulated PS-PL identical to rtl (on the tiny net's build), including a DMA
that never completes."""

from __future__ import annotations

import numpy as np
import pytest

import edgefpga.runtime as rt
from edgefpga.models.card import load_card
from edgefpga.models.metrics import classification_metrics
from edgefpga.runtime.inputs import elpv_inputs

pytestmark = pytest.mark.slow


SAMPLE = 8  # the shared verify checks the RTL and the emulator against the integer model as well


@pytest.fixture(scope="module")
def test_cells():
    return elpv_inputs("elpv:test")


@pytest.fixture(scope="module")
def sample_cells():
    return elpv_inputs(f"elpv:test:{SAMPLE}")


@pytest.fixture(scope="module")
def rtl_results(elpv_build, sample_cells):
    with rt.open(elpv_build, backend="rtl") as engine:
        return engine.infer(sample_cells.images)


def accuracy(results, labels) -> float:
    return classification_metrics(labels, np.array([r.label_index for r in results]))["accuracy"]


def test_rtl_and_emulator_give_identical_scores(elpv_build, sample_cells, rtl_results):
    with rt.open(elpv_build, backend="emulator") as engine:
        emulator = engine.infer(sample_cells.images)
    assert len(rtl_results) == len(emulator) == SAMPLE
    assert np.array_equal([r.scores for r in rtl_results], [r.scores for r in emulator])
    assert all(r.cycles > 0 for r in rtl_results) and all(r.cycles is None for r in emulator)


def test_onnx_backend_gives_the_float_models_accuracy(elpv_build, zoo_model, test_cells):
    with rt.open(elpv_build, backend="onnx") as engine:
        results = engine.infer(test_cells.images)
    assert accuracy(results, test_cells.labels) == load_card(zoo_model).test_metrics["accuracy"]


def test_auto_picks_rtl_on_a_build_without_board(elpv_build):
    with rt.open(elpv_build) as engine:
        assert engine.backend_name == "rtl" and "no board" in engine.chosen_because


def test_pynq_backend_on_simulated_pl_matches_rtl_and_recovers_from_a_hung_pl_and_an_errored_dma(
        tiny_build, sample_cells, tmp_path):
    """The simulated DMA behaves like the real one (a stopped channel does not halt mid-transfer,
    an errored one needs a reset): PYNQ's stop()/start() would spin forever on both failures.
    On the tiny net's build (its own PYNQ-Z2 overlay; the driver, the DMA and the bridge do not
    depend on the network): on the ELPV build the simulated PL took 130 s of the suite."""
    from edgefpga.runtime.pynq_simulation import run_pynq_backend

    images = np.stack(sample_cells.images[:6])
    with rt.open(tiny_build, backend="rtl") as engine:
        expected = [r.scores for r in engine.infer(sample_cells.images[:6])]
    timeout_s = 3.0
    result = run_pynq_backend(tiny_build, images, tmp_path, max_batch=4, hang_check=True, hang_timeout_s=timeout_s)
    assert result["scores"] == expected  # two DMA batches (4 + 2 frames), every score exact
    hung, errored = result["hung"], result["errored"]
    assert "of 1 frame(s) did not complete within 3 s; the DMA was reset" in hung["error"]  # the PL takes nothing
    assert "send (MM2S) of 1 frame(s) reported an error; the DMA was reset" in errored["error"]
    for case in (hung, errored):
        assert case["seconds"] < timeout_s + 1.0, case  # raised, within the timeout and a second
        assert case["scores_after"] == expected[:2]  # the next call is bit-exact again


def test_overlay_hardware_handoff_reads_as_pynq_reads_it(elpv_build):
    from pynqmetadata.frontends import Metadata
    from pynqmetadata.views.runtime import IpDictView

    ip_dict = IpDictView(Metadata(str(elpv_build / "overlay" / "elpv_defect.hwh"))).view
    assert ip_dict["axi_dma_0"]["type"].startswith("xilinx.com:ip:axi_dma:")
    assert ip_dict["axi_dma_0"]["phys_addr"] == 0x40400000
