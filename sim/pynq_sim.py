"""A simulated Zynq PS-PL for PYNQ driver code: ``Overlay``, ``allocate`` and AXI DMA channels with
PYNQ's API, backed by cocotb + cocotbext-axi driving the Verilator-built overlay wrapper.

The runtime's ``pynq`` backend takes the PYNQ module as an argument; on a board it is ``pynq``,
here it is this module, so the same driver code (buffers, DMA transfers, polling, timeouts)
runs against the generated RTL. Like cocotbpynq (whose approach this follows), the .hwh beside
the bitstream name decides which IP exists and how the DMA streams connect to the design.

The AXI DMA is modelled at its registers (DMACR, DMASR, address, length; PG021 simple mode) with
the rules a driver must cope with on a board: a stopped channel halts only when its transfer
completes, an errored channel restarts only after a soft reset. Its PYNQ driver
(``sendchannel``/``recvchannel``) follows PYNQ 3.0's ``_SDMAChannel`` register for register,
busy-waits without timeouts included.

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

POLL_CYCLES = 100  # fabric cycles per register read: about 1 us at 100 MHz, what an MMIO read costs on a Zynq
CLOCK_PERIOD_NS = 10  # 100 MHz, the overlay's fabric clock

_pl: "SimulatedPL | None" = None


class SimBuffer(np.ndarray):
    """``pynq.allocate``'s buffer: a numpy array with the calls drivers make on contiguous memory,
    at a physical address of its own that the simulated DMA resolves (an unknown address is a
    decode error, as on the bus)."""

    physical_address = 0

    def flush(self) -> None:
        """Cache flush before a DMA reads the buffer: nothing to do without caches."""

    def invalidate(self) -> None:
        """Cache invalidate after a DMA wrote the buffer: nothing to do without caches."""

    def freebuffer(self) -> None:
        """Release the memory (PYNQ returns it to the CMA pool): the address stops resolving."""
        _memory.pop(self.physical_address, None)

    close = freebuffer


_memory: dict[int, SimBuffer] = {}  # physical address -> buffer
_next_address = [0x1000_0000]


def allocate(shape, dtype="u4", target=None, **kwargs) -> SimBuffer:
    """Like ``pynq.allocate``: a zeroed buffer the simulated DMA can read and write."""
    buffer = np.zeros(shape, dtype=dtype).view(SimBuffer)
    buffer.physical_address = _next_address[0]
    _next_address[0] += (buffer.nbytes + 0xFFF) & ~0xFFF or 0x1000
    _memory[buffer.physical_address] = buffer
    return buffer


def _resolve(address: int, nbytes: int) -> np.ndarray | None:
    """The bytes at ``address`` (``nbytes`` of them) in an allocated buffer, or None."""
    for base, buffer in _memory.items():
        if base <= address and address + nbytes <= base + buffer.nbytes:
            return buffer.view(np.uint8).reshape(-1)[address - base:address - base + nbytes]
    return None


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


# The AXI DMA in simple (register) mode, PG021: a channel's registers at 0x00 (MM2S) / 0x30 (S2MM)
MM2S, S2MM = 0x00, 0x30
DMACR, DMASR, ADDRESS, ADDRESS_MSB, LENGTH = 0x00, 0x04, 0x18, 0x1C, 0x28
CR_RUN, CR_RESET = 0x1, 0x4
SR_HALTED, SR_IDLE, SR_INTERNAL_ERROR, SR_SLAVE_ERROR, SR_DECODE_ERROR = 0x1, 0x2, 0x10, 0x20, 0x40
RESET_CYCLES = 32  # clock cycles the soft reset takes before DMACR.Reset reads back as 0


class _ChannelHardware:
    """One channel's registers and datapath, with the real DMA's rules that a driver must cope with:
    clearing DMACR.RS does not halt a channel mid-transfer (it halts when the transfer completes,
    so never while the stream is stuck); an error halts the channel, and setting RS again does not
    restart it: only a soft reset (DMACR.Reset, which resets both channels) clears the error."""

    def __init__(self, pl: "SimulatedPL"):
        self.pl = pl
        self.run = False
        self.halted, self.idle, self.busy, self.errors = True, False, False, 0
        self.address = self.length = 0
        self.inject_error = 0  # test hook: the error bit the next transfer raises

    def status(self) -> int:
        self.poll()
        return (SR_HALTED if self.halted else 0) | (SR_IDLE if self.idle and not self.halted else 0) | self.errors

    def control(self, value: int) -> None:
        self.run = bool(value & CR_RUN)
        if self.run and not self.errors:
            self.halted = False
        elif not self.run and not self.busy:
            self.halted = True

    def begin(self) -> None:
        """A write to LENGTH starts a transfer on a running channel."""
        if self.halted or not self.length:
            self._fail(SR_INTERNAL_ERROR if not self.halted else 0)
            return
        if self.inject_error:
            self._fail(self.inject_error)
            self.inject_error = 0
            return
        memory = _resolve(self.address, self.length)
        if memory is None:
            self._fail(SR_DECODE_ERROR)
            return
        self.busy, self.idle = True, False
        self.start(memory)

    def _fail(self, error: int) -> None:
        self.errors |= error
        if error:
            self.halted, self.busy = True, False

    def finish(self) -> None:
        self.busy, self.idle = False, True
        if not self.run:
            self.halted = True

    def reset(self) -> None:
        self.abort()
        self.run, self.halted, self.idle, self.busy, self.errors = False, True, False, False, 0

    def start(self, memory: np.ndarray) -> None:
        raise NotImplementedError

    def poll(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


class _MM2SHardware(_ChannelHardware):
    """Memory -> stream: the bytes as one packet, tlast on the last beat."""

    def __init__(self, pl: "SimulatedPL", port: _StreamPort):
        from cocotbext.axi import AxiStreamSource

        super().__init__(pl)
        self.source = AxiStreamSource(port.bus(pl.dut), pl.clk, pl.rst_n, reset_active_level=False)

    def start(self, memory: np.ndarray) -> None:
        from cocotbext.axi import AxiStreamFrame

        self.source.send_nowait(AxiStreamFrame(bytes(memory)))

    def poll(self) -> None:
        if self.busy and self.source.idle():
            self.finish()

    def abort(self) -> None:
        self.source.clear()


class _S2MMHardware(_ChannelHardware):
    """Stream -> memory: completes at the packet's tlast; a packet longer than the transfer is an
    internal error (the channel halts); LENGTH then reads the bytes written."""

    def __init__(self, pl: "SimulatedPL", port: _StreamPort):
        from cocotbext.axi import AxiStreamSink

        super().__init__(pl)
        self.sink = AxiStreamSink(port.bus(pl.dut), pl.clk, pl.rst_n, reset_active_level=False)
        self.task = None
        self.memory = None

    def start(self, memory: np.ndarray) -> None:
        import cocotb

        self.memory = memory
        self.task = cocotb.start_soon(self.sink.recv())

    def poll(self) -> None:
        if not self.busy or self.task is None or not self.task.done():
            return
        data = np.frombuffer(bytes(self.task.result().tdata), dtype=np.uint8)
        self.task = None
        if data.nbytes > self.memory.nbytes:
            self._fail(SR_INTERNAL_ERROR)
            return
        self.memory[:data.nbytes] = data
        self.length = data.nbytes
        self.finish()

    def abort(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.task = None
        self.sink.clear()


class _AxiDmaHardware:
    """The DMA's register file over both channels, as its AXI-Lite slave answers."""

    def __init__(self, pl: "SimulatedPL", send: _StreamPort | None, recv: _StreamPort | None):
        self.pl = pl
        self.channels = {}
        if send is not None:
            self.channels[MM2S] = _MM2SHardware(pl, send)
        if recv is not None:
            self.channels[S2MM] = _S2MMHardware(pl, recv)
        self.reset_until = -1

    def read(self, offset: int) -> int:
        channel, register = self._decode(offset)
        if register == DMACR:
            resetting = CR_RESET if self.pl.cycle < self.reset_until else 0
            return (CR_RUN if channel.run else 0) | resetting
        if register == DMASR:
            return channel.status()
        return {ADDRESS: channel.address & 0xFFFFFFFF, ADDRESS_MSB: channel.address >> 32,
                LENGTH: channel.length}.get(register, 0)

    def write(self, offset: int, value: int) -> None:
        channel, register = self._decode(offset)
        if register == DMACR and value & CR_RESET:  # either channel's reset bit resets the whole DMA
            for each in self.channels.values():
                each.reset()
            self.reset_until = self.pl.cycle + RESET_CYCLES
        elif register == DMACR:
            channel.control(value)
        elif register == ADDRESS:
            channel.address = (channel.address & ~0xFFFFFFFF) | value
        elif register == ADDRESS_MSB:
            channel.address = (channel.address & 0xFFFFFFFF) | (value << 32)
        elif register == LENGTH:
            channel.length = value
            channel.begin()

    def _decode(self, offset: int) -> tuple[_ChannelHardware, int]:
        base = S2MM if offset >= S2MM else MM2S
        if base not in self.channels:
            raise RuntimeError(f"AXI DMA register 0x{offset:02x}: that channel is not built in this DMA")
        return self.channels[base], offset - base

    def reset(self) -> None:
        for channel in self.channels.values():
            channel.reset()


class SimMMIO:
    """``pynq.MMIO`` over the simulated DMA's registers. Each access lets POLL_CYCLES of fabric
    time pass first, as time passes on a board between two register accesses."""

    def __init__(self, hardware: _AxiDmaHardware):
        self._hw = hardware

    @_resume
    async def read(self, offset: int, length: int = 4) -> int:
        await self._hw.pl.cycles(POLL_CYCLES)
        return self._hw.read(offset)

    @_resume
    async def write(self, offset: int, value: int) -> None:
        await self._hw.pl.cycles(1)
        self._hw.write(offset, int(value))


class _SimDMAChannel:
    """PYNQ 3.0's simple-mode DMA channel (``pynq.lib.dma._SDMAChannel``), the same register
    sequence and the same rules: ``start`` and ``stop`` spin on the Halted bit with no timeout,
    ``wait`` spins on Idle and raises a bare RuntimeError on an error bit, ``transfer`` refuses a
    halted or busy channel. A driver gets no more help here than on a board."""

    def __init__(self, mmio: SimMMIO, offset: int):
        self._mmio, self._offset = mmio, offset
        self._first_transfer = True
        self._active_buffer = None
        self._flush_before = offset == MM2S
        self.transferred = 0
        self.start()

    @property
    def running(self) -> bool:
        return self._mmio.read(self._offset + DMASR) & SR_HALTED == 0

    @property
    def idle(self) -> bool:
        return self._mmio.read(self._offset + DMASR) & SR_IDLE == SR_IDLE

    @property
    def error(self) -> bool:
        return self._mmio.read(self._offset + DMASR) & 0x70 != 0

    def start(self) -> None:
        self._mmio.write(self._offset + DMACR, CR_RUN)
        while not self.running:
            pass
        self._first_transfer = True

    def stop(self) -> None:
        self._mmio.write(self._offset + DMACR, 0)
        while self.running:
            pass

    def transfer(self, array, start: int = 0, nbytes: int = 0) -> None:
        if not self.running:
            raise RuntimeError("DMA channel not started")
        if not self.idle and not self._first_transfer:
            raise RuntimeError("DMA channel not idle")
        nbytes = nbytes or array.nbytes - start
        if self._flush_before:
            array.flush()
        self.transferred = 0
        address = array.physical_address + start
        self._mmio.write(self._offset + ADDRESS, address & 0xFFFFFFFF)
        self._mmio.write(self._offset + ADDRESS_MSB, address >> 32)
        self._mmio.write(self._offset + LENGTH, nbytes)
        self._active_buffer = array
        self._first_transfer = False

    def wait(self) -> None:
        if not self.running:
            raise RuntimeError("DMA channel not started")
        while True:
            status = self._mmio.read(self._offset + DMASR)
            if status & SR_INTERNAL_ERROR:
                raise RuntimeError("DMA Internal Error (transfer length 0?)")
            if status & SR_SLAVE_ERROR:
                raise RuntimeError("DMA Slave Error (cannot access memory map interface)")
            if status & SR_DECODE_ERROR:
                raise RuntimeError("DMA Decode Error (invalid address)")
            if status & SR_IDLE:
                break
        if not self._flush_before:
            self._active_buffer.invalidate()
        self.transferred = self._mmio.read(self._offset + LENGTH)


class SimDMA:
    """``pynq.lib.dma.DMA``: ``mmio``, ``sendchannel`` and ``recvchannel`` over one simulated AXI DMA.
    Created when the driver first touches the IP (as PYNQ binds drivers on access)."""

    def __init__(self, hardware: _AxiDmaHardware):
        self.mmio = SimMMIO(hardware)
        if MM2S in hardware.channels:
            self.sendchannel = _SimDMAChannel(self.mmio, MM2S)
        if S2MM in hardware.channels:
            self.recvchannel = _SimDMAChannel(self.mmio, S2MM)


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
        return _AxiDmaHardware(self, ends.get("M_AXIS_MM2S"), ends.get("S_AXIS_S2MM"))

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
        self._drivers: dict[str, SimDMA] = {}
        if download:
            self.download()

    @_resume
    async def download(self) -> None:
        """Loading a bitstream resets the PL, the DMAs included."""
        for hardware in _pl.ips.values():
            if hardware is not None:
                hardware.reset()
        await _pl.reset()

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        ips = _pl.ips if _pl is not None else {}
        if name in ips and ips[name] is not None:
            if name not in self._drivers:
                self._drivers[name] = SimDMA(ips[name])
            return self._drivers[name]
        raise AttributeError(f"overlay has no IP named {name!r} (IP: {', '.join(ips)})")


def inject_dma_error(channel: str = "S2MM", error: int = SR_SLAVE_ERROR) -> None:
    """Test hook: the next transfer of the first DMA's ``channel`` ("MM2S" or "S2MM") fails with
    ``error`` (a DMASR error bit; default a slave error, as a bad memory access gives)."""
    hardware = next(ip for ip in _pl.ips.values() if ip is not None)
    hardware.channels[{"MM2S": MM2S, "S2MM": S2MM}[channel]].inject_error = error


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
