"""Board presets: which FPGA part, which hls4ml backend, and what the device holds.

The resources are the device totals from AMD's data sheets; the reuse planner and the report
compare the design against them. Boards that hls4ml's VivadoAccelerator backend packages itself
(PS + DMA + accelerator block design, PYNQ driver) use it; the others get a Vitis HLS project.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .onnx_check import ConversionError


@dataclass(frozen=True)
class Board:
    name: str
    part: str
    backend: str  # hls4ml backend name
    dsp: int
    lut: int
    ff: int
    bram36: int
    clock_mhz: float = 100.0
    # Vivado's board part (DDR, MIO and clocks of the processing system); its board files must be
    # installed in Vivado (PYNQ-Z2: TUL's, as PYNQ's docs describe; ZCU104 and KV260 ship with Vivado)
    vivado_board_part: str = ""

    @property
    def clock_period_ns(self) -> float:
        return 1000.0 / self.clock_mhz

    def to_dict(self) -> dict:
        return asdict(self)


BOARDS = {
    b.name: b for b in (
        Board("pynq-z2", "xc7z020clg400-1", "VivadoAccelerator", dsp=220, lut=53_200, ff=106_400, bram36=140,
              vivado_board_part="tul.com.tw:pynq-z2:part0:1.0"),
        Board("zcu102", "xczu9eg-ffvb1156-2-e", "VivadoAccelerator", dsp=2_520, lut=274_080, ff=548_160, bram36=912,
              clock_mhz=200.0, vivado_board_part="xilinx.com:zcu102:part0:3.4"),
        Board("zcu104", "xczu7ev-ffvc1156-2-e", "Vitis", dsp=1_728, lut=230_400, ff=460_800, bram36=312,
              clock_mhz=200.0, vivado_board_part="xilinx.com:zcu104:part0:1.1"),
        Board("kv260", "xck26-sfvc784-2LV-c", "Vitis", dsp=1_248, lut=117_120, ff=234_240, bram36=144,
              clock_mhz=200.0, vivado_board_part="xilinx.com:kv260_som:part0:1.4"),
    )
}


def get_board(name: str) -> Board:
    try:
        return BOARDS[name]
    except KeyError:
        raise ConversionError(f"unknown board '{name}'; supported: {', '.join(BOARDS)}") from None
