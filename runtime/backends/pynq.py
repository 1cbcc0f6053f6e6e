"""``pynq``: the accelerator on a Zynq board, through PYNQ's ``Overlay``, ``allocate`` and AXI DMA.

The overlay puts the accelerator between the two streams of an AXI DMA (``overlay/overlay.json``
says how: 4 pixels per 32-bit input word, frames word-aligned, one sign-extended score per
output word). A batch of frames is one DMA transfer each way, from buffers allocated once.
Completion is polled with a deadline: a transfer that does not finish raises ``BackendError``
after aborting both channels, instead of spinning forever in ``DMAChannel.wait()``.

The PYNQ module is a parameter: ``pynq`` on a board, ``edgefpga.sim.pynq_sim`` in simulation,
where this same code drives the generated RTL through a simulated PS-PL.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgefpga.hw.overlay import OVERLAY_DIR, OverlayMissing, load_overlay

from .base import Backend, BackendError, BackendOutput, BackendUnavailable

BITSTREAM_DIR = "bitstream"


def import_pynq():
    """The PYNQ library, or BackendUnavailable saying why (not installed, or no board)."""
    try:
        import pynq
    except ImportError as exc:
        raise BackendUnavailable("pynq backend: the `pynq` package is not installed (it runs on the board: "
                                 "`pip install pynq` there)") from exc
    try:
        devices = pynq.Device.devices
    except Exception as exc:  # PYNQ raises RuntimeError("No Devices Found") and others without a board
        raise BackendUnavailable(f"pynq backend: no PYNQ device found ({exc})") from exc
    if not devices:
        raise BackendUnavailable("pynq backend: no PYNQ device found")
    return pynq


def pack_frames(pixels: np.ndarray, frame_words: int) -> np.ndarray:
    """(N, C, H, W) uint8 -> (N * frame_words,) uint32: each frame NHWC, little-endian, word-aligned."""
    n = len(pixels)
    frames = np.zeros((n, frame_words * 4), dtype=np.uint8)
    flat = pixels.transpose(0, 2, 3, 1).reshape(n, -1)
    frames[:, :flat.shape[1]] = flat
    return frames.view("<u4").reshape(-1)


class PynqBackend(Backend):
    name = "pynq"

    def __init__(self, model, pynq_module=None, bitfile: str | Path | None = None, overlay_dir: str | Path | None = None,
                 timeout_s: float = 2.0, max_batch: int = 64):
        super().__init__(model)
        folder = Path(overlay_dir) if overlay_dir else model.needs_build(self.name) / OVERLAY_DIR
        try:
            self.format = load_overlay(folder)
        except OverlayMissing as exc:
            raise BackendUnavailable(str(exc)) from exc
        self.api = pynq_module or import_pynq()
        self.bitfile = Path(bitfile) if bitfile else self.default_bitfile(folder, from_build=overlay_dir is None)
        if not self.bitfile.with_suffix(".hwh").is_file():
            raise BackendUnavailable(f"{self.bitfile.with_suffix('.hwh')}: no hardware handoff beside the bitstream "
                                     "(copy the .bit and .hwh that `edgefpga build` wrote, with the same name)")
        self.timeout_s, self.max_batch = timeout_s, max_batch
        try:
            self.overlay = self.api.Overlay(str(self.bitfile))
        except Exception as exc:  # PYNQ raises OSError, ValueError, RuntimeError for bad files
            raise BackendUnavailable(f"{self.bitfile}: the overlay does not load ({exc})") from exc
        self.dma = self._find_dma()
        words_in, scores = self.format["input"]["frame_words"], self.format["output"]["scores"]
        self.in_buffer = self.api.allocate(shape=(max_batch * words_in,), dtype=np.uint32)
        self.out_buffer = self.api.allocate(shape=(max_batch * scores,), dtype=np.int32)

    def default_bitfile(self, folder: Path, from_build: bool) -> Path:
        """``<build>/bitstream/<name>.bit`` (where `edgefpga build` and docs/board.md put it), or
        beside overlay.json when the overlay folder is given on its own."""
        return (folder.parent / BITSTREAM_DIR if from_build else folder) / self.format["bitstream"]

    @classmethod
    def unavailable(cls, model) -> str | None:
        try:
            import_pynq()
        except BackendUnavailable as exc:
            return str(exc)
        return None

    def _find_dma(self):
        """The overlay's AXI DMA: the one overlay.json names, else the only one in ``ip_dict``."""
        dmas = [name for name, ip in self.overlay.ip_dict.items() if ip.get("type", "").startswith("xilinx.com:ip:axi_dma:")]
        name = self.format["dma"] if self.format["dma"] in dmas else (dmas[0] if len(dmas) == 1 else None)
        if name is None:
            raise BackendUnavailable(f"{self.bitfile}: expected one AXI DMA ({self.format['dma']}) in the overlay, "
                                     f"found {dmas or 'none'}")
        ip = self.overlay
        for part in name.split("/"):
            ip = getattr(ip, part)
        return ip

    def run(self, pixels: np.ndarray) -> BackendOutput:
        scores = [self._run_batch(pixels[i:i + self.max_batch]) for i in range(0, len(pixels), self.max_batch)]
        return BackendOutput(np.concatenate(scores))

    def _run_batch(self, pixels: np.ndarray) -> np.ndarray:
        n, words_in = len(pixels), self.format["input"]["frame_words"]
        outputs = self.format["output"]["scores"]
        self.in_buffer[:n * words_in] = pack_frames(pixels, words_in)
        in_bytes, out_bytes = n * words_in * 4, n * outputs * 4
        self.dma.recvchannel.transfer(self.out_buffer, 0, out_bytes)
        self.dma.sendchannel.transfer(self.in_buffer, 0, in_bytes)
        self._complete(n)
        got = self.dma.recvchannel.transferred
        if got != out_bytes:
            raise BackendError(f"{self.bitfile}: the accelerator returned {got} bytes for {n} frame(s), "
                               f"expected {out_bytes}")
        raw = np.array(self.out_buffer[:n * outputs], dtype=np.int64).reshape(n, outputs)
        return raw / 2.0 ** self.format["output"]["frac"]

    def _complete(self, frames: int) -> None:
        """Poll both channels until idle; on an error or past the deadline abort them and raise."""
        deadline = time.monotonic() + self.timeout_s
        for label, channel in (("send (MM2S)", self.dma.sendchannel), ("receive (S2MM)", self.dma.recvchannel)):
            while not channel.idle:
                if channel.error or time.monotonic() > deadline:
                    self._abort()
                    why = "reported an error" if channel.error else f"did not complete within {self.timeout_s:g} s"
                    raise BackendError(f"{self.bitfile}: DMA {label} of {frames} frame(s) {why}; both DMA "
                                       "channels were reset")
            channel.wait()  # returns at once on an idle channel; PYNQ's bookkeeping (cache, byte count)

    def _abort(self) -> None:
        for channel in (self.dma.sendchannel, self.dma.recvchannel):
            channel.stop()
            channel.start()

    def describe(self) -> str:
        return f"pynq ({self.bitfile.name} via {getattr(self.api, '__name__', 'pynq')}, DMA {self.format['dma']})"

    def close(self) -> None:
        for buffer in (self.in_buffer, self.out_buffer):
            buffer.freebuffer()
