"""The hls4ml side: per-layer configuration from the chosen precisions, the HLS project for a
board, and its C simulation compiled into the bit-accurate emulator.

hls4ml's ONNX frontend reads the channels-last graph; its per-layer configuration keys are the
graph's node names, and every constant input is a layer of its own named ``<node>_param<i>``.
All of them get explicit types: anything left to hls4ml's default becomes ``ap_fixed<16,6>``,
cast by truncation (see docs/dev/hls4ml-emulator-prototype.md).
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from .boards import Board
from .fixed import FixedType
from .precision import Precisions
from .plan import LayerPlan

PROJECT = "myproject"  # hls4ml's top-level name; the board drivers and Tcl scripts expect it


def quiet_hls4ml():
    """hls4ml prints every layer it creates; keep the terminal for our progress bars."""
    return contextlib.redirect_stdout(io.StringIO())


def layer_config(config: dict, node: str) -> dict:
    return config["LayerName"].setdefault(node, {}).setdefault("Precision", {})


def hls4ml_config(cl: ModelWrapper, precisions: Precisions, layers: list[LayerPlan], backend: str) -> dict:
    """hls4ml configuration for the channels-last graph ``cl`` (node names as in the canonical graph)."""
    import hls4ml

    with quiet_hls4ml():
        config = hls4ml.utils.config_from_onnx_model(cl.model, granularity="name", backend=backend,
                                                     default_precision="ap_fixed<16,6>")
    config["Model"]["Strategy"] = "Resource"
    input_t = str(precisions.tensors[cl.graph.input[0].name])
    for name in config["LayerName"]:
        if name == "global_in" or name.startswith("Transpose"):
            layer_config(config, name)["result"] = input_t
    for node in cl.graph.node:
        for name, types in layer_precision(cl, node, precisions).items():
            if types and (name == node.name or name in config["LayerName"]):
                layer_config(config, name).update(types)
    for layer in layers:
        if layer.multipliers and layer.node in config["LayerName"]:
            config["LayerName"][layer.node]["ReuseFactor"] = layer.reuse
    return config


def layer_precision(cl: ModelWrapper, node, precisions: Precisions) -> dict[str, dict[str, str]]:
    """hls4ml layer name -> precision entries for ``node``: its layer kind's ``hls_precision``;
    wiring (Flatten) gets its own types as they are."""
    from .layers import op_kind
    from .layers.base import hls_entries

    kind = op_kind(node.op_type)
    return hls_entries(node, precisions) if kind is None else kind.hls_precision(cl, node, precisions)


def patch_hls_model(hls_model, cl: ModelWrapper, precisions: Precisions) -> None:
    """What hls4ml's conversion decides against the configuration, set right by the kinds that
    meet it (a kind's ``patch_hls_model``: the dense layer's output type)."""
    from .layers import op_kind

    for node in cl.graph.node:
        patch = getattr(op_kind(node.op_type), "patch_hls_model", None)
        if patch is not None:
            patch(hls_model, cl, node, precisions)


def keep_padding_types(hls_model) -> None:
    """hls4ml 1.3 gives the zero-padding layer it inserts before a padded Conv a type of its own
    choosing (seen: ap_fixed<5,3> after an ap_ufixed<4,0> ReLU, dropping two fractional bits);
    padding only adds zeros, so it keeps its input's type."""
    for layer in hls_model.get_layers():
        if layer.class_name.startswith("ZeroPadding"):
            source = layer.get_input_variable().type.precision
            layer.get_output_variable().type.precision = source


def on_the_grid(cl: ModelWrapper, precisions: Precisions) -> ModelWrapper:
    """A copy of ``cl`` whose constants are already rounded to their chosen types. hls4ml writes
    weights as decimal text with as many digits as the type has fractional bits, and none for a
    type with negative fractional bits (``ap_fixed<2,3>`` holds multiples of 2): 1.4 was written
    as "1", then cast to 0 instead of 2. Values on the grid print exactly."""
    copy = ModelWrapper(cl.model.__deepcopy__())
    for name, t in precisions.params.items():
        value = copy.get_initializer(name)
        if value is not None:
            copy.set_initializer(name, t.quantize(value).astype(np.float32))
    return copy


def graph_for_hls4ml(cl: ModelWrapper) -> ModelWrapper:
    """A copy of ``cl`` as hls4ml 1.3 reads it right: each layer kind with a reading quirk to work
    around rewrites its nodes (a kind's ``hls_graph``: the depthwise kernel's order)."""
    from .layers import op_kind

    copy = ModelWrapper(cl.model.__deepcopy__())
    for node in copy.graph.node:
        rewrite = getattr(op_kind(node.op_type), "hls_graph", None)
        if rewrite is not None:
            rewrite(copy, node)
    return copy


def convert(cl: ModelWrapper, precisions: Precisions, layers: list[LayerPlan], board: Board, out_dir: Path,
            output_type: FixedType):
    """Write the hls4ml project for ``board`` into ``out_dir`` and return the hls4ml model."""
    import hls4ml

    cl = graph_for_hls4ml(on_the_grid(cl, precisions))
    config = hls4ml_config(cl, precisions, layers, board.backend)
    kwargs = dict(output_dir=str(out_dir), project_name=PROJECT, backend=board.backend, io_type="io_stream",
                  hls_config=config, part=board.part, clock_period=board.clock_period_ns)
    if board.backend == "VivadoAccelerator":
        kwargs.update(board=board.name, interface="axi_stream", driver="python",
                      input_type="ap_uint<8>",
                      output_type=str(output_type))
    with quiet_hls4ml():
        hls_model = hls4ml.converters.convert_from_onnx_model(cl.model, **kwargs)
        patch_hls_model(hls_model, cl, precisions)
        keep_padding_types(hls_model)
        hls_model.write()
    if board.backend == "VivadoAccelerator":
        fix_axi_types(out_dir, output_type)
    drop_embedded_onnx(out_dir)
    return hls_model


def drop_embedded_onnx(out_dir: Path) -> None:
    """hls4ml pickles the whole ONNX model into hls4ml_config.yml as a python/object tag, which
    its own ``link_existing_project`` cannot read back (and which makes the file megabytes). The
    same graph is in ``model/channels_last.onnx`` of the build folder."""
    path = out_dir / "hls4ml_config.yml"
    kept, skipping = [], False
    for line in path.read_text().splitlines():
        if line.startswith("OnnxModel:"):
            kept.append("OnnxModel: null  # edgefpga: see ../model/channels_last.onnx")
            skipping = True
            continue
        if skipping and line and not line[0].isspace():
            skipping = False
        if not skipping:
            kept.append(line)
    path.write_text("\n".join(kept) + "\n")


def fix_axi_types(out_dir: Path, output_type: FixedType) -> None:
    """hls4ml 1.3.0's VivadoAccelerator writer prints non-float AXI types in its generic spelling
    (``uint<8>``, ``fixed<16,4,RND_CONV,SAT,0>``), which does not compile; write the ap_ types.
    The output word is the network's output type widened to whole bytes (same integer bits, so
    the widening is exact)."""
    header = out_dir / "firmware" / f"{PROJECT}_axi.h"
    width = -(-output_type.width // 8) * 8
    axi_out = FixedType(width, output_type.integer, output_type.signed)
    lines = []
    for line in header.read_text().splitlines():
        if line.startswith("typedef") and line.endswith("T_in;"):
            line = "typedef ap_uint<8> T_in;"
        elif line.startswith("typedef") and line.endswith("T_out;"):
            line = f"typedef {axi_out} T_out;"
        lines.append(line)
    header.write_text("\n".join(lines) + "\n")


def compiler_messages(hls_dir: Path, lines: int = 20) -> str:
    """The last lines g++ prints when building the C simulation (hls4ml's build_lib.sh)."""
    import subprocess

    run = subprocess.run(["bash", "build_lib.sh"], cwd=hls_dir, capture_output=True, text=True)
    return "\n".join((run.stdout + run.stderr).strip().splitlines()[-lines:])


def source_digest(firmware: Path, location: str = "") -> str:
    """sha256 (16 hex digits) of the C++ sources and weights the emulator library is built from
    (and of ``location``, where the library will read its weights)."""
    import hashlib

    digest = hashlib.sha256(location.encode())
    for f in sorted(p for p in firmware.rglob("*") if p.is_file() and p.suffix not in (".so", ".o")):
        digest.update(str(f.relative_to(firmware)).encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


class EmulatorError(RuntimeError):
    """The emulator cannot be built or run; the message names the project folder."""


class Emulator:
    """The compiled C simulation of an hls4ml project: the bit-accurate golden model.

    ``predict`` takes 8-bit pixels (N, C, H, W) exactly as the accelerator's input stream sees
    them and returns the class scores as the accelerator's output stream holds them."""

    def __init__(self, hls_model, input_shape: list[int], hls_dir: Path | None = None):
        self.hls_model = hls_model
        self.input_shape = input_shape
        self.hls_dir = hls_dir

    @classmethod
    def load(cls, hls_dir: Path, input_shape: list[int]) -> "Emulator":
        """Link an existing project folder and compile it (g++, no vendor tool); a library already
        compiled from the same sources, in this folder or in the machine's cache (edgefpga/cache.py),
        is loaded instead (20-70 s saved per load)."""
        import ctypes
        import shutil

        import hls4ml

        from edgefpga.cache import fetch_file, store_file

        hls_dir = Path(hls_dir).resolve()
        # the library reads its weights from this folder's absolute path (hls4ml bakes WEIGHTS_DIR
        # in at compile time): the folder is part of the key, or a copy would read the original's
        sources = source_digest(hls_dir / "firmware", str(hls_dir))
        key = f"{sources}-hls4ml{hls4ml.__version__}"
        cached = hls_dir / "firmware" / f"emulator-{sources}.so"
        if not cached.is_file():
            fetch_file("emulator", key, "emulator.so", cached)
        with quiet_hls4ml():
            model = hls4ml.converters.link_existing_project(str(hls_dir))
            model.config.config["OutputDir"] = str(hls_dir)  # the folder may have moved since convert
            if cached.is_file():
                model._top_function_lib = ctypes.cdll.LoadLibrary(str(cached))
                return cls(model, input_shape, hls_dir)
            try:
                model.compile()
            except Exception as exc:  # hls4ml raises bare Exceptions and swallows g++'s messages
                raise EmulatorError(f"{hls_dir}: the C simulation does not compile:\n{compiler_messages(hls_dir)}") from exc
        built = max((hls_dir / "firmware").glob(f"{PROJECT}-*.so"), key=lambda f: f.stat().st_mtime, default=None)
        if built is not None:
            shutil.copyfile(built, cached)
            store_file("emulator", key, cached, "emulator.so")
        return cls(model, input_shape, hls_dir)

    def predict(self, pixels: np.ndarray, progress: bool = False, workers: int | None = None) -> np.ndarray:
        """Scores for (N, C, H, W) pixels. Many images are split over ``workers`` processes (default:
        one per core): the C simulation keeps static state, so it cannot run in threads."""
        workers = min(workers or os.cpu_count() or 1, len(pixels) // PARALLEL_MIN_IMAGES)
        if workers > 1 and self.hls_dir is not None:
            return self.predict_parallel(pixels, workers, progress)
        return self.predict_here(pixels, progress)

    def predict_here(self, pixels: np.ndarray, progress: bool = False) -> np.ndarray:
        from edgefpga.progress import progress_bar

        nhwc = np.ascontiguousarray(pixels.transpose(0, 2, 3, 1), dtype=np.float32)
        rows = [np.asarray(self.hls_model.predict(np.ascontiguousarray(nhwc[i:i + 1]))).reshape(-1)
                for i in progress_bar(range(len(nhwc)), progress=progress, desc="emulator", unit="img")]
        return np.stack(rows)

    def predict_parallel(self, pixels: np.ndarray, workers: int, progress: bool) -> np.ndarray:
        """Split the images over ``workers`` processes (``python -m edgefpga.hw.hls``), each loading
        the cached library; the first share runs here."""
        import subprocess
        import sys
        import tempfile

        shares = np.array_split(np.arange(len(pixels)), workers)
        with tempfile.TemporaryDirectory(prefix="edgefpga-emulator-") as tmp:
            procs = []
            for k, idx in enumerate(shares[1:], start=1):
                np.save(f"{tmp}/in{k}.npy", pixels[idx])
                procs.append(subprocess.Popen([sys.executable, "-m", "edgefpga.hw.hls", str(self.hls_dir),
                                               ",".join(map(str, self.input_shape)), f"{tmp}/in{k}.npy",
                                               f"{tmp}/out{k}.npy"], stderr=subprocess.PIPE, text=True))
            results = [self.predict_here(pixels[shares[0]], progress)]
            for k, proc in enumerate(procs, start=1):
                _, err = proc.communicate()
                if proc.returncode != 0:
                    raise EmulatorError(f"{self.hls_dir}: an emulator worker failed:\n{err[-2000:]}")
                results.append(np.load(f"{tmp}/out{k}.npy"))
        return np.concatenate(results)


PARALLEL_MIN_IMAGES = 24  # fewer images per worker than this: one process (starting one costs seconds)


def main(argv: list[str]) -> int:
    """A worker of Emulator.predict_parallel: HLS_DIR SHAPE IN.npy OUT.npy."""
    hls_dir, shape, inp, out = argv
    emulator = Emulator.load(Path(hls_dir), [int(v) for v in shape.split(",")])
    np.save(out, emulator.predict_here(np.load(inp)))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
