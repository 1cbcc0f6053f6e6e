"""Bad model folders and cards fail with the file and the reason, through the API and the CLI."""

import json
import shutil

import pytest

from edgefpga.models.card import ModelCardError, load_card
from edgefpga.models.evaluate import evaluate
from edgefpga.cli import main


@pytest.fixture
def model_copy(zoo_model, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(zoo_model, folder)
    return folder


def test_missing_folder(tmp_path):
    with pytest.raises(ModelCardError, match="does not exist"):
        load_card(tmp_path / "nope")


def test_missing_card(model_copy):
    (model_copy / "card.json").unlink()
    with pytest.raises(ModelCardError, match="card.json"):
        load_card(model_copy)


def test_card_with_missing_keys_names_them(model_copy):
    card = json.loads((model_copy / "card.json").read_text())
    del card["macs"], card["input"]["std"]
    (model_copy / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelCardError, match=r"card.json: missing key\(s\) \['macs'\]"):
        load_card(model_copy)


def test_card_not_json(model_copy):
    (model_copy / "card.json").write_text("{not json")
    with pytest.raises(ModelCardError, match="not valid JSON"):
        load_card(model_copy)


def test_corrupt_onnx_is_named(model_copy):
    (model_copy / "model.onnx").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelCardError, match="model.onnx: ONNX Runtime cannot load it"):
        evaluate(model_copy)


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "model.onnx").unlink(), "model file missing"),
    (lambda f: (f / "card.json").write_text("[]"), "expected a JSON object"),
    (lambda f: (f / "model.onnx").write_bytes(b"junk"), "cannot load"),
])
def test_cli_eval_exits_nonzero_with_message(model_copy, capsys, damage, message):
    damage(model_copy)
    assert main(["eval", str(model_copy), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and str(model_copy) in err


def test_cli_eval_prints_report(zoo_model, capsys, tmp_path):
    png = tmp_path / "cm.png"
    assert main(["eval", str(zoo_model), "--quiet", "--confusion-png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "balanced accuracy" in out and "confusion matrix" in out and "note:" not in out
    assert png.stat().st_size > 1000
