"""The Engine on real images: the onnx backend here (fast), the others in test_backends_sim.py."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import edgefpga.runtime as rt
from edgefpga.models.card import ModelCardError
from edgefpga.models.evaluate import predict_scores
from edgefpga.models.card import load_card
from edgefpga.models.preprocess import ImageError
from edgefpga.runtime.backends import BackendUnavailable
from edgefpga.runtime.backends.pynq import PynqBackend, pack_frames
from edgefpga.runtime.source import ModelRef


@pytest.fixture(scope="module")
def cells(elpv_data):
    from edgefpga.models import elpv

    idx = elpv.subset("test", elpv_data)[:12]
    return list(elpv_data.images[idx]), elpv_data.labels[idx]


def test_onnx_engine_gives_the_float_models_scores(zoo_model, cells):
    images, _ = cells
    with rt.open("elpv_defect", backend="onnx") as engine:
        results = engine.infer(images)
    expected = predict_scores(load_card(zoo_model), np.array(images))
    assert np.allclose([r.scores for r in results], expected, atol=1e-5)
    first = results[0]
    assert first.backend == "onnx" and first.model_id.startswith("elpv_defect@")
    assert first.classes == ["functional", "defective"] and first.batch_size == len(images)
    assert first.label == first.classes[int(np.argmax(first.scores))]
    assert abs(sum(first.probabilities) - 1) < 1e-9 and first.score == pytest.approx(first.probabilities[1])
    assert first.defective == (first.score >= 0.5) and first.latency_ms > 0


def test_any_size_and_color_go_through_the_cards_preprocessing(cells):
    image = cells[0][0]
    bgr = np.repeat(np.asarray(image)[:, :, None], 3, axis=2)
    with rt.open("elpv_defect", backend="onnx") as engine:
        gray, color, small = engine.infer([image, bgr, image[::2, ::2]])
    assert gray.scores == pytest.approx(color.scores)  # gray -> BGR -> gray is lossless
    assert small.label in engine.classes


def test_threshold_decides_defective(cells):
    with rt.open("elpv_defect", backend="onnx", defect_threshold=1.0) as strict:
        assert not any(r.defective for r in strict.infer(cells[0]))
    with rt.open("elpv_defect", backend="onnx", defect_threshold=0.0) as lax:
        assert all(r.defective for r in lax.infer(cells[0]))


def test_stream_batches_and_keeps_order(cells):
    images, _ = cells
    with rt.open("elpv_defect", backend="onnx") as engine:
        streamed = list(engine.stream(iter(images), batch_size=5))
        whole = engine.infer(images)
    assert [r.scores for r in streamed] == [r.scores for r in whole]
    assert [r.batch_size for r in streamed] == [5] * 10 + [2] * 2


def test_a_bad_image_names_it_and_the_engine_stays_usable(cells):
    images, _ = cells
    with rt.open("elpv_defect", backend="onnx") as engine:
        with pytest.raises(ImageError, match="image 1: expected 8-bit pixels"):
            engine.infer([images[0], images[1].astype(np.float32)])
        with pytest.raises(ImageError, match="image 0: expected a gray"):
            engine.infer([np.zeros((4, 4, 2), np.uint8)])
        with pytest.raises(ImageError, match="no such image file"):
            engine.infer("does/not/exist.png")
        assert len(engine.infer(images[:2])) == 2


def test_auto_without_board_says_why_it_chose(zoo_model):
    with rt.open(zoo_model) as engine:
        assert engine.backend_name == "onnx"  # a model folder: no build, so no emulator or RTL
        assert "no board" in engine.chosen_because and "rtl: no build folder" in engine.chosen_because


def test_unknown_backend_and_missing_model_are_clear(tmp_path):
    with pytest.raises(BackendUnavailable, match="unknown backend 'fpga'.*pynq, rtl, emulator, onnx"):
        rt.open("elpv_defect", backend="fpga")
    with pytest.raises(ModelCardError, match="does not exist"):
        rt.open(tmp_path / "nothing")
    with pytest.raises(ModelCardError, match="neither a build folder"):
        rt.open(tmp_path)


def test_backends_that_need_a_build_say_how_to_make_one(zoo_model):
    for name in ("rtl", "emulator"):
        with pytest.raises(ModelCardError, match="needs a build folder: run `edgefpga convert"):
            rt.open(zoo_model, backend=name)


def test_pynq_without_a_board_is_refused_with_the_reason():
    reason = PynqBackend.unavailable(ModelRef.resolve("elpv_defect"))
    assert reason is not None and reason.startswith("pynq backend:")


def test_a_corrupt_onnx_file_is_named(tmp_path, zoo_model):
    folder = tmp_path / "broken"
    shutil.copytree(zoo_model, folder)
    (folder / "model.onnx").write_bytes(b"not onnx")
    with pytest.raises(BackendUnavailable, match="model.onnx: ONNX Runtime cannot load it"):
        rt.open(folder, backend="onnx")


def test_pack_frames_is_the_bridges_word_layout():
    pixels = np.arange(2 * 1 * 3 * 3, dtype=np.uint8).reshape(2, 1, 3, 3)  # 9 pixels: 3 words, 3 pad bytes
    words = pack_frames(pixels, frame_words=3)
    assert words.dtype == np.uint32 and words.shape == (6,)
    assert words[0] == 0x03020100 and words[2] == 0x00000008  # little-endian, pad bytes zero
    assert words[3] == 0x0C0B0A09  # the second frame starts on a word boundary
    rgb = np.arange(12, dtype=np.uint8).reshape(1, 3, 2, 2)  # channels interleaved per pixel (NHWC)
    assert pack_frames(rgb, 3)[0] == int.from_bytes(bytes([0, 4, 8, 1]), "little")


def test_result_serializes(cells):
    with rt.open("elpv_defect", backend="onnx") as engine:
        result = engine.infer(cells[0][0])[0]
    assert json.loads(json.dumps(result.to_dict()))["label"] == result.label


def test_pynq_backend_names_a_missing_overlay_or_hardware_handoff(tmp_path):
    from edgefpga.sim import pynq_sim

    model = ModelRef.resolve("elpv_defect")
    with pytest.raises(BackendUnavailable, match="overlay.json: missing"):
        PynqBackend(model, pynq_module=pynq_sim, overlay_dir=tmp_path)
    (tmp_path / "overlay.json").write_text(json.dumps({"bitstream": "elpv_defect.bit", "dma": "axi_dma_0"}))
    (tmp_path / "elpv_defect.bit").write_bytes(b"")
    with pytest.raises(BackendUnavailable, match=r"elpv_defect.hwh: no hardware handoff beside the bitstream"):
        PynqBackend(model, pynq_module=pynq_sim, overlay_dir=tmp_path)
