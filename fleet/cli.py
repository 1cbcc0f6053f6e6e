"""``edgefpga models``: the fleet part of the command (edgefpga/cli.py): the model registry; and
``edgefpga fed``, federated training (fleet/federated/cli.py).

MLflow loads inside the commands (the `fleet` extra), so that declaring them costs nothing and a
runtime-only install is told which extra to add.
"""

from __future__ import annotations

import argparse
import json
import os
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
    from edgefpga.fleet.cloud_model import CLOUD_EPOCHS, CloudArchConfig, train_cloud

    arch = CloudArchConfig(**({"size": args.size} if args.size else {}))
    build = train_cloud(str(args.out), arch, epochs=args.epochs or CLOUD_EPOCHS, threads=args.threads,
                        seed=args.seed, limit=args.limit, name=args.name)
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
    a.add_argument("--epochs", type=int, help="training epochs (default: the shipped run's)")
    a.add_argument("--size", type=int, help="input height and width in pixels (default 160)")
    a.add_argument("--threads", type=int, default=2, help="CPU threads for PyTorch (default 2)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--limit", type=int, help="train on the first N images only (quick checks)")
    a.set_defaults(func=cmd_cloud_train, user_errors=cloud_train_errors)


def register(sub: argparse._SubParsersAction) -> None:
    register_cloud(sub)
    from edgefpga.fleet.federated.cli import register as register_fed

    register_fed(sub)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--registry", metavar="URI", help="MLflow tracking/registry URI: a fleet server "
                        "(http://host:5000) or sqlite:///<file> (default: $EDGEFPGA_REGISTRY, else "
                        "registry/mlflow.db here, no server)")
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
