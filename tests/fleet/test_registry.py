"""The model registry on real MLflow (a temporary SQLite store, no server): two versions of the
shipped model with build folders whose verify.json passed, promotion, rollback, and the builds
and models it must refuse."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("mlflow", reason="the fleet extra (pip install 'edgefpga[fleet]')")

from edgefpga.cli import main  # noqa: E402
from edgefpga.fleet.registry import ModelRegistry, RegistryError  # noqa: E402
from edgefpga.hw.integrity import check_integrity, write_fingerprints  # noqa: E402

pytestmark = pytest.mark.timeout(180)


def passed_verify(n: int = 654) -> dict:
    """verify.json as `edgefpga verify` writes it for a build that passed (DESIGN.md contract 4)."""
    return {"integrity": {"ok": True, "detail": "as convert wrote them"},
            "emulator": {"n": n, "top1_agreement": 0.9969},
            "rtl": {"n": n, "bit_exact_frames": n, "framing_errors": 0, "latency_cycles": 77827, "ii_cycles": 41667},
            "agreement_bar": 0.995, "failed": []}


def make_build(folder: Path, model_dir: Path, verify: dict | None) -> Path:
    """A build folder with what the registry reads: the source model, a report, RTL sources, the
    fingerprints convert writes, a Verilator cache (never registered) and ``verify`` as verify.json."""
    (folder / "model").mkdir(parents=True)
    shutil.copyfile(model_dir / "model.onnx", folder / "model" / "source.onnx")
    shutil.copyfile(model_dir / "card.json", folder / "model" / "card.json")
    (folder / "rtl" / "src").mkdir(parents=True)
    (folder / "rtl" / "src" / "top.v").write_text("module top(); endmodule\n")
    (folder / "rtl" / "manifest.json").write_text(json.dumps({"top": "top", "sources": ["src/top.v"]}))
    (folder / "report.json").write_text(json.dumps({"model": {"name": "elpv_defect"}}))
    write_fingerprints(folder)
    (folder / "sim" / "obj").mkdir(parents=True)
    (folder / "sim" / "obj" / "Vtop").write_bytes(b"\0" * 4096)
    if verify is not None:
        (folder / "verify.json").write_text(json.dumps(verify))
    return folder


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory) -> Path:
    """An empty MLflow database with its tables made (MLflow's migrations take seconds; a copy is instant)."""
    db = tmp_path_factory.mktemp("empty") / "mlflow.db"
    ModelRegistry(f"sqlite:///{db}").names()
    return db


@pytest.fixture
def db_uri(tmp_path, empty_db) -> str:
    (tmp_path / "reg").mkdir()
    shutil.copyfile(empty_db, tmp_path / "reg" / "mlflow.db")
    return f"sqlite:///{tmp_path / 'reg' / 'mlflow.db'}"


@pytest.fixture
def registry(db_uri) -> ModelRegistry:
    return ModelRegistry(db_uri)


def test_register_promote_rollback(registry, zoo_model, tmp_path):
    card = json.loads((zoo_model / "card.json").read_text())
    v1 = registry.register(zoo_model, make_build(tmp_path / "b1", zoo_model, passed_verify()))
    v2 = registry.register(zoo_model, make_build(tmp_path / "b2", zoo_model, passed_verify()))
    assert (v1.version, v2.version) == (1, 2) and v2.aliases == ["candidate"]
    assert registry.get("elpv_defect", 1).aliases == []  # the candidate is the latest only
    assert v1.verified and v1.build == str((tmp_path / "b1").resolve())
    assert v1.metrics["test_accuracy"] == card["metrics"]["test"]["accuracy"]
    assert v1.metrics["verify_rtl_bit_exact_frames"] == 654

    assert registry.promote(1).aliases == ["champion"]
    assert registry.promote(2).aliases == ["champion"]  # the candidate alias went with the promotion
    assert int(registry.client.get_model_version_by_alias("elpv_defect", "champion").version) == 2
    back = registry.rollback()
    assert back.version == 1 and back.aliases == ["champion"]
    assert registry.get("elpv_defect", 2).tags["rolled_back_at"]
    last = json.loads(registry.client.get_registered_model("elpv_defect").tags["last_rollback"])
    assert (last["from"], last["to"]) == (2, 1)
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback()
    with pytest.raises(RegistryError, match="champion already"):
        registry.promote(1)
    with pytest.raises(RegistryError, match="no version 9"):
        registry.promote(9)
    assert [v.version for v in registry.versions()] == [1, 2]

    # what the registry keeps is the build that passed, without the caches, and it checks out again
    got = registry.download("elpv_defect", "champion", tmp_path / "site")
    assert (got / "model" / "card.json").is_file() and (got / "build" / "verify.json").is_file()
    assert not (got / "build" / "sim").exists()
    assert check_integrity(got / "build")["ok"]


def test_refusals(registry, zoo_model, tmp_path):
    with pytest.raises(RegistryError, match="build folder missing"):
        registry.register(zoo_model, tmp_path / "nowhere")
    with pytest.raises(RegistryError, match="verify.json: missing"):
        registry.register(zoo_model, make_build(tmp_path / "unverified", zoo_model, None))
    failed = passed_verify() | {"failed": [{"check": "rtl_bit_exact", "detail": "653 of 654 frames bit-exact"}]}
    failed["rtl"]["bit_exact_frames"] = 653
    with pytest.raises(RegistryError, match="verify failed.*rtl_bit_exact: 653 of 654"):
        registry.register(zoo_model, make_build(tmp_path / "failed", zoo_model, failed))
    emulator_only = passed_verify() | {"rtl": None}
    with pytest.raises(RegistryError, match="no RTL bit-exact"):
        registry.register(zoo_model, make_build(tmp_path / "emu", zoo_model, emulator_only))
    edited = make_build(tmp_path / "edited", zoo_model, passed_verify())
    (edited / "rtl" / "src" / "top.v").write_text("module top(); wire x; endmodule\n")
    with pytest.raises(RegistryError, match="changed since convert"):
        registry.register(zoo_model, edited)
    other = tmp_path / "other_model"
    shutil.copytree(zoo_model, other)
    (other / "model.onnx").write_bytes((other / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(RegistryError, match="not converted from"):
        registry.register(other, make_build(tmp_path / "b", zoo_model, passed_verify()))
    assert registry.names() == []  # nothing registered by any refusal

    plain = registry.register(zoo_model)  # a model without a build may be registered, never promoted
    assert not plain.verified
    with pytest.raises(RegistryError, match="no verified build"):
        registry.promote(plain.version)


def test_cli(zoo_model, db_uri, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("EDGEFPGA_REGISTRY", db_uri)
    build = make_build(tmp_path / "b1", zoo_model, passed_verify())
    assert main(["models", "register", "elpv_defect", "--build", str(build)]) == 0
    assert main(["models", "register", str(zoo_model), "--build", str(build)]) == 0
    assert main(["models", "promote", "1"]) == 0 and main(["models", "promote", "2"]) == 0
    assert main(["models", "rollback"]) == 0
    out = capsys.readouterr().out
    assert "rolled back: champion now elpv_defect v1" in out
    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "v1" in lines[0] and "champion" in lines[0] and "test accuracy 0.8670" in lines[0]
    assert main(["models", "register", "elpv_defect", "--build", str(tmp_path / "gone")]) == 2
    assert "edgefpga models: error:" in capsys.readouterr().err


def test_a_missing_mlflow_names_the_extra(zoo_model, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ModuleNotFoundError
    monkeypatch.setenv("EDGEFPGA_REGISTRY", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert main(["models", "list"]) == 2
    assert "pip install 'edgefpga[fleet]'" in capsys.readouterr().err
