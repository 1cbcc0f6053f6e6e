"""ef_dma_bridge (the PYNQ overlay's AXI-DMA side) on its own in cocotb + Verilator: frames of 9
pixels (3 pad bytes per frame), a batch of frames in one transfer, a short transfer."""

from __future__ import annotations

import json

import numpy as np

from edgefpga.hw.rtlgen import RTL_DIR
from edgefpga.runtime.backends.pynq import pack_frames
from edgefpga.sim.verilator import build_and_test

FRAME, SCORE_BITS = 9, 12


def expected_words(pixels: list[int]) -> list[int]:
    """The fake core's two scores, sign-extended from SCORE_BITS to 32 bits as the bridge must."""
    values = [sum(pixels) - 1000, -len(pixels)]
    return [v & 0xFFFFFFFF for v in values]


def test_bridge_unpacks_frames_and_ends_the_transfer_once(tmp_path):
    rng = np.random.default_rng(3)
    batch = rng.integers(0, 256, (3, 1, 3, 3), dtype=np.uint8)
    single = rng.integers(0, 256, (1, 1, 3, 3), dtype=np.uint8)
    short = list(rng.integers(0, 256, 8, dtype=np.uint8))  # two words, tlast before the frame is complete
    transfers = [pack_frames(batch, 3).view(np.uint8).tolist(), pack_frames(single, 3).view(np.uint8).tolist(),
                 [int(v) for v in short]]
    result_file = tmp_path / "result.json"
    build_and_test([RTL_DIR / "ef_dma_bridge.v"], "ef_dma_bridge", {"FRAME": FRAME, "SCORE_BITS": SCORE_BITS},
                   tmp_path / "sim", "edgefpga.sim.tb_dma_bridge",
                   {"EF_TB_TRANSFERS": json.dumps(transfers), "EF_TB_SCORE_BITS": str(SCORE_BITS),
                    "EF_TB_RESULT": str(result_file)})
    result = json.loads(result_file.read_text())
    frames = [f.reshape(-1).tolist() for f in batch] + [single.reshape(-1).tolist()] + [[int(v) for v in short]]
    assert result["core_frames"] == frames  # pad bytes dropped, each frame ended for the core
    words = [np.frombuffer(bytes(p), "<u4").tolist() for p in result["dma_packets"]]
    assert words[0] == sum((expected_words(f) for f in frames[:3]), [])  # one S2MM packet for the batch
    assert words[1] == expected_words(frames[3])
    assert words[2] == expected_words(frames[4])
