"""A simulated Zynq PS-PL for PYNQ driver code: ``Overlay``, ``allocate`` and AXI DMA channels with
PYNQ's API, backed by cocotb + cocotbext-axi driving the Verilator-built overlay wrapper.

The runtime's ``pynq`` backend takes the PYNQ module as an argument; on a board it is ``pynq``,
here it is this module, so the same driver code (buffers, DMA transfers, polling, timeouts)
runs against the generated RTL. Like cocotbpynq (whose approach this follows), the .hwh beside
the bitstream name decides which IP exists and how the DMA streams connect to the design.

The driver runs in a thread bridged into the cocotb test (``cocotb.task.bridge``); every call
that touches the simulation is a ``cocotb.task.resume`` function, so simulated time advances
only while the driver waits on the hardware, as it would on a board.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

POLL_CYCLES = 2_000  # clock cycles the simulation runs per status poll of a DMA channel
CLOCK_PERIOD_NS = 10  # 100 MHz, the overlay's fabric clock

_pl: "SimulatedPL | None" = None


class SimBuffer(np.ndarray):
    """``pynq.allocate``'s buffer: a numpy array with the calls drivers make on contiguous memory."""

    physical_address = 0

    def flush(self) -> None:
        """Cache flush before a DMA reads the buffer: nothing to do without caches."""

    def invalidate(self) -> None:
        """Cache invalidate after a DMA wrote the buffer: nothing to do without caches."""

    def freebuffer(self) -> None:
        """Release the memory (PYNQ returns it to the CMA pool; here numpy owns it)."""

    close = freebuffer


def allocate(shape, dtype="u4", target=None, **kwargs) -> SimBuffer:
    """Like ``pynq.allocate``: a zeroed buffer the simulated DMA can read and write."""
    return np.zeros(shape, dtype=dtype).view(SimBuffer)


def _resume(fn):
    from cocotb.task import resume

    return resume(fn)


@dataclass
class _StreamPort:
    """One AXI-Stream bus interface of the design, as the .hwh names its signals."""

    busname: str
    signals: dict[str, str]  # LOGICAL (TDATA, TVALID, ...) -> physical port name

    def bus(self, dut):
        """The cocotbext-axi bus: ports named ``<prefix>_tdata``, ``<prefix>_tvalid``, ..."""
        from cocotbext.axi import AxiStreamBus

        prefix = self.signals["TDATA"].rsplit("_", 1)[0]
        expected = {logical: f"{prefix}_{logical.lower()}" for logical in self.signals}
        if expected != self.signals:
            raise RuntimeError(f"{self.busname}: ports {self.signals} do not share the prefix {prefix}_")
        return AxiStreamBus.from_prefix(dut, prefix)


class _Channel:
    """What both directions share: PYNQ's status properties, start/stop and polling. ``idle``
    runs the simulation for POLL_CYCLES before it answers, as time passes on a board between
    two register reads."""

    def __init__(self, pl: "SimulatedPL"):
        self._pl = pl
        self.running = True
        self.error = False
        self.transferred = 0

    def start(self) -> None:
        self.running = True

    @_resume
    async def stop(self) -> None:
        """Abort the transfer in flight, as a DMA reset does."""
        self._abort()
        self.running = False

    @_resume
    async def _poll(self) -> bool:
        await self._pl.cycles(POLL_CYCLES)
        return self._finished()

    @property
    def idle(self) -> bool:
        return self._poll()

    def wait(self) -> None:
        """PYNQ's wait: spins until idle, however long that takes (drivers should poll with a deadline)."""
        while not self.idle:
            pass

    def _check_running(self) -> None:
        if not self.running:
            raise RuntimeError("DMA channel not started")

    def _finished(self) -> bool:
        raise NotImplementedError

    def _abort(self) -> None:
        raise NotImplementedError


class _SendChannel(_Channel):
    """MM2S: memory -> stream. ``transfer`` queues the bytes as one packet, tlast on the last word."""

    def __init__(self, pl: "SimulatedPL", port: _StreamPort):
        from cocotbext.axi import AxiStreamSource

        super().__init__(pl)
        self._source = AxiStreamSource(port.bus(pl.dut), pl.clk, pl.rst_n, reset_active_level=False)

    def transfer(self, array: np.ndarray, start: int = 0, nbytes: int = 0) -> None:
        from cocotbext.axi import AxiStreamFrame

        self._check_running()
        data = array.view(np.uint8).reshape(-1)
        nbytes = nbytes or data.nbytes - start
        self._queue(AxiStreamFrame(bytes(data[start:start + nbytes])))
        self.transferred = nbytes

    @_resume
    async def _queue(self, frame) -> None:
        await self._source.send(frame)

    def _finished(self) -> bool:
        return self._source.idle()

    def _abort(self) -> None:
        self._source.clear()


class _RecvChannel(_Channel):
    """S2MM: stream -> memory. A transfer completes at the packet's tlast (or errs past nbytes)."""

    def __init__(self, pl: "SimulatedPL", port: _StreamPort):
        from cocotbext.axi import AxiStreamSink

        super().__init__(pl)
        self._sink = AxiStreamSink(port.bus(pl.dut), pl.clk, pl.rst_n, reset_active_level=False)
        self._task = None
        self._done = True

    def transfer(self, array: np.ndarray, start: int = 0, nbytes: int = 0) -> None:
        self._check_running()
        target = array.view(np.uint8).reshape(-1)
        nbytes = nbytes or target.nbytes - start
        self._done, self.error = False, False
        self._receive(target, start, nbytes)

    @_resume
    async def _receive(self, target: np.ndarray, start: int, nbytes: int) -> None:
        import cocotb

        self._task = cocotb.start_soon(self._fill(target, start, nbytes))

    async def _fill(self, target: np.ndarray, start: int, nbytes: int) -> None:
        frame = await self._sink.recv()
        data = np.frombuffer(bytes(frame.tdata), dtype=np.uint8)
        if data.nbytes > nbytes:  # the real DMA flags an internal error for a packet longer than the buffer
            self.error = True
            data = data[:nbytes]
        target[start:start + data.nbytes] = data
        self.transferred = data.nbytes
        self._done = True

    def _finished(self) -> bool:
        return self._done

    def _abort(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._sink.clear()
        self._done = True


class SimDMA:
    """An AXI DMA in simple (register) mode with PYNQ's ``sendchannel`` / ``recvchannel``."""

    def __init__(self, pl: "SimulatedPL", send: _StreamPort | None, recv: _StreamPort | None):
        if send is not None:
            self.sendchannel = _SendChannel(pl, send)
        if recv is not None:
            self.recvchannel = _RecvChannel(pl, recv)


class SimulatedPL:
    """The programmable logic of one simulation: the design under test, its clock and reset, and
    the IP the .hwh declares around it (AXI DMAs). Created inside the cocotb test, before the
    driver thread starts, because cocotbext-axi starts its coroutines on construction."""

    def __init__(self, dut, hwh: Path):
        import cocotb
        from cocotb.clock import Clock

        global _pl
        self.dut = dut
        self.hwh = Path(hwh)
        self.tree = ElementTree.parse(self.hwh).getroot()
        design = self.tree.find(f"./MODULES/MODULE[@MODTYPE='{dut._name}']")
        if design is None:
            raise RuntimeError(f"{self.hwh}: no module of type {dut._name} (the simulated design)")
        ports = {p.get("SIGIS"): p.get("NAME") for p in design.findall("./PORTS/PORT")}
        self.clk, self.rst_n = getattr(dut, ports["clk"]), getattr(dut, ports["rst"])
        self.streams = {bi.get("BUSNAME"): _StreamPort(bi.get("BUSNAME"), {
            pm.get("LOGICAL"): pm.get("PHYSICAL") for pm in bi.findall("./PORTMAPS/PORTMAP")})
            for bi in design.findall("./BUSINTERFACES/BUSINTERFACE")}
        cocotb.start_soon(Clock(self.clk, CLOCK_PERIOD_NS, unit="ns").start())
        self.rst_n.value = 0
        self.ips = {inst: self._make_ip(inst) for inst in self._memory_mapped()}
        _pl = self

    def _memory_mapped(self) -> list[str]:
        ps = self.tree.find("./MODULES/MODULE[@MODTYPE='processing_system7']")
        if ps is None:
            raise RuntimeError(f"{self.hwh}: no processing_system7: the simulated PS-PL is Zynq-7000 only")
        return [m.get("INSTANCE") for m in ps.findall("./MEMORYMAP/MEMRANGE")]

    def _module(self, instance: str):
        return self.tree.find(f"./MODULES/MODULE[@INSTANCE='{instance}']")

    def _make_ip(self, instance: str):
        module = self._module(instance)
        if module is None or not module.get("VLNV", "").startswith("xilinx.com:ip:axi_dma:"):
            return None
        ends = {bi.get("NAME"): self.streams.get(bi.get("BUSNAME"))
                for bi in module.findall("./BUSINTERFACES/BUSINTERFACE")}
        return SimDMA(self, ends.get("M_AXIS_MM2S"), ends.get("S_AXIS_S2MM"))

    def ip_dict(self) -> dict:
        """As ``pynq.Overlay.ip_dict``: memory-mapped IP by instance name with its type and address."""
        ps = self.tree.find("./MODULES/MODULE[@MODTYPE='processing_system7']")
        return {r.get("INSTANCE"): {"type": self._module(r.get("INSTANCE")).get("VLNV"),
                                    "phys_addr": int(r.get("BASEVALUE"), 16),
                                    "addr_range": int(r.get("HIGHVALUE"), 16) - int(r.get("BASEVALUE"), 16) + 1}
                for r in ps.findall("./MEMORYMAP/MEMRANGE")}

    async def cycles(self, n: int) -> None:
        from cocotb.triggers import ClockCycles

        await ClockCycles(self.clk, n)

    async def reset(self, cycles: int = 4) -> None:
        """Pulse the active-low reset, as the PS's proc_sys_reset does after loading a bitstream."""
        self.rst_n.value = 0
        await self.cycles(cycles)
        self.rst_n.value = 1
        await self.cycles(1)

    @property
    def cycle(self) -> int:
        from cocotb.utils import get_sim_time

        return int(get_sim_time("ns")) // CLOCK_PERIOD_NS


class Overlay:
    """``pynq.Overlay`` for the simulated PL: reads ``<bitfile stem>.hwh``; IP by instance name."""

    def __init__(self, bitfile_name: str, dtbo=None, download: bool = True, ignore_version: bool = False,
                 device=None):
        if _pl is None:
            raise RuntimeError("no simulated PL: create edgefpga.sim.pynq_sim.SimulatedPL in the cocotb test first")
        hwh = Path(bitfile_name).with_suffix(".hwh")
        if not hwh.is_file():
            raise FileNotFoundError(f"{hwh}: no hardware handoff beside the bitstream name")
        if hwh.resolve() != _pl.hwh.resolve():
            raise RuntimeError(f"{hwh}: the simulation was started for {_pl.hwh}")
        self.bitfile_name = str(bitfile_name)
        self.ip_dict = _pl.ip_dict()
        if download:
            self.download()

    @_resume
    async def download(self) -> None:
        """Loading a bitstream resets the PL."""
        await _pl.reset()

    def __getattr__(self, name: str):
        ips = _pl.ips if _pl is not None else {}
        if name in ips and ips[name] is not None:
            return ips[name]
        raise AttributeError(f"overlay has no IP named {name!r} (IP: {', '.join(ips)})")


def hold_in_reset(hold: bool) -> None:
    """Test hook: keep the PL in reset (a hung accelerator: DMA transfers never complete) or
    release it with a clean reset pulse. Call from the driver thread."""
    _set_reset(hold)


@_resume
async def _set_reset(hold: bool) -> None:
    if hold:
        _pl.rst_n.value = 0
        await _pl.cycles(2)
    else:
        await _pl.reset()


def environment_dir() -> Path:
    """The folder a test passes its inputs and results through (set by the runner)."""
    return Path(os.environ["EDGEFPGA_PYNQ_SIM_DIR"])
