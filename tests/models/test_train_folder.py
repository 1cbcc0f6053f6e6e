"""`edgefpga train <folder>`: a user's folder of real images (ELPV exported by `edgefpga data
export-elpv`, four classes) through the one pipeline to a card with per-class metrics and an
Engine with many-class results; bad folders refused before any work, naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import edgefpga.runtime as rt
import numpy as np
import pytest
from edgefpga.models import folder
from edgefpga.models.card import load_card
from edgefpga.models.datasets import DatasetError
from edgefpga.models.evaluate import evaluate

from bad_files import BAD, CONVERTED, write_mixed_folder
from edgefpga.cli import main
from edgefpga.models.imagefiles import EXIT_SKIPPED, Skips

ORDER = ["mono_functional", "mono_defective", "poly_functional", "poly_defective"]
DEFECTS = ["mono_defective", "poly_defective"]


@pytest.fixture(scope="module")
def four_bins(tmp_path_factory) -> Path:
    """120 real ELPV cells per {mono, poly} x {functional, defective} bin, as PNG class folders."""
    out = tmp_path_factory.mktemp("data") / "elpv4"
    assert main(["data", "export-elpv", str(out), "--limit", "120"]) == 0
    return out


def write_class(root: Path, name: str, images: list[np.ndarray]) -> None:
    (root / name).mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        cv2.imwrite(str(root / name / f"{i}.png"), image)


def cells(elpv_data, start: int, n: int = 3) -> list[np.ndarray]:
    return list(elpv_data.images[start:start + n])


@pytest.mark.timeout(60)
def test_export_elpv_writes_the_bins_as_png_folders(four_bins):
    assert sorted(p.name for p in four_bins.iterdir() if p.is_dir()) == sorted(ORDER)
    assert json.loads((four_bins / "edgefpga-export.json").read_text())["elpv"]["bins"] == "type-defect"
    assert all(len(list((four_bins / c).glob("elpv_*.png"))) == 120 for c in ORDER)
    assert not [p for p in four_bins.parent.iterdir() if p.name.startswith(".")]  # no staging left


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_train_on_a_folder_of_real_images_end_to_end(four_bins, tmp_path, capsys):
    out = tmp_path / "models" / "elpv4"
    args = ["train", str(four_bins), "--out", str(out), "--classes", *ORDER, "--defect-classes", *DEFECTS,
            "--size", "32", "--widths", "8", "16", "16", "--epochs", "30", "--threads", "1"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "per class (precision/recall)" in printed
    card = load_card(out)
    raw = card.raw
    assert card.classes == ORDER and card.defect_classes == DEFECTS and raw["defect_classes"] == DEFECTS
    split = raw["dataset"]["split"]
    assert split["seed"] == 0 and split["rule"] == "stratified by class"
    assert (split["fit"], split["val"], split["test"]) == (328, 56, 96)  # 24 test + 14 val per class of 120
    assert set(raw["training"]["class_weights"]) == set(ORDER)
    assert isinstance(raw["input"]["mean"], list) and len(raw["input"]["mean"]) == 1  # per channel
    per_class = raw["metrics"]["test"]["per_class"]
    assert list(per_class) == ORDER and all(per_class[c]["support"] == 24 for c in ORDER)
    assert raw["metrics"]["test"]["accuracy"] > 0.5  # four classes: chance is 0.25
    assert raw["training"]["augment"]["flip"] is False  # not asked for
    assert evaluate(out)["accuracy"] == raw["metrics"]["test"]["accuracy"]  # the split is rebuilt from the card
    assert [p.name for p in out.parent.iterdir()] == ["elpv4"]

    files = sorted((four_bins / "poly_defective").glob("*.png"))[:5]
    with rt.open(out, backend="onnx", top_k=3) as engine:
        results = engine.infer(files)
    for r in results:
        assert r.classes == ORDER and r.defect_classes == DEFECTS and r.label in ORDER
        assert len(r.top_k) == 3 and r.top_k[0]["label"] == r.label
        assert [t["probability"] for t in r.top_k] == sorted((t["probability"] for t in r.top_k), reverse=True)
        assert r.score == pytest.approx(r.probabilities[1] + r.probabilities[3])
        assert r.defective == (r.score >= 0.5)
    assert main(["infer", str(four_bins / "poly_defective"), "--model", str(out), "--backend", "onnx",
                 "--quiet"]) == 0
    assert "top-k" in capsys.readouterr().out


@pytest.mark.timeout(60)
def test_own_split_folders_and_stated_conversions(elpv_data, tmp_path):
    root = tmp_path / "own"
    write_class(root / "train", "good", cells(elpv_data, 0, 4))
    write_class(root / "train", "crack", [cv2.resize(c, (200, 120)) for c in cells(elpv_data, 10, 4)])
    write_class(root / "test", "good", [c.astype(np.uint16) * 257 for c in cells(elpv_data, 20, 2)])
    write_class(root / "test", "crack", cells(elpv_data, 30, 2))
    data = folder.training_data(root, classes=["good", "crack"])
    assert data.color == "gray" and data.split.sizes() == {"fit": 6, "val": 2, "test": 4}
    assert "train/test subfolders" in data.card["dataset"]["split"]["rule"]
    notes = " ".join(data.card["dataset"]["conversions"])
    assert "16-bit" in notes and "differ in size" in notes and "INTER_AREA" in notes
    assert np.array_equal(data.images[10], elpv_data.images[20])  # test/good (after train/ and test/crack): top 8 bits


@pytest.mark.timeout(60)
def test_colour_images_give_a_colour_model(elpv_data, tmp_path):
    root = tmp_path / "colour"
    write_class(root, "a", [cv2.merge([c, c // 2, c]) for c in cells(elpv_data, 0)])
    write_class(root, "b", cells(elpv_data, 5))
    data = folder.training_data(root)
    assert data.color == "bgr" and data.channels == 3
    assert any("repeated into three channels" in n for n in data.card["dataset"]["conversions"])


def bad_one_class(root: Path, elpv_data) -> str:
    write_class(root, "only", cells(elpv_data, 0))
    return "found 1 class"


def bad_empty_class(root: Path, elpv_data) -> str:
    write_class(root, "good", cells(elpv_data, 0))
    (root / "crack").mkdir()
    return f"{root / 'crack'}: class folder holds no images"


def bad_unreadable(root: Path, elpv_data) -> str:
    write_class(root, "good", cells(elpv_data, 0))
    write_class(root, "crack", cells(elpv_data, 5))
    (root / "crack" / "broken.png").write_bytes(b"not a png")
    return f"{root / 'crack' / 'broken.png'}: not an image"


def bad_identifier(root: Path, elpv_data) -> str:
    write_class(root, "good", cells(elpv_data, 0))
    write_class(root, "micro crack", cells(elpv_data, 5))
    return "'micro crack' is not a valid identifier"


def bad_too_few(root: Path, elpv_data) -> str:
    write_class(root, "good", cells(elpv_data, 0))
    write_class(root, "crack", cells(elpv_data, 5, 2))
    return "class 'crack' has 2 image(s)"


def bad_csv_missing_file(root: Path, elpv_data) -> str:
    write_class(root, "imgs", cells(elpv_data, 0, 4))
    (root / "labels.csv").write_text("path,label\nimgs/0.png,good\nimgs/1.png,crack\nimgs/9.png,crack\n")
    return "labels.csv:4: 'imgs/9.png' names a missing file"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("make", [bad_one_class, bad_empty_class, bad_unreadable, bad_identifier, bad_too_few,
                                  bad_csv_missing_file])
def test_bad_folders_are_refused_naming_the_file(make, elpv_data, tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    expected = make(root, elpv_data)
    source = root / "labels.csv" if (root / "labels.csv").exists() else root
    out = tmp_path / "models" / "m"
    strict = ["--strict"] if make is bad_unreadable else []  # by default an unreadable file is skipped (below)
    assert main(["train", str(source), "--out", str(out), "--size", "32", "--widths", "4", "8", *strict]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1, err
    assert not out.parent.exists() or list(out.parent.iterdir()) == []  # nothing half-written


@pytest.mark.timeout(60)
def test_folder_options_are_refused_for_elpv_and_csv_orders_classes(tmp_path, capsys, elpv_data):
    assert main(["train", "elpv", "--out", str(tmp_path / "m"), "--classes", "a", "b"]) == 2
    assert "--classes: for a folder or CSV" in capsys.readouterr().err
    root = tmp_path / "csvdata"
    write_class(root, "imgs", cells(elpv_data, 0, 6))
    rows = [f"imgs/{i}.png,{'crack' if i % 2 else 'good'}" for i in range(6)]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")  # no header row
    data = folder.training_data(root / "labels.csv", classes=["good", "crack"])
    assert data.classes == ["good", "crack"] and data.defect_classes == ["crack"]
    assert data.card["dataset"]["kind"] == "csv" and list(data.labels) == [0, 1, 0, 1, 0, 1]
    with pytest.raises(DatasetError, match="do not match the classes found"):
        folder.training_data(root / "labels.csv", classes=["good", "dent"])
    json.dumps(data.card)  # the card's dataset block is plain JSON


def mixed_classes(root: Path, elpv_data) -> list[str]:
    """good/ with four cells and every bad and converted file of tests/bad_files.py; crack/ with
    four cells. Returns the usable files of good/."""
    usable = write_mixed_folder(root / "good", cells(elpv_data, 0, 4))
    write_class(root, "crack", cells(elpv_data, 10, 4))
    return usable


@pytest.mark.timeout(120)
def test_unusable_files_are_skipped_before_the_split_and_recorded(elpv_data, tmp_path):
    root = tmp_path / "data"
    usable = mixed_classes(root, elpv_data)
    skips = Skips(command="test")
    data = folder.training_data(root, skips=skips)
    assert len(data.labels) == len(usable) + 4 == sum(data.split.sizes().values())
    skipped = data.card["dataset"]["skipped"]
    assert sorted(Path(f["file"]).name for f in skipped["files"]) == sorted(BAD)
    assert skipped["counts"] == {reason: 1 for reason in BAD.values()}
    assert any("16-bit" in note for note in data.card["dataset"]["conversions"])
    # the user's own parts are renumbered to the files kept: every test index is a test file
    own = tmp_path / "own"
    write_mixed_folder(own / "test" / "good", cells(elpv_data, 0, 3))
    write_class(own / "test", "crack", cells(elpv_data, 10, 3))
    write_class(own / "train", "good", cells(elpv_data, 20, 4))
    write_class(own / "train", "crack", cells(elpv_data, 30, 4))
    data = folder.training_data(own, skips=Skips(command="test"))
    assert len(data.split.test) == 3 + len(CONVERTED) + 3 and len(data.split.fit) + len(data.split.val) == 8


@pytest.mark.timeout(300)
def test_train_cli_skips_names_counts_and_exits_3(elpv_data, tmp_path, capsys):
    root = tmp_path / "data"
    mixed_classes(root, elpv_data)
    out = tmp_path / "models" / "m"
    args = ["train", str(root), "--out", str(out), "--size", "16", "--widths", "4", "--epochs", "1", "--threads", "1"]
    assert main(args) == EXIT_SKIPPED
    err = capsys.readouterr().err
    assert all(f"skipped {root / 'good' / name}: {reason}" in err for name, reason in BAD.items()), err
    assert f"skipped {len(BAD)} of" in err.strip().splitlines()[-1]
    assert len(load_card(out).raw["dataset"]["skipped"]["files"]) == len(BAD)
