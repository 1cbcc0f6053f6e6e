"""``edgefpga retrain``: incremental learning from the sample store (issue 15, part 4).

The edge model now on the line is fine-tuned on the store's labelled hard samples plus a replay
of its own training data, by the one training pipeline (``models/zoo_build.py``: the same steps,
card and checks as ``edgefpga train``; only the start weights, the data and the epochs differ).
Then gates, in the spirit of KubeEdge Sedna's incremental learning (a model is deployed only when
its evaluation beats the running one):

- *fixed validation split*: the candidate's accuracy on the base model's own validation split
  (ELPV: the contract split's validation part, out of the training part, ``models.elpv.split``
  ``val``) at least the base model's minus ``tolerance`` (default 0: not worse);
- *held-out hard samples*: a fixed part of the store (``holdout``, chosen by a hash of each
  sample's id, so a sample held out once is held out in every later round and never trained on)
  where the candidate must be right more often than the base model (strictly).

No gate reads the test split: choosing a model on the figures it is then reported with would
report the choice's luck as the model's (issue 31). The test split is only reported (both
models' accuracy, in ``retrain.json`` ``reported``), never judged.

A candidate that passes is converted, verified (the integer model on the whole test split, the
hls4ml emulator and the RTL bit for bit on ``verify_sample`` of the cells: ``edgefpga verify
--sample``), registered in the MLflow registry with its card, metrics, gate figures and
verify.json, as ``candidate``; ``promote`` makes it the ``champion``. A candidate that fails a
gate or verify is not registered: its model folder and ``retrain.json`` stay in the output folder
for a person to look at, the run exits 1 naming the reason.

Triggers (Sedna's: a number of new samples, a time window, or by hand): ``min_new`` runs only
when at least that many labelled samples came into the store after the last retraining run (the
store's ``retrains`` table, every run recorded, passed or not); ``window`` (``HH:MM-HH:MM``, local
time, may wrap midnight) runs only inside it. Neither: run now.

Whose labels: an operator's label is always used; a cloud label only when the service identity
that signed it (its certificate's subject, recorded with the sample: fleet/trust.py) is one the
site lists (``labelers``: ``--site``'s site.json and ``--trust``). Whoever else answered an
escalation (a cell, a service of another site, an unsigned link) does not steer the model: the
run says how many labels it skipped and why.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

LABEL_SOURCES = ("any", "operator")  # any: the operator's label, else the cloud's; operator: only the operator's
HASH_PRIME = 2654435761  # Knuth's multiplicative hash: held-out membership from the sample id alone


class RetrainError(ValueError):
    """Input retraining cannot use (a missing store or model, a store of other classes); the
    message names it and the reason."""


@dataclass(frozen=True)
class RetrainConfig:
    store: Path
    model: str  # model folder, zoo name, build folder, or registry:<name>@<champion|candidate|N>
    out: Path | None = None  # default retrain/<name>-<UTC time>
    registry: str | None = None
    epochs: int = 10
    lr: float = 1e-3  # a third of a first training's: fine-tuning moves the weights less
    replay: float | None = None  # replay images per new sample; None: the whole training set (nothing forgotten)
    holdout: float = 0.2
    tolerance: float = 0.0
    labels: str = "any"
    min_new: int | None = None
    window: str | None = None
    promote: bool = False
    verify_sample: int = 32
    calibration_images: int = 1024
    threads: int = 2
    seed: int = 0
    progress: bool = True
    labelers: tuple[str, ...] = ()  # certificate subjects whose cloud labels are used; none: no cloud label


@dataclass
class Gate:
    name: str
    base: float
    candidate: float
    n: int
    rule: str
    passed: bool

    def line(self) -> str:
        return (f"gate {self.name}: candidate {self.candidate:.4f} vs base {self.base:.4f} on {self.n} images "
                f"({self.rule}): {'PASSED' if self.passed else 'FAILED'}")


@dataclass
class RetrainResult:
    outcome: str  # skipped | registered | rejected | failed
    reason: str
    out: Path | None = None
    gates: list[Gate] = field(default_factory=list)
    version: int | None = None
    seconds: dict = field(default_factory=dict)
    samples: dict = field(default_factory=dict)
    reported: dict = field(default_factory=dict)  # figures no gate reads: the test split's

    def to_dict(self) -> dict:
        return {"outcome": self.outcome, "reason": self.reason, "out": str(self.out) if self.out else None,
                "gates": [asdict(g) for g in self.gates], "version": self.version, "seconds": self.seconds,
                "samples": self.samples, "reported": self.reported}


# ---- triggers ------------------------------------------------------------------------------------

def parse_window(window: str) -> tuple[int, int]:
    """``HH:MM-HH:MM`` as minutes after midnight (start, end)."""
    try:
        start, end = (datetime.strptime(part.strip(), "%H:%M") for part in window.split("-"))
    except ValueError as exc:
        raise RetrainError(f"--window {window!r}: expected HH:MM-HH:MM (local time, e.g. 02:00-04:00)") from exc
    return start.hour * 60 + start.minute, end.hour * 60 + end.minute


def in_window(window: str, now: datetime) -> bool:
    """Whether ``now`` (local time) is inside the window; a window that ends before it starts
    wraps midnight (22:00-02:00)."""
    start, end = parse_window(window)
    minute = now.hour * 60 + now.minute
    return start <= minute < end if start <= end else minute >= start or minute < end


def not_triggered(store, cfg: RetrainConfig, now: datetime) -> str | None:
    """Why this run should not retrain now (None: it should)."""
    if cfg.window and not in_window(cfg.window, now):
        return f"outside the window {cfg.window} (now {now:%H:%M})"
    if cfg.min_new:
        new = len(new_samples(store, cfg.labels, cfg.labelers))
        if new < cfg.min_new:
            return f"{new} new labelled sample(s) since the last retrain, fewer than --min-new {cfg.min_new}"
    return None


def trusted_labelers(site: str | Path | None, trust: list[str] | tuple[str, ...] = ()) -> tuple[str, ...]:
    """The subjects whose cloud labels a site learns from: its site.json's ``labelers`` and ``trust``."""
    from edgefpga.fleet.trust import read_site

    listed = list(read_site(site)["labelers"]) if site else []
    return tuple(dict.fromkeys(listed + list(trust)))


def skip_reason(sample, labels: str, labelers: tuple[str, ...]) -> str | None:
    """Why a labelled sample's label is not used (None: it is). The operator's label always is."""
    if sample.true_label:
        return None
    if labels == "operator":
        return "a cloud label (--labels operator)"
    identity = sample.cloud.service_identity
    if identity is None:
        return "a cloud label without a recorded identity (an unsigned link, or stored before labels named it)"
    if identity not in labelers:
        return f"a cloud label from {identity}, an identity the site does not list"
    return None


def label_sources(store, labels: str, labelers: tuple[str, ...] = ()) -> tuple[list, Counter]:
    """The store's samples with a label training may use, and the labelled ones skipped, per reason."""
    from edgefpga.models.folder import UNLABELED

    if labels not in LABEL_SOURCES:
        raise RetrainError(f"--labels {labels!r}: choose one of {LABEL_SOURCES}")
    usable, skipped = [], Counter()
    for sample in store.samples():
        if sample.label == UNLABELED:
            continue
        reason = skip_reason(sample, labels, tuple(labelers))
        if reason:
            skipped[reason] += 1
        else:
            usable.append(sample)
    return usable, skipped


def labelled(store, labels: str, labelers: tuple[str, ...] = ()) -> list:
    """The store's samples with a label training may use."""
    return label_sources(store, labels, labelers)[0]


def new_samples(store, labels: str, labelers: tuple[str, ...] = ()) -> list:
    """Labelled samples stored after the last retraining run (all of them before the first)."""
    last = store.last_retrain()
    return [s for s in labelled(store, labels, labelers) if last is None or s.id > last["last_sample"]]


def is_held_out(sample_id: int, fraction: float) -> bool:
    """A fixed part of the store, by the id alone: the same in every round."""
    return (sample_id * HASH_PRIME) % 2**32 < fraction * 2**32


# ---- the base model and the data -------------------------------------------------------------------

def base_model(spec: str, registry: str | None, dst: Path) -> tuple[Path, str]:
    """The model to fine-tune as a model folder at ``dst`` (model.onnx + card.json) and its
    name for the record: from a model folder or zoo name, a build folder (its model/), or a
    registry version (``registry:<name>@<alias|N>``)."""
    from edgefpga.models.card import CARD_FILE, MODEL_FILE, resolve_model_dir

    label = spec
    if spec.startswith("registry:"):
        from edgefpga.fleet.registry import ModelRegistry, RegistryError

        try:
            folder, version = ModelRegistry(registry).fetch(spec)
        except RegistryError as exc:
            raise RetrainError(f"--model {spec}: {exc}") from exc
        source, onnx, label = folder / "model", folder / "model" / MODEL_FILE, f"{version.name} v{version.version}"
    else:
        source = resolve_model_dir(spec)
        onnx = source / MODEL_FILE
        if not source.is_dir():
            raise RetrainError(f"--model {spec}: no such model folder, build folder or zoo model")
        if not onnx.is_file() and (source / "model" / "source.onnx").is_file():  # a build folder
            source, onnx = source / "model", source / "model" / "source.onnx"
    if not onnx.is_file() or not (source / CARD_FILE).is_file():
        raise RetrainError(f"--model {spec}: {source} holds no model ({MODEL_FILE} and {CARD_FILE}; a build folder: "
                           "model/source.onnx and model/card.json)")
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx, dst / MODEL_FILE)
    shutil.copyfile(source / CARD_FILE, dst / CARD_FILE)
    return dst, label


def check_store(samples: list, all_samples: int, classes: list[str], store: Path, model: str,
                skipped: Counter | None = None) -> None:
    """Refuse a store retraining cannot learn from: nothing labelled (or every label skipped), or other classes."""
    if not samples:
        why = "".join(f"; skipped {n}: {reason}" for reason, n in sorted((skipped or {}).items()))
        raise RetrainError(f"{store}: no labelled samples to learn from ({all_samples} stored{why}): an operator "
                           "labels them (SampleStore.set_true_label), or escalation to a cloud model the site lists "
                           "(--site, --trust) gives its label")
    foreign = sorted({s.label for s in samples} - set(classes))
    recorded = sorted({c for s in samples for c in s.edge.classes} - set(classes))
    if foreign or recorded:
        raise RetrainError(f"{store}: a store of other classes: its samples are labelled or were scored with "
                           f"{sorted(set(foreign) | set(recorded))}, which {model} does not have (its classes: {classes})")


def replay_pool(card, data) -> np.ndarray:
    """The fit images the model was trained on: the data's fit part, or the first ``limit`` of it
    where its training (or, for a retrained model, its first training) was limited."""
    first = card.raw.get("retraining", {}).get("replay", {})
    limit = first["fit_limit"] if "fit_limit" in first else card.raw.get("training", {}).get("config", {}).get("limit")
    return data.split.fit[:limit] if limit else data.split.fit


def sample_images(samples: list, color: str) -> list[np.ndarray]:
    from edgefpga.models.folder import read_images

    return read_images([s.image for s in samples], color)[0]


# ---- the run -----------------------------------------------------------------------------------------

def fine_tune(base_dir: Path, out: Path, train_samples: list, cfg: RetrainConfig, base_label: str):
    """The candidate at ``out`` by the training pipeline, started from the base model's weights."""
    from edgefpga.models.arch import ArchConfig
    from edgefpga.models.augment import AugmentConfig
    from edgefpga.models.card import load_card
    from edgefpga.models.datasets import data_of_card, with_new_samples
    from edgefpga.models.export import load_unfolded
    from edgefpga.models.preprocess import normalize, resize_batch
    from edgefpga.models.train import TrainConfig
    from edgefpga.models.zoo_build import build_zoo_model

    card = load_card(base_dir)
    record = card.raw.get("architecture")
    if not record or "widths" not in record or record.get("kind"):
        raise RetrainError(f"{card.path}: no edge architecture recorded (edgefpga train writes one): cannot rebuild "
                           "the network to fine-tune")
    arch = ArchConfig(**record | {"widths": tuple(record["widths"])})
    base_data = data_of_card(card)
    pool = replay_pool(card, base_data)
    rng = np.random.default_rng(cfg.seed)
    n_replay = len(pool) if cfg.replay is None else min(len(pool), int(round(cfg.replay * len(train_samples))))
    replay = np.sort(rng.choice(pool, n_replay, replace=False)) if n_replay < len(pool) else pool
    images = sample_images(train_samples, card.input.color)
    labels = np.array([card.classes.index(s.label) for s in train_samples])
    data = with_new_samples(base_data, replay, images, labels,
                            f"fine-tuned on {len(train_samples)} store samples plus a replay of {len(replay)} "
                            "of the base model's training images")
    fit_pixels = normalize(resize_batch(data.take(data.split.fit[:256]), card.input), card.input)
    init = load_unfolded(card.model_path, arch.build_model(), fit_pixels)
    recorded = card.raw.get("training", {})
    train_cfg = TrainConfig(**recorded.get("config", {}) | {
        "epochs": cfg.epochs, "lr": cfg.lr, "limit": None, "patience": 0, "teachers": (), "seed": cfg.seed,
        "threads": cfg.threads})
    augment = AugmentConfig(**recorded.get("augment", {}))
    first_limit = card.raw.get("retraining", {}).get("replay", {}).get(
        "fit_limit", recorded.get("config", {}).get("limit"))
    provenance = {"retraining": {
        "base": base_label, "base_onnx_sha256": sha256(card.model_path), "store": str(cfg.store.resolve()),
        "samples": [s.id for s in train_samples], "labels": cfg.labels,
        "replay": {"n": int(len(replay)), "pool": int(len(pool)), "fit_limit": first_limit,
                   "ratio": cfg.replay, "seed": cfg.seed},
        "epochs": cfg.epochs, "lr": cfg.lr,
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}}
    build = build_zoo_model(out, arch, train_cfg, augment, name=card.name, progress=cfg.progress, data=data,
                            init=init, spec=card.input, provenance=provenance)
    return build, data


def sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def accuracy_on(model_dir: Path, images: list, labels: np.ndarray) -> float:
    from edgefpga.models.card import load_card
    from edgefpga.models.evaluate import predict_scores

    scores = predict_scores(load_card(model_dir), images)
    return float(np.mean(scores.argmax(1) == labels))


def test_report(base_dir: Path, data, candidate_test: dict) -> dict:
    """Both models' accuracy on the test split: reported beside the gates, read by none of them."""
    from edgefpga.models.evaluate import evaluate

    base_test = evaluate(base_dir, "test", data=data)
    return {"test_split": {"base": round(base_test["accuracy"], 4), "candidate": round(candidate_test["accuracy"], 4),
                           "n": int(candidate_test["n"]), "note": "reported only: no gate reads the test split"}}


def judge(base_dir: Path, cand_dir: Path, data, held: list, classes: list[str], color: str,
          tolerance: float) -> list[Gate]:
    """The two gates, each with its figures: the validation split and the held-out hard samples
    (never the test split, which is only reported)."""
    from edgefpga.models.evaluate import evaluate

    base_val, cand_val = evaluate(base_dir, "val", data=data), evaluate(cand_dir, "val", data=data)
    gates = [Gate("fixed_validation_split", round(base_val["accuracy"], 4), round(cand_val["accuracy"], 4),
                  int(cand_val["n"]), f"not worse than the base by more than {tolerance:g}",
                  cand_val["accuracy"] >= base_val["accuracy"] - tolerance - 1e-12)]
    if not held:
        gates.append(Gate("held_out_hard_samples", 0.0, 0.0, 0, "better than the base: there are no held-out "
                          "samples yet (store more, or raise --holdout)", False))
        return gates
    labels = np.array([classes.index(s.label) for s in held])
    images = sample_images(held, color)
    base_acc, cand_acc = accuracy_on(base_dir, images, labels), accuracy_on(cand_dir, images, labels)
    gates.append(Gate("held_out_hard_samples", round(base_acc, 4), round(cand_acc, 4), len(held),
                      "better than the base", cand_acc > base_acc))
    return gates


def convert_and_verify(model_dir: Path, build: Path, calibration_images: int, verify_sample: int,
                       progress: bool) -> dict:
    """``edgefpga convert`` then ``edgefpga verify --sample``: verify.json, or VerifyFailed. The
    converter's own emulator check runs on 32 images (as the tests' builds do): verify checks the
    emulator again right after, on the test split."""
    from edgefpga.hw.convert import ConvertConfig, convert
    from edgefpga.sim.verify import verify

    convert(str(model_dir), build, ConvertConfig(calibration_images=calibration_images, emulator_images=32,
                                                 progress=progress),
            force=True, log=print if progress else (lambda _m: None))
    return verify(build, progress=progress, sample=verify_sample)


def retrain(cfg: RetrainConfig, log=print, now: datetime | None = None) -> RetrainResult:
    """One retraining run (see the module docstring); every run that gets past its trigger is
    recorded in the store."""
    from edgefpga.fleet.store import INDEX_FILE, SampleStore

    if not (cfg.store / INDEX_FILE).is_file():
        raise RetrainError(f"{cfg.store}: no sample store here ({INDEX_FILE} missing): the inspection node's "
                           "`store` parameter makes one")
    if not 0 < cfg.holdout < 1:
        raise RetrainError(f"--holdout {cfg.holdout}: a fraction of the store, between 0 and 1")
    with SampleStore(cfg.store) as store:
        skip = not_triggered(store, cfg, now or datetime.now())
        if skip:
            return RetrainResult("skipped", skip)
        result = run_once(store, cfg, log)
        store.record_retrain(result.samples["last_sample"], result.samples["base"], result.outcome,
                             result.to_dict())
    return result


def run_once(store, cfg: RetrainConfig, log) -> RetrainResult:
    from edgefpga.models.card import load_card

    started = time.perf_counter()
    samples, skipped = label_sources(store, cfg.labels, cfg.labelers)
    for reason, n in sorted(skipped.items()):
        log(f"retrain: skipped {n} label(s): {reason}")
    out = cfg.out or Path("retrain") / f"{Path(cfg.model).name.replace(':', '_').replace('@', '_')}-" \
        f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
    base_dir, base_label = base_model(cfg.model, cfg.registry, out / "base")
    card = load_card(base_dir)
    check_store(samples, store.count(), card.classes, cfg.store, base_label, skipped)
    held = [s for s in samples if is_held_out(s.id, cfg.holdout)]
    train_samples = [s for s in samples if not is_held_out(s.id, cfg.holdout)]
    counts = {"base": base_label, "labelled": len(samples), "trained_on": len(train_samples), "held_out": len(held),
              "new": len(new_samples(store, cfg.labels, cfg.labelers)),
              "last_sample": max(s.id for s in store.samples()),
              "skipped": dict(skipped), "labelers": list(cfg.labelers)}
    log(f"retrain {base_label}: {len(train_samples)} store samples to learn from, {len(held)} held out for the gate "
        f"({counts['new']} new since the last retrain)")
    result = RetrainResult("rejected", "", out=out, samples=counts)
    if not train_samples:
        result.reason = f"every labelled sample is held out ({len(held)}): nothing to learn from yet"
        return result
    build, data = fine_tune(base_dir, out / "model", train_samples, cfg, base_label)
    result.seconds["fine_tune"] = round(time.perf_counter() - started, 1)
    mark = time.perf_counter()
    result.gates = judge(base_dir, out / "model", data, held, card.classes, card.input.color, cfg.tolerance)
    result.seconds["gates"] = round(time.perf_counter() - mark, 1)
    for gate in result.gates:
        log(gate.line())
    result.reported = test_report(base_dir, data, build.facts["test"])
    test = result.reported["test_split"]
    log(f"reported, not judged: test split accuracy candidate {test['candidate']:.4f} vs base {test['base']:.4f} "
        f"on {test['n']} images")
    failed = [g for g in result.gates if not g.passed]
    if failed:
        result.reason = "; ".join(f"{g.name}: candidate {g.candidate:.4f} vs base {g.base:.4f} ({g.rule})"
                                  for g in failed)
        write_record(out, result)
        return result
    return publish(result, out, cfg, log)


def publish(result: RetrainResult, out: Path, cfg: RetrainConfig, log) -> RetrainResult:
    """Convert, verify and register a candidate that passed the gates (promote if asked)."""
    from edgefpga.fleet.registry import ModelRegistry
    from edgefpga.sim.verify import VerifyFailed

    mark = time.perf_counter()
    result.outcome = "passed_gates"
    write_record(out, result)  # retrain.json with the gates goes into the model folder the registry keeps
    try:
        verify = convert_and_verify(out / "model", out / "build", cfg.calibration_images, cfg.verify_sample,
                                    cfg.progress)
    except VerifyFailed as exc:
        result.outcome, result.reason = "failed", f"verify failed: {exc}"
        result.seconds["convert_verify"] = round(time.perf_counter() - mark, 1)
        write_record(out, result)
        return result
    result.seconds["convert_verify"] = round(time.perf_counter() - mark, 1)
    rtl = verify["rtl"]
    log(f"verify: emulator top-1 agreement {verify['emulator']['top1_agreement']:.4f} on {verify['emulator']['n']} "
        f"images, RTL bit-exact on {rtl['bit_exact_frames']} of {rtl['n']}")
    mark = time.perf_counter()
    registry = ModelRegistry(cfg.registry)
    metrics = {f"gate_{g.name}_{part}": float(getattr(g, part)) for g in result.gates for part in ("base", "candidate")}
    version = registry.register(out / "model", out / "build", metrics=metrics)
    result.version = version.version
    if cfg.promote:
        registry.promote(version.version, version.name)
    result.seconds["register"] = round(time.perf_counter() - mark, 1)
    result.outcome = "registered"
    result.reason = (f"{version.name} v{version.version} registered as "
                     f"{'champion (promoted)' if cfg.promote else 'candidate'}")
    write_record(out, result)
    return result


def write_record(out: Path, result: RetrainResult) -> None:
    """``retrain.json``: the gates' figures and the outcome, beside the candidate (and in its
    model folder, which the registry keeps)."""
    text = json.dumps(result.to_dict(), indent=1) + "\n"
    (out / "retrain.json").write_text(text)
    if (out / "model").is_dir() and result.outcome != "registered":
        (out / "model" / "retrain.json").write_text(text)
