"""Module images composed from real ELPV cells, their target maps, and the detector's decoding."""

from __future__ import annotations

import numpy as np
import pytest

from edgefpga.models import elpv, modules
from edgefpga.models.detect import decode, detection_metrics, match, stream_order, unstream


@pytest.fixture(scope="module")
def held_out(elpv_data) -> list[modules.Module]:
    return modules.modules("test", 6, seed=3, data=elpv_data)


def test_same_seed_same_modules_and_cells_from_the_right_split(elpv_data, held_out):
    again = modules.modules("test", 6, seed=3, data=elpv_data)
    assert all(np.array_equal(a.image, b.image) and np.array_equal(a.cells, b.cells) for a, b in zip(held_out, again))
    other = modules.modules("test", 6, seed=4, data=elpv_data)
    assert not all(np.array_equal(a.cells, b.cells) for a, b in zip(held_out, other))
    test_cells = set(elpv.subset("test", elpv_data).tolist())
    assert all(set(m.cells.tolist()) <= test_cells for m in held_out)
    fit = modules.modules("fit", 3, seed=3, data=elpv_data)
    assert not any(set(m.cells.tolist()) & test_cells for m in fit)  # a held-out module shows no training cell


def test_the_grid_is_where_the_centres_say(elpv_data, held_out):
    """Each cell centre lies on the ELPV cell it names (the composed pixels are that cell, resized,
    up to its gain), between cells are dark gaps, and the defective flags are those cells' labels."""
    import cv2

    for m in held_out:
        assert m.centres.shape == (m.rows * m.cols, 2)
        assert np.array_equal(m.defective, elpv_data.labels[m.cells].astype(bool))
        for (x, y), index in zip(m.centres, m.cells):
            x0, y0 = int(x - (m.cell - 1) / 2), int(y - (m.cell - 1) / 2)
            patch = m.image[y0:y0 + m.cell, x0:x0 + m.cell].astype(np.float64)
            cell = cv2.resize(elpv_data.images[index], (m.cell, m.cell), interpolation=cv2.INTER_AREA)
            assert np.corrcoef(patch.ravel(), cell.astype(np.float64).ravel())[0, 1] > 0.99
        if m.cols > 1:  # the column between the first two cells is a gap
            gap_x = int(m.centres[0, 0] + m.cell / 2 + 1)
            assert m.image[int(m.centres[0, 1]), gap_x] < 12


def test_target_map_marks_the_defective_centres_and_nothing_else(held_out):
    size, stride = 160, 8
    for m in held_out:
        labels = modules.target_map(m, (size, size), stride)
        sy, sx = size / m.image.shape[0], size / m.image.shape[1]
        for x, y in m.defect_centres:
            assert labels[int((y + 0.5) * sy // stride), int((x + 0.5) * sx // stride)] == 1
        for r, c in np.argwhere(labels == 1):  # every marked output cell sits near a defective centre
            cx, cy = (c + 0.5) * stride / sx, (r + 0.5) * stride / sy
            assert np.abs(m.defect_centres - [cx, cy]).max(axis=1).min() <= m.cell / 2
        if not m.defective.any():
            assert labels.sum() == 0


def test_decode_finds_blobs_at_their_centres_in_image_pixels():
    classes = ["background", "defective"]
    scores = np.zeros((2, 10, 10))
    scores[0] = 2.0
    scores[1, 2:4, 2:4] = 5.0  # a 2x2 blob centred between cells 2 and 3: (3.0 * stride) model pixels
    scores[1, 7, 8] = 4.0
    found = decode(scores, classes, stride=8, image_size=(160, 320), threshold=0.5)
    assert len(found) == 2 and found[0].score > found[1].score
    assert found[0].x == pytest.approx(3.0 * 8 * 4) and found[0].y == pytest.approx(3.0 * 8 * 2)
    assert found[1].x == pytest.approx(8.5 * 8 * 4) and found[1].y == pytest.approx(7.5 * 8 * 2)
    assert decode(scores, classes, 8, (160, 320), threshold=0.999) == []
    grid = unstream(stream_order(scores[None])[0], 2, (10, 10))
    assert np.array_equal(grid, scores)  # the accelerator's order and back


def test_match_counts_each_defective_cell_once_within_half_a_cell():
    truths = np.array([[50.0, 50.0], [150.0, 50.0]])
    assert match([(60.0, 45.0), (55.0, 50.0), (150.0, 99.0)], truths, cell=100) == (2, 1, 0)
    assert match([(101.0, 50.0)], truths[:1], cell=100) == (0, 1, 1)
    m = detection_metrics([(2, 1, 0), (0, 1, 1)])
    assert (m["precision"], m["recall"]) == (0.5, round(2 / 3, 4))


@pytest.mark.timeout(300)
def test_train_elpv_modules_writes_a_detector_card(tmp_path):
    """`edgefpga train elpv-modules` through the one pipeline (16 fit modules, one epoch): a card
    that says what the map is and how well its detections do on the held-out modules."""
    import json

    from edgefpga.cli import main

    out = tmp_path / "detector"
    assert main(["train", "elpv-modules", "--out", str(out), "--epochs", "1", "--limit", "16", "--threads", "1"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["task"] == "detect" and card["classes"] == modules.CLASSES
    assert card["output"]["kind"] == "map" and card["output"]["stride"] == 8
    assert card["output"]["threshold"] in modules.THRESHOLDS
    det = card["metrics"]["detection"]
    assert det["images"] == 200 and det["threshold"] == card["output"]["threshold"]
    assert det["true_positives"] + det["false_negatives"] == sum(m.defective.sum() for m in modules.select("modules:test:200"))
    assert card["verification"] == "modules:test:200:0" and card["architecture"]["head"] == "map"
