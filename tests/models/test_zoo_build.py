"""`edgefpga train elpv` end to end on a tiny budget: every artifact written, nothing half-done."""

import json

import pytest

from edgefpga.models.card import load_card
from edgefpga.models.evaluate import evaluate
from edgefpga.cli import main

pytestmark = pytest.mark.slow  # real training runs (a few epochs each)


def test_train_command_writes_a_complete_model_folder(tmp_path, capsys):
    out = tmp_path / "zoo" / "tiny"
    args = ["train", "elpv", "--out", str(out), "--epochs", "2", "--limit", "96", "--size", "32",
            "--widths", "4", "8", "8", "--threads", "2"]
    assert main(args) == 0
    assert "test accuracy" in capsys.readouterr().out
    card = load_card(out)
    assert card.name == "tiny" and card.raw["training"]["config"]["epochs"] == 2
    assert card.raw["onnx"]["max_abs_diff_vs_pytorch"] < 1e-4
    for name in ("model.onnx", "card.json", "history.json", "confusion_test.png", "training_curves.png"):
        assert (out / name).is_file(), name
    assert len(json.loads((out / "history.json").read_text())) == 2
    metrics = evaluate(out)
    assert metrics["accuracy"] == card.test_metrics["accuracy"]
    assert [p.name for p in out.parent.iterdir()] == ["tiny"]  # no staging folder left

    again = tmp_path / "zoo" / "again"
    assert main(["train", "elpv", "--like", str(out), "--out", str(again), "--epochs", "1", "--teacher", str(out)]) == 0
    copied = load_card(again).raw
    assert copied["architecture"] == card.raw["architecture"]
    assert copied["training"]["config"] == card.raw["training"]["config"] | {"epochs": 1, "teachers": [str(out)]}
    assert copied["training"]["teachers"] == [{"name": "tiny", "model_sha256": sha256(out / "model.onnx")}]

    # a teacher of another size is resampled to it, another normalization mapped onto it
    # (models/teacher.py); one that reads other images (colour where the student's are gray) would
    # see other numbers than it was trained on: refused before anything is written
    import shutil

    other_color = tmp_path / "zoo" / "other_color"
    shutil.copytree(out, other_color)
    raw = json.loads((other_color / "card.json").read_text())
    (other_color / "card.json").write_text(json.dumps(raw | {"input": raw["input"] | {"color": "bgr",
                                                                                       "shape": [1, 3, 32, 32]}}))
    wrong = tmp_path / "zoo" / "wrong"
    assert main(["train", "elpv", "--like", str(out), "--out", str(wrong), "--teacher", str(other_color)]) == 2
    assert "teacher input" in capsys.readouterr().err and not wrong.exists()


def sha256(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_oversized_architecture_fails_cleanly(tmp_path, capsys):
    out = tmp_path / "zoo" / "big"
    args = ["train", "elpv", "--out", str(out), "--epochs", "1", "--size", "128", "--widths", "64", "64", "64"]
    assert main(args) == 2
    assert "FPGA budget" in capsys.readouterr().err
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_unknown_dataset(tmp_path, capsys):
    assert main(["train", "mnist", "--out", str(tmp_path / "m")]) == 2
    assert "unknown dataset 'mnist'" in capsys.readouterr().err


def test_like_a_card_without_training_record(zoo_model, tmp_path, capsys):
    import shutil

    folder = tmp_path / "foreign"
    shutil.copytree(zoo_model, folder)
    card = json.loads((folder / "card.json").read_text())
    del card["training"]
    (folder / "card.json").write_text(json.dumps(card))
    assert main(["train", "elpv", "--like", str(folder), "--out", str(tmp_path / "x")]) == 2
    assert "no training record" in capsys.readouterr().err
