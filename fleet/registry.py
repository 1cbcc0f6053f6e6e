"""The model registry: every edge model version the line may run, on MLflow's model registry.

One registered model per card name (``elpv_defect``); each version is one MLflow run holding

    model/   the model folder as registered (model.onnx, card.json, ...)
    build/   the build folder that `edgefpga verify` passed, less the caches any machine rebuilds
             (sim/, rtl/yosys/, compiled .so/.o): report.json, fingerprints.json, verify.json,
             model/, hls/, rtl/, overlay/, bitstream/ where `edgefpga build` made one

and the run's metrics are the card's test and validation metrics plus verify's figures. The build
is stored as artifacts, not as a path: a path means something only on the machine that converted,
while a fleet's server must hand another site the very files that passed verify, and that site
can check them again against ``fingerprints.json``. The path it came from is kept as a tag.

Aliases: ``candidate`` is the latest registered version; ``champion`` is what the line should run.
Only a version whose build passed verify bit-exact in RTL can become champion. Each promotion is
appended to the registered model's tag ``champion_history``; ``rollback`` moves ``champion`` back
to the previous entry and records it as a tag on both.

By default the registry is ``registry/`` in the working directory (like ``build/``): an SQLite
file for MLflow's tracking and registry stores and an ``artifacts/`` folder, no server. A fleet
points every site at one MLflow server instead (``--registry http://host:5000`` or the
environment variable ``EDGEFPGA_REGISTRY``); the server then stores the artifacts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from edgefpga.hw.integrity import check_integrity
from edgefpga.models.card import MODEL_FILE, load_card

ENV_URI = "EDGEFPGA_REGISTRY"
DEFAULT_FOLDER = Path("registry")
CHAMPION, CANDIDATE = "champion", "candidate"
HISTORY_TAG = "champion_history"
VERIFY_FILE = "verify.json"  # what sim/verify.py writes into a build folder (DESIGN.md, contract 4)
CACHE_PARTS = ("sim", "rtl/yosys")  # rebuilt by whoever loads the build (Verilator, Yosys)
CACHE_SUFFIXES = (".so", ".o")
METRIC_KEYS = ("accuracy", "balanced_accuracy", "f1_defective", "n")


class RegistryError(Exception):
    """A version that cannot be registered, promoted or found; the message says which and why."""


@dataclass(frozen=True)
class Version:
    """One registered version as the registry holds it."""

    name: str
    version: int
    aliases: list[str]
    metrics: dict[str, float]
    verified: bool
    build: str | None  # the build folder's path where it was registered (the files are artifacts)
    run_id: str
    created: datetime
    tags: dict[str, str]


def default_uri(folder: Path = DEFAULT_FOLDER) -> str:
    return f"sqlite:///{(folder / 'mlflow.db').resolve()}"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- what may be registered ----------------------------------------------------------------------

def checked_build(build: Path, model_dir: Path) -> dict:
    """The build folder's verify.json, when the folder is what the line may run: it exists, verify
    passed with the RTL bit-exact, nothing changed since, and it was converted from these weights.
    Anything else is refused, naming the folder and the reason."""
    build = Path(build)
    if not build.is_dir():
        raise RegistryError(f"{build}: build folder missing")
    path = build / VERIFY_FILE
    if not path.is_file():
        raise RegistryError(f"{path}: missing: the build was never verified (run edgefpga verify {build})")
    try:
        verify = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RegistryError(f"{path}: not valid JSON ({exc})") from exc
    failed = verify.get("failed")
    if failed is None or failed:
        checks = "; ".join(f"{c.get('check')}: {c.get('detail')}" for c in failed or []) or "no 'failed' list"
        raise RegistryError(f"{path}: verify failed ({checks})")
    rtl = verify.get("rtl") or {}
    if not rtl.get("n") or rtl.get("bit_exact_frames") != rtl.get("n"):
        raise RegistryError(f"{path}: no RTL bit-exact on every frame (rtl: {rtl.get('bit_exact_frames')} of "
                            f"{rtl.get('n')}); a version for the line must pass verify without --emulator-only")
    integrity = check_integrity(build)
    if not integrity["ok"]:
        raise RegistryError(f"{build}: changed since convert ({integrity['detail']}): convert and verify it again")
    source = build / "model" / "source.onnx"
    if not source.is_file() or sha256(source) != sha256(model_dir / MODEL_FILE):
        raise RegistryError(f"{build}: not converted from {model_dir / MODEL_FILE} (model/source.onnx differs or "
                            "is missing)")
    return verify


def verify_metrics(verify: dict) -> dict[str, float]:
    """verify's figures worth comparing across versions."""
    emu, rtl = verify.get("emulator", {}), verify.get("rtl", {})
    figures = {"verify_top1_agreement": emu.get("top1_agreement"), "verify_rtl_frames": rtl.get("n"),
               "verify_rtl_bit_exact_frames": rtl.get("bit_exact_frames"),
               "verify_latency_cycles": rtl.get("latency_cycles"), "verify_ii_cycles": rtl.get("ii_cycles")}
    return {k: float(v) for k, v in figures.items() if isinstance(v, (int, float))}


def card_metrics(raw: dict) -> dict[str, float]:
    """The card's test and validation metrics (a reference shape has none)."""
    metrics = raw.get("metrics", {})
    return {f"{part}_{key}": float(metrics[part][key]) for part in ("test", "validation")
            for key in METRIC_KEYS if isinstance(metrics.get(part), dict) and key in metrics[part]}


def federated_tag(card: dict) -> dict[str, str]:
    """A federated model's training at a glance, as a version tag (the whole history is in its
    card, an artifact of the version): strategy, rounds, the round selected, the sites."""
    block = card.get("federated")
    if not block:
        return {}
    sites = sorted(block.get("partition", {}).get("sites", {})) or sorted(
        {s for row in block.get("history", []) for s in row.get("sites_val_accuracy", {})})
    return {"federated": json.dumps({"strategy": block.get("strategy"), "rounds": block.get("rounds"),
                                     "local_epochs": block.get("local_epochs"),
                                     "selected_round": block.get("selected_round"), "sites": sites})}


def copy_without_caches(build: Path, dst: Path) -> None:
    """The build folder as the registry keeps it (see the module docstring)."""
    def ignore(folder: str, names: list[str]) -> set[str]:
        rel = Path(folder).relative_to(build)
        return {n for n in names if str(rel / n) in CACHE_PARTS or n.endswith(CACHE_SUFFIXES) or n == "__pycache__"}

    shutil.copytree(build, dst, ignore=ignore)


# ---- the registry --------------------------------------------------------------------------------

class ModelRegistry:
    """MLflow's registry at ``uri`` (default: ``$EDGEFPGA_REGISTRY``, else ``registry/`` here)."""

    def __init__(self, uri: str | None = None):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # a plant's line sends no usage data anywhere
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per file is noise in a log
        from mlflow import MlflowClient

        self.uri = uri or os.environ.get(ENV_URI) or default_uri()
        self.artifacts = None  # a server keeps its own
        if self.uri.startswith("sqlite:///"):
            db = Path(self.uri.removeprefix("sqlite:///"))
            db.parent.mkdir(parents=True, exist_ok=True)
            self.artifacts = db.parent / "artifacts"
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    # ---- writing

    def register(self, model_dir: str | Path, build: str | Path | None = None,
                 metrics: dict[str, float] | None = None) -> Version:
        """A new version of the card's model, with its build folder when given (checked first:
        nothing is written for a build that may not run on the line). It becomes the candidate.
        ``metrics``: more figures for its run (``edgefpga retrain``'s gates)."""
        model_dir, build = Path(model_dir), None if build is None else Path(build)
        card = load_card(model_dir)
        verify = None if build is None else checked_build(build, model_dir)
        self._ensure_model(card.name)
        run_id = self._log_run(card, model_dir, build, verify, metrics or {})
        tags = {"card.name": card.name, "onnx.sha256": sha256(card.model_path), "registered_at": now(),
                "verified": str(verify is not None).lower(),
                "build.path": "" if build is None else str(build.resolve())} | federated_tag(card.raw)
        mv = self.client.create_model_version(card.name, source=f"runs:/{run_id}/model", run_id=run_id, tags=tags,
                                              description=card.raw.get("task", ""))
        self.client.set_registered_model_alias(card.name, CANDIDATE, mv.version)
        return self.get(card.name, mv.version)

    def _ensure_model(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name, tags={HISTORY_TAG: "[]"},
                                                description=f"edge model versions of {name} (edgefpga)")

    def _log_run(self, card, model_dir: Path, build: Path | None, verify: dict | None, extra: dict) -> str:
        """One MLflow run per version: its metrics, the model folder and the build as artifacts."""
        name = f"edgefpga/{card.name}"
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
            name, artifact_location=(self.artifacts / card.name).resolve().as_uri() if self.artifacts else None)
        run = self.client.create_run(experiment_id, run_name=f"{card.name} {now()}")
        run_id = run.info.run_id
        for key, value in (card_metrics(card.raw) | (verify_metrics(verify) if verify else {}) | extra).items():
            self.client.log_metric(run_id, key, value)
        for key in ("params", "macs"):
            self.client.log_param(run_id, key, card.raw.get(key))
        for row in card.raw.get("federated", {}).get("history", []):  # a federated model's rounds, as MLflow steps
            self.client.log_metric(run_id, "federated_round_test_accuracy", float(row["test_accuracy"]),
                                   step=int(row["round"]))
        self.client.log_artifacts(run_id, str(model_dir), "model")
        if build is not None:
            with tempfile.TemporaryDirectory() as tmp:
                copy_without_caches(build, Path(tmp) / "build")
                self.client.log_artifacts(run_id, str(Path(tmp) / "build"), "build")
        self.client.set_terminated(run_id)
        return run_id

    def promote(self, version: int, name: str | None = None) -> Version:
        """Make ``version`` the champion: the one the line should run. Only a verified build."""
        name = self._name(name)
        chosen = self.get(name, version)
        if not chosen.verified:
            raise RegistryError(f"{name} version {version} has no verified build: register it with --build "
                                "<folder that passed edgefpga verify>")
        if CHAMPION in chosen.aliases:
            raise RegistryError(f"{name} version {version} is the champion already")
        history = self._history(name)
        self.client.set_registered_model_alias(name, CHAMPION, str(version))
        self.client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history + [int(version)]))
        self.client.set_model_version_tag(name, str(version), "promoted_at", now())
        if CANDIDATE in chosen.aliases:
            self.client.delete_registered_model_alias(name, CANDIDATE)
        return self.get(name, version)

    def rollback(self, name: str | None = None) -> Version:
        """The champion back to the previous champion; recorded on the registered model
        (``last_rollback``) and on the version rolled back from (``rolled_back_at``)."""
        name = self._name(name)
        history = self._history(name)
        if len(history) < 2:
            raise RegistryError(f"{name}: no previous champion to roll back to (champions so far: {history or 'none'})")
        current, previous = history[-1], history[-2]
        self.client.set_registered_model_alias(name, CHAMPION, str(previous))
        self.client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[:-1]))
        record = {"from": current, "to": previous, "at": now()}
        self.client.set_registered_model_tag(name, "last_rollback", json.dumps(record))
        self.client.set_model_version_tag(name, str(current), "rolled_back_at", record["at"])
        return self.get(name, previous)

    # ---- reading

    def names(self) -> list[str]:
        return sorted(m.name for m in self.client.search_registered_models())

    def versions(self, name: str | None = None) -> list[Version]:
        """Every version of ``name`` (default: the only registered model), oldest first."""
        name = self._name(name)
        found = self.client.search_model_versions(f"name = '{name}'")
        return sorted((self.get(name, mv.version) for mv in found), key=lambda v: v.version)

    def get(self, name: str, version: int | str) -> Version:
        """A version by number, or by alias (``champion``, ``candidate``)."""
        from mlflow.exceptions import MlflowException

        try:
            mv = (self.client.get_model_version_by_alias(name, version) if str(version) in (CHAMPION, CANDIDATE)
                  else self.client.get_model_version(name, str(version)))
        except MlflowException as exc:
            raise RegistryError(f"{name}: no version {version} in {self.uri}") from exc
        aliases = [a for a, v in self.client.get_registered_model(name).aliases.items() if str(v) == str(mv.version)]
        metrics = self.client.get_run(mv.run_id).data.metrics if mv.run_id else {}
        return Version(name=name, version=int(mv.version), aliases=sorted(aliases), metrics=dict(metrics),
                       verified=mv.tags.get("verified") == "true", build=mv.tags.get("build.path") or None,
                       run_id=mv.run_id, created=datetime.fromtimestamp(mv.creation_timestamp / 1e3, timezone.utc),
                       tags=dict(mv.tags))

    def download(self, name: str, version: int | str, dst: str | Path) -> Path:
        """The version's model folder and build as ``<dst>/model`` and ``<dst>/build`` (what a site
        runs; ``edgefpga verify`` can check the build there again)."""
        chosen = self.get(name, version)
        dst = Path(dst)
        dst.mkdir(parents=True, exist_ok=True)
        for part in ("model", "build") if chosen.verified else ("model",):
            self.client.download_artifacts(chosen.run_id, part, str(dst))
        return dst

    def fetch(self, spec: str) -> tuple[Path, Version]:
        """``registry:<name>@<champion|candidate|N>`` (or ``<name>@...``; no ``@``: the champion)
        as a local folder holding the version's ``model/`` and, when verified, ``build/``,
        downloaded once under the machine cache (``~/.cache/edgefpga/registry/<name>/v<N>-<run>``):
        what a running node swaps to and what ``edgefpga retrain`` fine-tunes."""
        from edgefpga.cache import cache_root

        name, _, version = spec.removeprefix("registry:").partition("@")
        chosen = self.get(name, version or CHAMPION)
        # keyed by the version's run too: another registry's (or a recreated one's) v2 is other weights
        folder = (cache_root() or Path.home() / ".cache" / "edgefpga") / "registry" / name / \
            f"v{chosen.version}-{chosen.run_id[:12]}"
        if not (folder / "model").is_dir():
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
            try:
                self.download(name, chosen.version, tmp)
                if not (folder / "model").is_dir():  # another process may have fetched it meanwhile
                    shutil.rmtree(folder, ignore_errors=True)
                    os.replace(tmp, folder)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return folder, chosen

    def _history(self, name: str) -> list[int]:
        return json.loads(self.client.get_registered_model(name).tags.get(HISTORY_TAG, "[]"))

    def _name(self, name: str | None) -> str:
        """``name``, or the one registered model when there is only one."""
        names = self.names()
        if name is None and len(names) == 1:
            return names[0]
        if name is None:
            raise RegistryError(f"{self.uri}: " + (f"several models ({', '.join(names)}): name one with --name"
                                                   if names else "no model registered yet"))
        if name not in names:
            raise RegistryError(f"{self.uri}: no registered model {name!r} (registered: {', '.join(names) or 'none'})")
        return name
