"""The PYNQ overlay around the open RTL: an AXI-DMA wrapper and the hardware description PYNQ reads.

On a Zynq board the accelerator sits between the two streams of a Xilinx AXI DMA (PS7 -> DMA ->
accelerator -> DMA -> PS7), as in hls4ml's and FINN's PYNQ designs. This step writes, into
``<build>/overlay/``:

- ``src/<top>_axi.v`` (generated) and ``src/ef_dma_bridge.v``: the core behind 32-bit DMA
  streams, 4 pixels per input word and one sign-extended score per output word, so that one
  DMA transfer each way carries a whole batch of frames;
- ``<name>.hwh``: a hardware handoff in Vivado's layout (PS7 or PS8 + ``axi_dma_0`` + the wrapper) that
  the simulated PS-PL (``edgefpga.sim.pynq_sim``) and PYNQ's metadata parser read; on a board,
  Vivado's own .hwh beside the bitstream takes its place;
- ``overlay.json``: the stream format the runtime's ``pynq`` backend packs and unpacks.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

OVERLAY_DIR = "overlay"
OVERLAY_FILE = "overlay.json"
PIXELS_PER_WORD = 4
WORD_BYTES = 4
DMA_INSTANCE = "axi_dma_0"
DMA_LENGTH_WIDTH = 26  # bits of the DMA's transfer-length register: transfers up to 64 MiB
BRIDGE_MODULE = "ef_dma_bridge"


def frame_words(pixels: int) -> int:
    """32-bit words per frame on the MM2S stream: frames start on a word boundary."""
    return -(-pixels // PIXELS_PER_WORD)


# The two processing systems, as Vivado names their IP, ports and buses and where PYNQ's designs
# map the DMA's registers (PS7: the GP0 window; PS8: HPM0_FPD)
PROCESSING_SYSTEMS = {
    "ps7": {"label": "PS7 (Zynq-7000)", "arch": "zynq", "modtype": "processing_system7", "version": "5.5",
            "instance": "processing_system7_0", "clock": "FCLK_CLK0", "master": "M_AXI_GP0", "master_width": 32,
            "slave": "S_AXI_HP0", "clock_parameter": "PCW_FPGA0_PERIPHERAL_FREQMHZ",
            "hp_parameter": "PCW_USE_S_AXI_HP0", "dma_base": 0x40400000},
    "ps8": {"label": "PS8 (Zynq UltraScale+)", "arch": "zynquplus", "modtype": "zynq_ultra_ps_e", "version": "3.5",
            "instance": "zynq_ultra_ps_e_0", "clock": "pl_clk0", "master": "M_AXI_HPM0_FPD", "master_width": 128,
            "slave": "S_AXI_HP0_FPD", "clock_parameter": "PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ",
            "hp_parameter": "PSU__USE__S_AXI_GP2", "dma_base": 0xA0000000},
}


def processing_system(part: str) -> dict:
    return PROCESSING_SYSTEMS["ps7" if part.startswith("xc7z") else "ps8"]


def split_part(part: str) -> tuple[str, str, str]:
    """(device, package, speed grade) of a part: xc7z020clg400-1 -> (7z020, clg400, -1),
    xczu7ev-ffvc1156-2-e -> (zu7ev, ffvc1156, -2-e), xck26-sfvc784-2LV-c -> (k26, sfvc784, -2LV-c)."""
    name = part[2:]
    if "-" in name and not name.startswith("7z"):
        device, package, speed = name.split("-", 2)
        return device, package, f"-{speed}"
    device, _, speed = name.partition("-")
    return device[:5], device[5:], f"-{speed}"


def write_overlay(build_dir: Path, board: dict, version: str) -> dict:
    """Write ``<build>/overlay`` from the build's RTL manifest for ``board`` (``Board.to_dict()``);
    return overlay.json."""
    import jinja2

    from .onnx_check import ConversionError
    from .rtlgen import RTL_DIR

    build_dir = Path(build_dir)
    manifest_path = build_dir / "rtl" / "manifest.json"
    if not manifest_path.is_file():
        raise ConversionError(f"{build_dir}: no RTL (rtl/manifest.json) to wrap for PYNQ")
    manifest = json.loads(manifest_path.read_text())
    out = build_dir / OVERLAY_DIR
    (out / "src").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(RTL_DIR / f"{BRIDGE_MODULE}.v", out / "src" / f"{BRIDGE_MODULE}.v")

    inp, outp = manifest["input"], manifest["output"]
    frame = inp["height"] * inp["width"] * inp["channels"]
    wrapper = f"{manifest['top']}_axi"
    name = manifest["top"].removesuffix("_top")
    ps = processing_system(board["part"])
    values = {"wrapper": wrapper, "top": manifest["top"], "version": version, "frame": frame,
              "frame_words": frame_words(frame), "outputs": outp["outputs"], "score_bits": outp["tdata_bits"],
              "dma": DMA_INSTANCE, "instance": f"{wrapper}_0", "name": name, "clock_mhz": f"{board['clock_mhz']:g}",
              "clock_hz": int(board["clock_mhz"] * 1e6), "length_width": DMA_LENGTH_WIDTH,
              "dma_base": f"0x{ps['dma_base']:08X}", "dma_high": f"0x{ps['dma_base'] + 0xFFFF:08X}", "ps": ps,
              "timestamp": time.strftime("%a %b %d %H:%M:%S %Y")}
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(RTL_DIR), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    (out / "src" / f"{wrapper}.v").write_text(env.get_template("axi_wrapper.v.j2").render(**values))
    device, package, speed = split_part(board["part"])
    hwh = f"{name}.hwh"
    (out / hwh).write_text(env.get_template("overlay.hwh.j2").render(
        **values, device=device, package=package, speedgrade=speed))
    rtl = Path("..") / "rtl"
    overlay = {
        "wrapper": wrapper, "core": manifest["top"], "hwh": hwh, "bitstream": f"{name}.bit",
        "sources": [f"src/{BRIDGE_MODULE}.v", *(str(rtl / s) for s in manifest["sources"]), f"src/{wrapper}.v"],
        "includes": [str(rtl / inc) for inc in manifest.get("includes", [])], "mem_dir": str(rtl / "src"),
        "dma": DMA_INSTANCE, "instance": values["instance"], "clock_mhz": board["clock_mhz"],
        "processing_system": "ps7" if ps["arch"] == "zynq" else "ps8", "part": board["part"],
        "input": {"word_bits": 32, "pixels_per_word": PIXELS_PER_WORD, "frame_pixels": frame,
                  "frame_words": frame_words(frame), "height": inp["height"], "width": inp["width"],
                  "channels": inp["channels"]},
        "output": {"word_bits": 32, "scores": outp["outputs"], "frac": outp["frac"], "signed": True},
        "max_transfer_bytes": (1 << DMA_LENGTH_WIDTH) - 1,
    }
    (out / OVERLAY_FILE).write_text(json.dumps(overlay, indent=2) + "\n")
    return overlay


class OverlayMissing(FileNotFoundError):
    """No overlay.json where one is needed; the message names the file and what to run."""


def load_overlay(folder: Path) -> dict:
    """Read ``overlay.json`` from an overlay folder. Light on imports: the board reads it too."""
    path = Path(folder) / OVERLAY_FILE
    if not path.is_file():
        raise OverlayMissing(f"{path}: missing (run `edgefpga convert` again to write the PYNQ overlay files)")
    return json.loads(path.read_text())


BIT_MAGIC = bytes.fromhex("00090ff00ff00ff00ff0000001")  # the fixed start of every Xilinx .bit header


def read_bit_header(path: Path) -> dict:
    """The header of a Xilinx ``.bit`` file (design, part, date, time) and whether the
    configuration data after it is all there; ValueError naming the problem otherwise."""
    data = Path(path).read_bytes()
    if not data.startswith(BIT_MAGIC):
        raise ValueError("not a Xilinx bitstream (no .bit header)")
    fields, at = {}, len(BIT_MAGIC)
    for key in "abcd":
        if data[at:at + 1] != key.encode():
            raise ValueError(f"bitstream header field '{key}' missing (truncated or damaged)")
        length = int.from_bytes(data[at + 1:at + 3], "big")
        fields[key] = data[at + 3:at + 3 + length].rstrip(b"\0").decode("ascii", "replace")
        at += 3 + length
    if data[at:at + 1] != b"e":
        raise ValueError("bitstream header has no data length (truncated)")
    expected = int.from_bytes(data[at + 1:at + 5], "big")
    present = len(data) - at - 5
    if present < expected:
        raise ValueError(f"truncated: {present:,} of {expected:,} bytes of configuration data")
    return {"design": fields["a"], "part": fields["b"], "date": fields["c"], "time": fields["d"], "bytes": expected}


def bitstream_problem(path: Path, part: str | None = None) -> str | None:
    """Why ``path`` is not a bitstream this board can load (missing, damaged, truncated, for
    another part, no .hwh beside it), or None. Cheap: read before PYNQ is asked to load it."""
    path = Path(path)
    if not path.is_file():
        return f"{path}: no bitstream (build one with `edgefpga build` on a machine with Vivado and copy it here)"
    try:
        header = read_bit_header(path)
    except ValueError as exc:
        return f"{path}: {exc}"
    if part and not part.startswith(header["part"]) and header["part"] not in part:
        return f"{path}: built for {header['part']}, this build is for {part}"
    return handoff_problem(path)


def handoff_problem(bitstream: Path) -> str | None:
    """PYNQ loads ``<name>.bit`` with ``<name>.hwh`` beside it: None when it is there."""
    hwh = Path(bitstream).with_suffix(".hwh")
    if not hwh.is_file():
        return (f"{hwh}: no hardware handoff beside the bitstream (copy the .bit and .hwh that `edgefpga build` "
                "wrote, with the same name)")
    return None
