"""``edgefpga models``: the fleet part of the command (edgefpga/cli.py): the model registry;
``edgefpga fleet certs``, a site's certificates for the edge-cloud link (fleet/trust.py); and
``edgefpga fed``, federated training (fleet/federated/cli.py).

MLflow loads inside the commands (the `fleet` extra), so that declaring them costs nothing and a
runtime-only install is told which extra to add.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def user_errors() -> tuple[type[Exception], ...]:
    from edgefpga.fleet.registry import RegistryError
    from edgefpga.models.card import ModelCardError

    return RegistryError, ModelCardError


def open_registry(args: argparse.Namespace):
    from edgefpga.fleet.registry import ModelRegistry

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # table creation is not news to the user
    return ModelRegistry(args.registry)


def version_line(v) -> str:
    accuracy = v.metrics.get("test_accuracy")
    bit_exact = v.metrics.get("verify_rtl_bit_exact_frames")
    build = (f"build verified ({int(bit_exact)} frames bit-exact)" if v.verified else "no verified build")
    return (f"{v.name} v{v.version:<3} {','.join(v.aliases) or '-':<18} test accuracy "
            f"{'-' if accuracy is None else f'{accuracy:.4f}'}  {build}  registered {v.created:%Y-%m-%d %H:%M}")


def cmd_list(args: argparse.Namespace) -> int:
    registry = open_registry(args)
    names = [args.name] if args.name else registry.names()
    versions = [v for name in names for v in registry.versions(name)]
    if args.json:
        print(json.dumps([v.__dict__ | {"created": v.created.isoformat()} for v in versions], indent=1))
    elif not versions:
        print(f"no model registered in {registry.uri} (edgefpga models register <model dir> --build <build>)")
    else:
        print("\n".join(version_line(v) for v in versions))
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from edgefpga.models.card import resolve_model_dir

    version = open_registry(args).register(resolve_model_dir(args.model), args.build)
    print(f"registered {version_line(version)}")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    version = open_registry(args).promote(args.version, args.name)
    print(f"champion now {version_line(version)}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    version = open_registry(args).rollback(args.name)
    print(f"rolled back: champion now {version_line(version)}")
    return 0


def cmd_cloud_train(args: argparse.Namespace) -> int:
    from edgefpga.fleet.cloud_model import train_cloud

    build = train_cloud(str(args.out), args.backbone, size=args.size, epochs=args.epochs, lr=args.lr,
                        teachers=() if args.no_teachers else args.teachers, threads=args.threads, seed=args.seed,
                        limit=args.limit, name=args.name)
    test = build.facts["test"]
    print(f"wrote {build.out}/model.onnx and card.json: test accuracy {test['accuracy']:.4f}, "
          f"balanced {test['balanced_accuracy']:.4f}, trained in {build.result.seconds:.0f} s")
    return 0


def cloud_train_errors() -> tuple[type[Exception], ...]:
    from edgefpga.models.arch import ArchitectureError
    from edgefpga.models.card import ModelCardError
    from edgefpga.models.datasets import DatasetError

    return ModelCardError, DatasetError, ArchitectureError


def register_cloud(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cloud", help="the cloud model that answers escalations: train (serve it with edgefpga-cloud)")
    actions = p.add_subparsers(dest="cloud_command", required=True, metavar="ACTION")
    a = actions.add_parser("train", help="train the cloud model (no FPGA limits) on ELPV's training split with the "
                           "edge model's pipeline; writes a model folder (model.onnx with a batch axis, card.json)")
    a.add_argument("--out", type=Path, default=Path("models/zoo/elpv_cloud"), help="model folder to write "
                   "(default models/zoo/elpv_cloud)")
    a.add_argument("--name", help="model name in the card (default: the folder name)")
    a.add_argument("--backbone", choices=("efficientnet-lite0", "resnet"), default="efficientnet-lite0",
                   help="efficientnet-lite0: ImageNet-pretrained (the cloud extra's wheels), fine-tuned; resnet: the "
                   "residual net from scratch (default efficientnet-lite0)")
    a.add_argument("--epochs", type=int, help="training epochs (default: the backbone's recorded run, 10 or 150)")
    a.add_argument("--size", type=int, help="input height and width in pixels (default 224 or 128)")
    a.add_argument("--lr", type=float, help="peak learning rate of the one-cycle schedule (default 0.001 or 0.003)")
    a.add_argument("--threads", type=int, default=1, help="CPU threads for PyTorch (default 1, as the recorded runs)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--limit", type=int, help="train on the first N images only (quick checks)")
    a.add_argument("--teachers", nargs="+", metavar="MODEL", help="distil from these models (default: the "
                   "resnet recipe's elpv_defect and elpv_defect_v1; none for efficientnet-lite0)")
    a.add_argument("--no-teachers", action="store_true", help="train without distillation")
    a.set_defaults(func=cmd_cloud_train, user_errors=cloud_train_errors)


def cmd_fleet_certs(args: argparse.Namespace) -> int:
    from edgefpga.fleet.trust import SITE_FILE, make_site

    info = make_site(args.out, args.cell, service=args.service, hosts=args.host or None, site=args.site,
                     days=args.days)
    print(f"wrote {args.out}/{SITE_FILE}: CA ca.crt (its key ca.key stays here), identities "
          f"{', '.join(sorted(info['identities']))}; labels trusted from {', '.join(info['labelers'])}")
    print(f"serve:  edgefpga-cloud --certs {args.out}   (listens on tls/0.0.0.0:7447)")
    print(f"a cell: copy ca.crt, <cell>.crt, <cell>.key; node parameters cloud:=tls/<host>:7447 "
          f"cloud_certs:=<that folder> cloud_identity:=<cell>")
    return 0


def trust_errors() -> tuple[type[Exception], ...]:
    from edgefpga.fleet.trust import TrustError

    return TrustError, OSError


def register_fleet(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fleet", help="the site's edge-cloud link: certificates (mutual TLS, signed answers)")
    actions = p.add_subparsers(dest="fleet_command", required=True, metavar="ACTION")
    a = actions.add_parser("certs", help="a site CA and certificates for the cloud service and each cell; run again "
                           "with more --cell to add cells (the CA and old identities are kept)")
    a.add_argument("--out", type=Path, required=True, help="the site folder (ca.crt, ca.key, <identity>.crt/.key, "
                   "site.json)")
    a.add_argument("--cell", action="append", default=[], metavar="NAME", help="a cell identity (repeatable)")
    a.add_argument("--service", default="edgefpga-cloud", help="the service's identity (default edgefpga-cloud)")
    a.add_argument("--host", action="append", metavar="HOST", help="a name or address cells dial the service at "
                   "(repeatable; default 127.0.0.1 and localhost)")
    a.add_argument("--site", default="edgefpga site", help="the site's name: the CA's and every subject's O=")
    a.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    a.set_defaults(func=cmd_fleet_certs, user_errors=trust_errors)


def retrain_errors() -> tuple[type[Exception], ...]:
    from edgefpga.fleet.registry import RegistryError
    from edgefpga.fleet.retrain import RetrainError
    from edgefpga.fleet.store import StoreError
    from edgefpga.fleet.trust import TrustError
    from edgefpga.hw.onnx_check import ConversionError
    from edgefpga.models.arch import ArchitectureError
    from edgefpga.models.card import ModelCardError
    from edgefpga.models.datasets import DatasetError

    return (RetrainError, RegistryError, StoreError, ModelCardError, DatasetError, ArchitectureError, ConversionError,
            TrustError)


def cmd_retrain(args: argparse.Namespace) -> int:
    from edgefpga.fleet.retrain import RetrainConfig, retrain, trusted_labelers

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    labelers = trusted_labelers(args.site, args.trust)
    cfg = RetrainConfig(store=args.store, model=args.model, out=args.out, registry=args.registry, epochs=args.epochs,
                        lr=args.lr, replay=args.replay, holdout=args.holdout, tolerance=args.tolerance,
                        labels=args.labels, min_new=args.min_new, window=args.window, promote=args.promote,
                        verify_sample=args.verify_sample, calibration_images=args.calibration_images,
                        threads=args.threads, seed=args.seed, progress=not args.quiet, labelers=labelers)
    result = retrain(cfg)
    if result.outcome == "skipped":
        print(f"retrain: not triggered: {result.reason}")
        return 0
    timing = ", ".join(f"{k} {v:g} s" for k, v in result.seconds.items())
    if result.outcome == "registered":
        print(f"retrain: {result.reason} ({timing}); candidate in {result.out}")
        return 0
    print(f"retrain: FAILED {result.outcome}: {result.reason}; nothing registered; see {result.out}/retrain.json",
          file=sys.stderr)
    return 1


def register_retrain(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("retrain", parents=[common], help="fine-tune the edge model on the sample store's labelled "
                       "hard samples plus a replay of its training data; gate, convert, verify, register",
                       description="Gates: the candidate must not be worse on the fixed validation split "
                       "(--tolerance) and must be better on the store's held-out hard samples (--holdout). Passed: convert, "
                       "verify (RTL bit-exact on --verify-sample cells), register as candidate (--promote: "
                       "champion). Failed: exit 1, nothing registered. The test split is only reported, never gated on. "
                       "Triggers: --min-new, --window; neither: now.")
    p.add_argument("--store", type=Path, required=True, help="the sample store folder (the inspection node's `store`)")
    p.add_argument("--model", default="registry:elpv_defect@champion", help="the edge model to fine-tune: model "
                   "folder, zoo name, build folder or registry:<name>@<champion|candidate|N> "
                   "(default registry:elpv_defect@champion)")
    p.add_argument("--out", type=Path, help="folder for the candidate (model/, build/, retrain.json; default "
                   "retrain/<model>-<UTC time>)")
    p.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs (default 10)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--replay", type=float, help="replay R of the model's own training images per new sample "
                   "(default: all of them, so nothing is forgotten)")
    p.add_argument("--holdout", type=float, default=0.2, help="part of the store held out for the hard-sample gate, "
                   "the same samples every round (default 0.2)")
    p.add_argument("--tolerance", type=float, default=0.0, help="accuracy the candidate may lose on the fixed "
                   "validation split (default 0: not worse)")
    p.add_argument("--labels", default="any", choices=["any", "operator"], help="learn from the operator's labels "
                   "and, where none, the cloud's (any, default), or from the operator's only")
    p.add_argument("--site", type=Path, help="the site folder (edgefpga fleet certs): cloud labels only from its "
                   "site.json 'labelers'")
    p.add_argument("--trust", action="append", default=[], metavar="SUBJECT", help="a certificate subject whose "
                   "cloud labels are learnt from (repeatable; adds to --site's). Neither: no cloud label is used")
    p.add_argument("--min-new", type=int, help="trigger: run only when at least N labelled samples came in since the "
                   "last retrain")
    p.add_argument("--window", metavar="HH:MM-HH:MM", help="trigger: run only inside this local-time window")
    p.add_argument("--promote", action="store_true", help="make a registered candidate the champion")
    p.add_argument("--verify-sample", type=int, default=32, help="cells checked bit for bit in the emulator and RTL "
                   "(the agreement bar runs on the whole test split; default 32)")
    p.add_argument("--calibration-images", type=int, default=1024, help="convert's calibration images (default 1024)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for PyTorch (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_retrain, user_errors=retrain_errors)


def register(sub: argparse._SubParsersAction) -> None:
    register_cloud(sub)
    register_fleet(sub)
    from edgefpga.fleet.federated.cli import register as register_fed

    register_fed(sub)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--registry", metavar="URI", help="MLflow tracking/registry URI: a fleet server "
                        "(http://host:5000) or sqlite:///<file> (default: $EDGEFPGA_REGISTRY, else "
                        "registry/mlflow.db here, no server)")
    register_retrain(sub, common)
    p = sub.add_parser("models", help="the model registry (MLflow): list, register, promote, rollback edge model "
                       "versions")
    actions = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    a = actions.add_parser("list", parents=[common], help="every version with its aliases, test accuracy and build")
    a.add_argument("--name", help="only this registered model (default: all)")
    a.add_argument("--json", action="store_true", help="print the versions as JSON")
    a.set_defaults(func=cmd_list, user_errors=user_errors)
    a = actions.add_parser("register", parents=[common], help="register a model folder (and its verified build "
                           "folder) as a new version, the candidate")
    a.add_argument("model", help="model folder (model.onnx + card.json) or zoo name")
    a.add_argument("--build", type=Path, help="its build folder; it must have passed edgefpga verify (RTL bit-exact) "
                   "and be unchanged since; only a version with one can become champion")
    a.set_defaults(func=cmd_register, user_errors=user_errors)
    a = actions.add_parser("promote", parents=[common], help="make a version the champion (what the line runs)")
    a.add_argument("version", type=int)
    a.add_argument("--name", help="the registered model (default: the only one)")
    a.set_defaults(func=cmd_promote, user_errors=user_errors)
    a = actions.add_parser("rollback", parents=[common], help="the champion back to the previous champion")
    a.add_argument("--name", help="the registered model (default: the only one)")
    a.set_defaults(func=cmd_rollback, user_errors=user_errors)
