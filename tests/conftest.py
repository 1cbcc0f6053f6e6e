"""Shared fixtures: the real ELPV data (from the installed package), the shipped model, a second
foreign-style CNN with real (false-color ELPV) images, and converted build folders shared by the
slow hardware tests (tests/hw, tests/sim)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# OpenMP threads (torch's) sleep while they wait instead of spinning, in this process and the
# processes it starts: two test workers on two cores, each training with two threads, otherwise
# spin against each other (a 2-epoch training test: 84 s of CPU spinning on a busy machine, 8 s
# passive). Read when the OpenMP library loads, so before anything imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest
from foreign_cnn import CLASSES, build_foreign_cnn, false_color

ROOT = Path(__file__).resolve().parent.parent
ZOO_MODEL = ROOT / "models" / "zoo" / "elpv_defect"


# the shared builds by family: each family's tests run on one xdist worker, so each build is made
# once per run, and the two families (minutes of conversion and verification each) run side by side
BUILD_GROUPS = {"elpv_build": "elpv", "elpv_verify": "elpv", "foreign_build": "foreign", "foreign_verify": "foreign",
                "foreign_dir": "foreign"}

# other session fixtures that train: their tests run on one worker, in a group of their own (the QAT
# model's tests once shared test_qonnx.py's group: about 200 s in one block on one worker)
FIXTURE_GROUPS = {"qat_model": "qat"}


CONVERTED_BUILDS = {"elpv_build", "elpv_verify", "foreign_build", "foreign_verify"}


# modules whose module-scoped fixtures train or convert: their tests run on one worker, so the
# fixture is made once per run, not once per worker that happens to get one of them
MODULE_GROUPS = {"test_own_data.py": "own_data", "test_retrain.py": "retrain", "test_detector_map.py": "detector_map",
                 "test_train_folder.py": "train_folder", "test_modules.py": "modules", "test_zoo_model.py": "zoo_model"}


def pytest_itemcollected(item):
    """Under pytest-xdist (--dist loadgroup), every test that uses a shared build runs on the
    worker of that build's family (a test using both families goes with the ELPV one), and the
    tests of a module in MODULE_GROUPS on one worker. Marked as each test is collected: xdist
    reads the groups in its own collection hook, which runs first."""
    fixtures = set(getattr(item, "fixturenames", ()))
    groups = {BUILD_GROUPS[name] for name in fixtures if name in BUILD_GROUPS}
    if groups:
        item.add_marker(pytest.mark.xdist_group("elpv" if "elpv" in groups else "foreign"))
    elif fixtures & FIXTURE_GROUPS.keys():
        item.add_marker(pytest.mark.xdist_group(FIXTURE_GROUPS[min(fixtures & FIXTURE_GROUPS.keys())]))
    elif item.path.name in MODULE_GROUPS:
        item.add_marker(pytest.mark.xdist_group(MODULE_GROUPS[item.path.name]))
    if fixtures & CONVERTED_BUILDS:  # minutes of conversion: never in `make test-fast`
        item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def elpv_data():
    from edgefpga.models import elpv

    return elpv.load()


@pytest.fixture(scope="session")
def qat_model(tmp_path_factory):
    """``edgefpga train elpv --qat W4A4`` on a small net, 32x32, 2 epochs of 256 cells (16 steps
    after Brevitas' 301 statistics passes): a real model folder in about a minute."""
    out = tmp_path_factory.mktemp("qat") / "w4a4"
    args = ["train", "elpv", "--qat", "W4A4", "--out", str(out), "--epochs", "2", "--limit", "256", "--size", "32",
            "--widths", "8", "16", "16", "--threads", "1"]
    from edgefpga.cli import main

    assert main(args) == 0
    return out


@pytest.fixture(scope="session")
def zoo_model() -> Path:
    return ZOO_MODEL

@pytest.fixture(scope="session")
def foreign_dir(tmp_path_factory, elpv_data) -> Path:
    """foreign.onnx plus calib.npz (1000 train cells) and test.npz (the 654 test cells), in BGR."""
    from edgefpga.models import elpv

    folder = tmp_path_factory.mktemp("foreign")
    build_foreign_cnn(folder / "foreign.onnx")
    parts = elpv.split(elpv_data)
    calib = np.random.default_rng(0).choice(parts.train, 1000, replace=False)
    np.savez(folder / "calib.npz", images=false_color(elpv_data.images[calib]))
    np.savez(folder / "test.npz", images=false_color(elpv_data.images[parts.test]))
    return folder


def convert_foreign(folder: Path, out: Path, **overrides) -> dict:
    from edgefpga.hw.convert import ConvertConfig, convert

    cfg = ConvertConfig(calibration=str(folder / "calib.npz"), scale=1 / 255, mean=0.5, std=0.25, classes=CLASSES,
                        progress=False, **overrides)
    return convert(str(folder / "foreign.onnx"), out, cfg, log=lambda _m: None)


@pytest.fixture(scope="session")
def foreign_build(tmp_path_factory, foreign_dir) -> Path:
    out = tmp_path_factory.mktemp("builds") / "foreign"
    convert_foreign(foreign_dir, out, emulator_images=8)  # convert's own emulator check (verify checks again)
    return out


# The tiny builds' input: gray 16x16 ELPV cells, the card's normalization
TINY_SPEC = dict(channels=1, height=16, width=16, color="gray", resize="area", scale=1 / 255, mean=0.5, std=0.25)


def convert_tiny(elpv_data, folder: Path, net: str = "tiny_clip", **overrides) -> dict:
    """A whole generated network in seconds: ``torch_nets`` ``net`` (gray 16x16, exported by
    torch.onnx.export, calibrated on 64 ELPV cells) converted into ``folder/build``, with
    ``folder/calib.npz`` beside it. ``tiny_clip``'s Clip leaves hls4ml out (no emulator compiled);
    ``tiny_relu`` is the smallest build with an emulator."""
    from torch_nets import export_feature_net

    from edgefpga.hw.convert import ConvertConfig, convert
    from edgefpga.models.card import InputSpec
    from edgefpga.models.preprocess import normalize, resize_batch

    folder.mkdir(parents=True, exist_ok=True)
    cells = elpv_data.images[np.random.default_rng(0).choice(len(elpv_data.images), 64, replace=False)]
    np.savez(folder / "calib.npz", images=cells)
    spec = InputSpec(**TINY_SPEC)
    path = export_feature_net(net, normalize(resize_batch(cells, spec), spec), folder / "tiny.onnx")
    cfg = ConvertConfig(calibration=str(folder / "calib.npz"), calibration_images=64, emulator_images=8,
                        progress=False, scale=spec.scale, mean=spec.mean, std=spec.std, **overrides)
    return convert(str(path), folder / "build", cfg, log=lambda _m: None)


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory, elpv_data) -> Path:
    """The tiny Clip net's build: for tests about a build as a whole that need no particular model
    (Yosys, the runtime install), so they need not wait for the ELPV build."""
    folder = tmp_path_factory.mktemp("tiny")
    convert_tiny(elpv_data, folder)
    return folder / "build"


# A developer's shortcut for iterating on a few tests: an existing ELPV build folder of this
# version to copy instead of converting again (never set in CI, where every build is made fresh)
REUSE_ELPV_BUILD = os.environ.get("EDGEFPGA_TEST_REUSE_ELPV_BUILD")


@pytest.fixture(scope="session")
def elpv_build(tmp_path_factory, zoo_model) -> Path:
    from edgefpga.hw.convert import ConvertConfig, convert

    out = tmp_path_factory.mktemp("builds") / "elpv_defect"
    if REUSE_ELPV_BUILD:
        shutil.copytree(REUSE_ELPV_BUILD, out)
        return out
    # the default calibration (1024 train cells: fewer let the search overfit them and miss the bar
    # on the test split); the emulator's own check on 8 of them (verify checks it again)
    convert(str(zoo_model), out, ConvertConfig(emulator_images=8, progress=False), log=lambda _m: None)
    return out


# The shared verify runs: the agreement bar on all held-out images (the integer model), the emulator
# and the RTL bit for bit on this many of them (`edgefpga verify --sample`). `make bench` (board)
# runs the full `edgefpga verify` of the shipped model: every one of the 654 test cells in RTL.
VERIFY_SAMPLE = 16  # RTL frames of the shared verifies (every image still goes through the integer model and the emulator)


@pytest.fixture(scope="session")
def elpv_verify(elpv_build) -> dict:
    """`edgefpga verify --sample 16` on the ELPV build (the bar on all 654 test cells; no Yosys)."""
    from edgefpga.sim.verify import verify

    return verify(elpv_build, progress=False, resources=False, sample=VERIFY_SAMPLE)


@pytest.fixture(scope="session")
def foreign_verify(foreign_build, foreign_dir) -> dict:
    from edgefpga.sim.verify import verify

    return verify(foreign_build, images=str(foreign_dir / "test.npz"), progress=False, resources=False,
                  sample=VERIFY_SAMPLE)
