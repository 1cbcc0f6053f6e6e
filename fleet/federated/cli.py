"""``edgefpga fed``: federated training across sites with Flower (docs/federated.md).

In the order a user runs them: ``certs`` (on the SuperLink's machine), ``partition`` (ELPV as
three site folders: the demo's sites), ``superlink`` (the server), ``supernode`` (at each site,
with its folder), ``run`` (submit the app, then export the global model), or ``start`` (all of
it on this machine's loopback). Flower loads inside the commands (the ``fed`` extra).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path


def user_errors() -> tuple[type[Exception], ...]:
    from edgefpga.fleet.federated.task import FederationError
    from edgefpga.models.card import ModelCardError
    from edgefpga.models.datasets import DatasetError

    return FederationError, DatasetError, ModelCardError


RUN_OPTIONS = {  # option -> RunSettings field
    "rounds": "rounds", "local_epochs": "local_epochs", "fraction": "fraction_train", "min_sites": "min_train_nodes",
    "strategy": "strategy", "mu": "proximal_mu", "server_momentum": "server_momentum", "server_lr": "server_lr", "size": "size", "lr": "lr", "seed": "seed",
    "eval_limit": "eval_limit",
}


def settings(args: argparse.Namespace):
    """The app config's defaults, with the options the user set."""
    from edgefpga.fleet.federated.task import RunSettings

    values = {field: getattr(args, opt) for opt, field in RUN_OPTIONS.items() if getattr(args, opt) is not None}
    if args.widths:
        values["widths"] = tuple(args.widths)
    if "min_train_nodes" in values:
        values["min_available_nodes"] = values["min_train_nodes"]
    return replace(RunSettings(), **values, out_dir=str((args.out / "run").resolve()))


def cmd_certs(args: argparse.Namespace) -> int:
    from edgefpga.fleet.federated.certs import make_certificates

    paths = make_certificates(args.out, args.host or None, args.days)
    print(f"wrote {paths['ca']} (give it to every site), {paths['cert']} and {paths['key']} (the SuperLink's; "
          "keep the key on its machine)")
    return 0


def cmd_partition(args: argparse.Namespace) -> int:
    from edgefpga.fleet.federated.partition import PARTITION_RECORD, partition_elpv

    record = partition_elpv(args.out, args.seed, args.limit)
    for name, site in record["sites"].items():
        s = site["summary"]
        print(f"{args.out / name}: {s['n']} cells ({s['mono']} mono, {s['poly']} poly; {s['defective']} defective)")
    print(f"partition record: {args.out / PARTITION_RECORD}")
    return 0


def exec_flower(command: list[str], home: Path) -> int:
    """Replace this process with a Flower tool (its own log, its own signals)."""
    from edgefpga.fleet.federated.deploy import flower_env

    home.mkdir(parents=True, exist_ok=True)
    print(" ".join(command), flush=True)
    os.execve(command[0], command, flower_env(home))
    return 0  # not reached


def cmd_superlink(args: argparse.Namespace) -> int:
    from edgefpga.fleet.federated.deploy import superlink_command

    return exec_flower(superlink_command(args.certs, args.host, args.port), args.home)


def cmd_supernode(args: argparse.Namespace) -> int:
    from edgefpga.fleet.federated.deploy import check_site, check_tls, free_port, supernode_command
    from edgefpga.fleet.federated.task import RunSettings

    n = check_site(args.data, RunSettings(classes=tuple(args.classes)))
    check_tls(args.superlink, args.ca)
    print(f"site {args.site or args.data.name}: {n} images to train on; the SuperLink at {args.superlink} is trusted",
          flush=True)
    return exec_flower(supernode_command(args.superlink, args.ca, args.data, args.site or args.data.name,
                                         args.port or free_port()), args.home)


def finish(args: argparse.Namespace, run_dir: Path) -> int:
    from edgefpga.fleet.federated.export import export_run

    model = args.out / "model"
    build = export_run(run_dir, model, args.name, args.partition)
    test = build.facts["test"]
    print(f"wrote {model}/model.onnx and card.json: ELPV test accuracy {test['accuracy']:.4f}, balanced "
          f"{test['balanced_accuracy']:.4f}; next: edgefpga convert {model} --board pynq-z2 "
          f"--out build/{args.name or args.out.name}")
    return 0


def app_of(args: argparse.Namespace) -> Path:
    """The Flower app to submit: the main one, or with --secagg the SecAgg+ one (secagg.py)."""
    from edgefpga.fleet.federated.deploy import APP_DIR, SECAGG_APP_DIR

    return SECAGG_APP_DIR if args.secagg else APP_DIR


def cmd_run(args: argparse.Namespace) -> int:
    from edgefpga.fleet.federated.deploy import submit, run_config_of

    run = settings(args)
    submit(args.superlink, args.ca, args.out / "flwr", run_config_of(run), args.out / "run.log", app=app_of(args))
    return finish(args, Path(run.out_dir))


def cmd_start(args: argparse.Namespace) -> int:
    from edgefpga.fleet.federated.deploy import LocalFederation, check_site

    run = settings(args)
    sites = {p.name: p for p in args.sites}
    for path in sites.values():
        check_site(path, run)
    with LocalFederation(args.out, args.certs, sites) as fed:
        print(f"SuperLink {fed.superlink} (TLS), SuperNodes: {', '.join(sites)}; logs in {args.out / 'logs'}",
              flush=True)
        fed.run(run, app=app_of(args))
    return finish(args, Path(run.out_dir))


def cmd_export(args: argparse.Namespace) -> int:
    from edgefpga.fleet.federated.export import export_run

    build = export_run(args.run, args.model_out, args.name, args.partition)
    print(f"wrote {args.model_out}: ELPV test accuracy {build.facts['test']['accuracy']:.4f}")
    return 0


def run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("the run (app config defaults: fleet/federated/app/pyproject.toml)")
    g.add_argument("--out", type=Path, required=True, help="folder for the run (run/: global model, history; "
                   "model/: the exported model folder; logs)")
    g.add_argument("--rounds", type=int, help="federated rounds (default 3)")
    g.add_argument("--local-epochs", type=int, help="epochs each site trains per round (default 1)")
    g.add_argument("--fraction", type=float, help="fraction of connected sites sampled per round (default 1.0)")
    g.add_argument("--min-sites", type=int, help="minimum sites to start and to train a round (default 2): a site "
                   "that drops out is then not waited for")
    g.add_argument("--strategy", choices=["fedavg", "fedprox", "fedavgm"], help="aggregation (default fedavg; "
                   "fedavgm: FedAvg with server momentum)")
    g.add_argument("--mu", type=float, help="FedProx's proximal weight (default 0.01)")
    g.add_argument("--server-momentum", type=float, help="FedAvgM's server momentum (default 0.5)")
    g.add_argument("--server-lr", type=float, help="FedAvgM's server learning rate (default 1.0)")
    g.add_argument("--size", type=int, help="input size of the edge architecture (default 96)")
    g.add_argument("--widths", type=int, nargs="+", help="conv block widths (default 8 16 32 48 64 80)")
    g.add_argument("--lr", type=float, help="local learning rate (default 0.003)")
    g.add_argument("--seed", type=int, help="seed of the initial model and the local epochs")
    g.add_argument("--eval-limit", type=int, help="central test on the first N ELPV test cells (default: all 654)")
    g.add_argument("--secagg", action="store_true", help="secure aggregation with Flower's SecAgg+ (the server "
                   "sees only the sum of the sites' updates; FedAvg only, no per-site checks or scores)")
    g.add_argument("--name", help="model name in the card (default: model)")
    g.add_argument("--partition", type=Path, help="the sites' partition.json, recorded in the card")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fed", help="federated training across sites with Flower: sites share weights, never images")
    actions = p.add_subparsers(dest="fed_command", required=True, metavar="ACTION")
    a = actions.add_parser("certs", help="a private CA and the SuperLink's TLS certificate (self-signed)")
    a.add_argument("--out", type=Path, required=True, help="folder for ca.crt, server.pem, server.key")
    a.add_argument("--host", action="append", help="a name or address the sites dial (repeat; default 127.0.0.1 "
                   "and localhost)")
    a.add_argument("--days", type=int, default=365, help="validity (default 365)")
    a.set_defaults(func=cmd_certs, user_errors=user_errors)
    a = actions.add_parser("partition", help="ELPV's train part as three site folders (mostly mono, mostly poly, "
                           "small mixed) and partition.json")
    a.add_argument("--out", type=Path, required=True, help="folder for site_mono/, site_poly/, site_mixed/")
    a.add_argument("--seed", type=int, default=0, help="partition seed (default 0)")
    a.add_argument("--limit", type=int, help="at most N cells per site (quick runs)")
    a.set_defaults(func=cmd_partition, user_errors=user_errors)
    a = actions.add_parser("superlink", help="run Flower's SuperLink over TLS (foreground)")
    a.add_argument("--certs", type=Path, required=True, help="folder made by edgefpga fed certs")
    a.add_argument("--host", default="0.0.0.0", help="address to listen on (default all)")
    a.add_argument("--port", type=int, default=9093, help="port of its Fleet, Control and Runtime APIs (default 9093)")
    a.add_argument("--home", type=Path, default=Path("fed/superlink"), help="its Flower state folder (FLWR_HOME)")
    a.set_defaults(func=cmd_superlink, user_errors=user_errors)
    a = actions.add_parser("supernode", help="run a site's SuperNode (foreground), after checking its data folder "
                           "and the SuperLink's certificate")
    a.add_argument("--superlink", required=True, metavar="HOST:PORT")
    a.add_argument("--ca", type=Path, required=True, help="ca.crt from the SuperLink's edgefpga fed certs")
    a.add_argument("--data", type=Path, required=True, help="the site's folder (one subfolder per class, as "
                   "edgefpga train reads)")
    a.add_argument("--site", help="site name in the reports (default: the folder's name)")
    a.add_argument("--classes", nargs="+", default=["functional", "defective"], help="the federation's classes")
    a.add_argument("--port", type=int, help="port of its local ClientApp API (default: a free one)")
    a.add_argument("--home", type=Path, default=Path("fed/supernode"), help="its Flower state folder (FLWR_HOME)")
    a.set_defaults(func=cmd_supernode, user_errors=user_errors)
    a = actions.add_parser("run", help="submit the app to a SuperLink, wait for the rounds, export the model")
    a.add_argument("--superlink", required=True, metavar="HOST:PORT")
    a.add_argument("--ca", type=Path, required=True, help="ca.crt the SuperLink's certificate is signed by")
    run_options(a)
    a.set_defaults(func=cmd_run, user_errors=user_errors)
    a = actions.add_parser("start", help="everything on this machine: a SuperLink, one SuperNode per site folder, "
                           "the run and the export")
    a.add_argument("--sites", type=Path, nargs="+", required=True, help="site folders (e.g. from edgefpga fed "
                   "partition)")
    a.add_argument("--certs", type=Path, required=True, help="folder made by edgefpga fed certs")
    run_options(a)
    a.set_defaults(func=cmd_start, user_errors=user_errors)
    a = actions.add_parser("export", help="a run's global model as a model folder with its card")
    a.add_argument("run", type=Path, help="the run folder the ServerApp wrote (<out>/run)")
    a.add_argument("model_out", type=Path, help="model folder to write")
    a.add_argument("--name", help="model name in the card")
    a.add_argument("--partition", type=Path, help="the sites' partition.json, recorded in the card")
    a.set_defaults(func=cmd_export, user_errors=user_errors)
