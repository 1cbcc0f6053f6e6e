"""The PYNQ overlay around the open RTL: an AXI-DMA wrapper and the hardware description PYNQ reads.

On a Zynq board the accelerator sits between the two streams of a Xilinx AXI DMA (PS7 -> DMA ->
accelerator -> DMA -> PS7), as in hls4ml's and FINN's PYNQ designs. This step writes, into
``<build>/overlay/``:

- ``src/<top>_axi.v`` (generated) and ``src/ef_dma_bridge.v``: the core behind 32-bit DMA
  streams, 4 pixels per input word and one sign-extended score per output word, so that one
  DMA transfer each way carries a whole batch of frames;
- ``<name>.hwh``: a hardware handoff in Vivado's layout (PS7 + ``axi_dma_0`` + the wrapper) that
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
DMA_BASE = 0x40400000
DMA_LENGTH_WIDTH = 26  # bits of the DMA's transfer-length register: transfers up to 64 MiB
BRIDGE_MODULE = "ef_dma_bridge"


def frame_words(pixels: int) -> int:
    """32-bit words per frame on the MM2S stream: frames start on a word boundary."""
    return -(-pixels // PIXELS_PER_WORD)


def zynq7000_part(part: str) -> tuple[str, str, str] | None:
    """(device, package, speed grade) of a Zynq-7000 part such as xc7z020clg400-1, else None."""
    if not part.startswith("xc7z"):
        return None
    device, _, speed = part[2:].partition("-")
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
    values = {"wrapper": wrapper, "top": manifest["top"], "version": version, "frame": frame,
              "frame_words": frame_words(frame), "outputs": outp["outputs"], "score_bits": outp["tdata_bits"],
              "dma": DMA_INSTANCE, "instance": f"{wrapper}_0", "name": name, "clock_mhz": f"{board['clock_mhz']:g}",
              "clock_hz": int(board["clock_mhz"] * 1e6), "length_width": DMA_LENGTH_WIDTH,
              "dma_base": f"0x{DMA_BASE:08X}", "dma_high": f"0x{DMA_BASE + 0xFFFF:08X}",
              "timestamp": time.strftime("%a %b %d %H:%M:%S %Y")}
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(RTL_DIR), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    (out / "src" / f"{wrapper}.v").write_text(env.get_template("axi_wrapper.v.j2").render(**values))
    zynq = zynq7000_part(board["part"])
    hwh = None
    if zynq:
        device, package, speed = zynq
        hwh = f"{name}.hwh"
        (out / hwh).write_text(env.get_template("overlay.hwh.j2").render(
            **values, device=device, package=package, speedgrade=speed))
    rtl = Path("..") / "rtl"
    overlay = {
        "wrapper": wrapper, "core": manifest["top"], "hwh": hwh, "bitstream": f"{name}.bit",
        "sources": [f"src/{BRIDGE_MODULE}.v", *(str(rtl / s) for s in manifest["sources"]), f"src/{wrapper}.v"],
        "includes": [str(rtl / inc) for inc in manifest.get("includes", [])], "mem_dir": str(rtl / "src"),
        "dma": DMA_INSTANCE, "instance": values["instance"], "clock_mhz": board["clock_mhz"],
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
