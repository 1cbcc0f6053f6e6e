"""``pynq``: the accelerator on a Zynq board, through PYNQ's ``Overlay``, ``allocate`` and AXI DMA.

The overlay puts the accelerator between the two streams of an AXI DMA (``overlay/overlay.json``
says how: 4 pixels per 32-bit input word, frames word-aligned, one sign-extended score per
output word). A batch of frames is one DMA transfer each way, from buffers allocated once.
Completion is polled with a deadline, never with PYNQ's ``wait()`` alone (it spins without a
timeout). A transfer that does not finish, a channel that reports an error and any exception of
PYNQ's DMA driver end the same way: a soft reset of the DMA (DMACR.Reset, which aborts both
channels whatever state they are in) polled against a deadline, a reload of the bitstream (the
accelerator may hold part of a frame), the channels started again, and ``BackendError``; the next
call runs on a clean PL. PYNQ's own ``stop()``/``start()`` are
not used to recover: they spin on the Halted bit with no timeout, and a channel stuck
mid-transfer never halts while an errored one never restarts without a reset.

The PYNQ module is a parameter: ``pynq`` on a board, ``edgefpga.sim.pynq_sim`` in simulation,
where this same code drives the generated RTL through a simulated PS-PL.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgefpga.hw.overlay import OVERLAY_DIR, OverlayMissing, bitstream_problem, handoff_problem, load_overlay

from .base import Backend, BackendError, BackendOutput, BackendUnavailable

BITSTREAM_DIR = "bitstream"
# AXI DMA registers (PG021, simple mode): each channel's DMACR / DMASR at 0x00 (MM2S) and 0x30 (S2MM)
CHANNEL_OFFSETS = (0x00, 0x30)
DMACR_RUN, DMACR_RESET, DMASR_HALTED = 0x1, 0x4, 0x1
RESET_TIMEOUT_S = 0.5  # the soft reset and the restart take microseconds; past this the PL needs a reload


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
        problem = (bitstream_problem(self.bitfile, self.format.get("part")) if pynq_module is None
                   else handoff_problem(self.bitfile))  # the simulated PL loads the .hwh alone: no bitstream
        if problem:
            raise BackendUnavailable(f"pynq backend: {problem}")
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
        """No PYNQ, no device, or no loadable bitstream in the build folder (then ``auto`` falls
        back to the next backend and says why)."""
        try:
            import_pynq()
        except BackendUnavailable as exc:
            return str(exc)
        if model.build_dir is None:
            return "pynq backend: a model folder has no bitstream (convert it and build the bitstream)"
        try:
            fmt = load_overlay(model.build_dir / OVERLAY_DIR)
        except OverlayMissing as exc:
            return f"pynq backend: {exc}"
        problem = bitstream_problem(model.build_dir / BITSTREAM_DIR / fmt["bitstream"], fmt.get("part"))
        return f"pynq backend: {problem}" if problem else None

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
        try:
            self.dma.recvchannel.transfer(self.out_buffer, 0, out_bytes)
            self.dma.sendchannel.transfer(self.in_buffer, 0, in_bytes)
            self._complete(n)
        except BackendError:
            raise
        except Exception as exc:  # PYNQ's driver raises bare RuntimeError / ValueError; the MMIO OSError
            self._recover()
            raise BackendError(f"{self.bitfile}: DMA of {n} frame(s) failed in PYNQ's driver "
                               f"({type(exc).__name__}: {exc}); the DMA was reset") from exc
        got = self.dma.recvchannel.transferred
        if got != out_bytes:
            raise BackendError(f"{self.bitfile}: the accelerator returned {got} bytes for {n} frame(s), "
                               f"expected {out_bytes}")
        raw = np.array(self.out_buffer[:n * outputs], dtype=np.int64).reshape(n, outputs)
        return self.dequantized(raw / 2.0 ** self.format["output"]["frac"])

    def _complete(self, frames: int) -> None:
        """Poll both channels until idle; on an error or past the deadline reset the DMA and raise."""
        deadline = time.monotonic() + self.timeout_s
        for label, channel in (("send (MM2S)", self.dma.sendchannel), ("receive (S2MM)", self.dma.recvchannel)):
            while not channel.idle:
                why = "reported an error" if channel.error else "halted" if not channel.running else \
                    f"did not complete within {self.timeout_s:g} s" if time.monotonic() > deadline else None
                if why:
                    self._recover()
                    raise BackendError(f"{self.bitfile}: DMA {label} of {frames} frame(s) {why}; the DMA was reset")
            channel.wait()  # returns at once on an idle channel: PYNQ's bookkeeping (cache, byte count)

    def _recover(self) -> None:
        """Bring DMA and accelerator back to a clean state, each step against a deadline: a soft
        reset of the DMA (stops its bus traffic, aborts both channels), a reload of the bitstream
        (resets the accelerator, which may hold part of a frame or scores of one that never got
        out: without it the next call could read stale scores), then both channels started. A
        DMA that does not come back raises BackendError saying to reload the overlay."""
        mmio, deadline = self.dma.mmio, time.monotonic() + RESET_TIMEOUT_S
        mmio.write(CHANNEL_OFFSETS[0], DMACR_RESET)  # resets both channels
        self._poll_until(lambda: not mmio.read(CHANNEL_OFFSETS[0]) & DMACR_RESET, deadline, "leave reset")
        try:
            self.overlay.download()
        except Exception as exc:  # noqa: BLE001  (PYNQ raises several types for a failed download)
            raise BackendError(f"{self.bitfile}: reloading the bitstream after a DMA failure failed ({exc})") from exc
        deadline = time.monotonic() + RESET_TIMEOUT_S
        for offset in CHANNEL_OFFSETS:
            mmio.write(offset, DMACR_RUN)  # what PYNQ's start() writes, without its endless spin
        self._poll_until(lambda: not any(mmio.read(off + 4) & DMASR_HALTED for off in CHANNEL_OFFSETS), deadline,
                         "restart")
        for channel in (self.dma.sendchannel, self.dma.recvchannel):
            channel._first_transfer = True  # as PYNQ's start() leaves it: Idle reads 0 until a transfer completes

    def _poll_until(self, done, deadline: float, what: str) -> None:
        while not done():
            if time.monotonic() > deadline:
                raise BackendError(f"{self.bitfile}: the DMA did not {what} within {RESET_TIMEOUT_S:g} s of a soft "
                                   "reset: reload the overlay (open the engine again)")

    def describe(self) -> str:
        return f"pynq ({self.bitfile.name} via {getattr(self.api, '__name__', 'pynq')}, DMA {self.format['dma']})"

    def close(self) -> None:
        for buffer in (self.in_buffer, self.out_buffer):
            buffer.freebuffer()
