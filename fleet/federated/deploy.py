"""Sites as processes on Flower's deployment engine: a SuperLink, one SuperNode per site, and
``flwr run`` submitting the app; TLS throughout. No simulation engine (it needs Ray).

The same functions serve one machine (``edgefpga fed start``: everything on loopback, the test
and the bench) and many (``edgefpga fed superlink`` on the server, ``edgefpga fed supernode`` at
each site, ``edgefpga fed run`` from anywhere that can reach the SuperLink). Flower's tools run
from this Python's ``bin/`` (the SuperLink and SuperNodes start ``flower-superexec`` by name).
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

from .certs import CA_CERT, SERVER_CERT, SERVER_KEY
from .task import FederationError, RunSettings, site_data

APP_DIR = Path(__file__).resolve().parent / "app"  # the Flower app config (pyproject.toml)
SECAGG_APP_DIR = Path(__file__).resolve().parent / "app_secagg"  # the same with SecAgg+ (secagg.py)
CONNECTION = "edgefpga"  # the SuperLink connection's name in $FLWR_HOME/config.toml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flower_env(home: Path) -> dict[str, str]:
    """Flower's tools on PATH, its state under ``home`` (FLWR_HOME), one thread per process."""
    bin_dir = str(Path(sys.executable).parent)
    return dict(os.environ, PATH=os.pathsep.join([bin_dir, os.environ.get("PATH", "")]), FLWR_HOME=str(home),
                OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.is_file():
        raise FederationError(f"{path}: missing; install the federated extra: pip install 'edgefpga[fed]'")
    return str(path)


def superlink_command(certs: Path, host: str, port: int) -> list[str]:
    """flower-superlink serving the Fleet, Control and Runtime APIs over TLS on ``host:port``."""
    for name in (CA_CERT, SERVER_CERT, SERVER_KEY):
        if not (certs / name).is_file():
            raise FederationError(f"{certs / name}: missing; make the certificates with "
                                  f"edgefpga fed certs --out {certs}")
    return [tool("flower-superlink"), "--ssl-ca-certfile", str(certs / CA_CERT), "--ssl-certfile",
            str(certs / SERVER_CERT), "--ssl-keyfile", str(certs / SERVER_KEY), "--host", host, "--port", str(port),
            "--disable-runtime-dependency-installation"]


def supernode_command(superlink: str, ca: Path, data: Path, site: str, port: int) -> list[str]:
    """flower-supernode for one site: trusts ``ca`` only, tells its ClientApp where the data is."""
    config = f'data-dir="{data.resolve()}" site="{site}"'
    return [tool("flower-supernode"), "--superlink", superlink, "--root-certificates", str(ca), "--node-config",
            config, "--port", str(port)]


def check_tls(superlink: str, ca: Path, timeout: float = 10.0) -> None:
    """Dial the SuperLink and verify its certificate against ``ca`` before starting a SuperNode:
    with a wrong CA, Flower's SuperNode retries forever; this says why, once."""
    host, _, port = superlink.rpartition(":")
    if not ca.is_file():
        raise FederationError(f"{ca}: no such CA certificate (copy ca.crt from the SuperLink's edgefpga fed certs)")
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=host):
                return
    except ssl.SSLCertVerificationError as exc:
        raise FederationError(f"{superlink}: the SuperLink's certificate is not trusted by {ca} "
                              f"({exc.verify_message}): use the ca.crt made with the SuperLink's certificate") from exc
    except ssl.SSLError as exc:
        raise FederationError(f"{superlink}: TLS handshake failed ({exc.reason}): is it a SuperLink with TLS?") from exc
    except OSError as exc:
        raise FederationError(f"{superlink}: cannot connect ({exc.strerror or exc}): is the SuperLink "
                              "running?") from exc


def check_site(data: Path, settings: RunSettings) -> int:
    """Refuse a site folder the ClientApp could not train on, before its SuperNode starts."""
    found = site_data(data, settings)
    return len(found.split.fit)


def spawn(command: list[str], home: Path, log: Path) -> subprocess.Popen:
    """Start a Flower process in its own session (so stopping it stops its SuperExec children)."""
    home.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(command, env=flower_env(home), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_listening(superlink: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    """Until the SuperLink accepts connections (or its process ended: its log says why)."""
    host, _, port = superlink.rpartition(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise FederationError(f"the SuperLink exited ({proc.returncode}); its log: {log}")
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise FederationError(f"the SuperLink did not listen on {superlink} within {timeout:.0f} s; its log: {log}")


def write_connection(home: Path, superlink: str, ca: Path) -> None:
    """``flwr``'s SuperLink connection (``$FLWR_HOME/config.toml``): address and trusted CA."""
    import tomli_w

    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(tomli_w.dumps({"superlink": {
        "default": CONNECTION, CONNECTION: {"address": superlink, "root-certificates": str(ca.resolve())}}}))


def submit(superlink: str, ca: Path, home: Path, run_config: dict, log: Path, timeout: float | None = None,
           app: Path = APP_DIR) -> None:
    """``flwr run`` the app with ``run_config`` and stream its log into ``log`` until it ends."""
    import tomli_w

    write_connection(home, superlink, ca)
    overrides = home / "run-config.toml"
    overrides.write_text(tomli_w.dumps(run_config))
    command = [tool("flwr"), "run", str(app), CONNECTION, "--stream", "--run-config", str(overrides)]
    with open(log, "ab") as out:
        done = subprocess.run(command, env=flower_env(home), stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    if done.returncode:
        raise FederationError(f"flwr run ended with status {done.returncode}; its log: {log}")
    check_finished(Path(run_config["out-dir"]), int(run_config["rounds"]), log)


def check_finished(out: Path, rounds: int, log: Path) -> dict:
    """The run's history, which must hold every round: ``flwr run --stream`` ends with status 0
    even when the ServerApp raised, so its own record is what says the run finished."""
    import json

    history = out / "history.json"
    done = json.loads(history.read_text())["rounds"] if history.is_file() else []
    if len(done) < rounds + 1:  # round 0 is the initial model's evaluation
        errors = [line for line in log.read_text(errors="replace").splitlines() if "Error" in line or "ERROR" in line]
        raise FederationError(f"the run ended after {max(len(done) - 1, 0)} of {rounds} rounds"
                              + (f": {errors[-1].strip()}" if errors else "") + f"; its log: {log}")
    return json.loads(history.read_text())


def run_config_of(settings: RunSettings) -> dict:
    """RunSettings back to the app config's kebab-case keys (lists as comma-separated strings)."""
    out = {}
    for key, value in settings.__dict__.items():
        if isinstance(value, tuple):
            value = ",".join(str(v) for v in value)
        out[key.replace("_", "-")] = value
    return out


class LocalFederation:
    """A SuperLink and one SuperNode per site on this machine's loopback, over TLS: what
    ``edgefpga fed start``, the test and the bench run. Each process logs into ``work/logs``
    and keeps its Flower state in ``work/home/<name>``; leaving the ``with`` block stops them."""

    def __init__(self, work: Path, certs: Path, sites: dict[str, Path], host: str = "127.0.0.1"):
        self.work, self.certs, self.sites = Path(work), Path(certs), dict(sites)
        self.superlink = f"{host}:{free_port()}"
        self.procs: dict[str, subprocess.Popen] = {}

    def log(self, name: str) -> Path:
        return self.work / "logs" / f"{name}.log"

    def __enter__(self) -> "LocalFederation":
        host, _, port = self.superlink.rpartition(":")
        self.procs["superlink"] = spawn(superlink_command(self.certs, host, int(port)), self.work / "home" /
                                        "superlink", self.log("superlink"))
        try:
            wait_listening(self.superlink, self.procs["superlink"], self.log("superlink"))
            check_tls(self.superlink, self.certs / CA_CERT)
            for site in self.sites:
                self.start_site(site)
        except BaseException:
            self.__exit__()
            raise
        return self

    def start_site(self, site: str) -> subprocess.Popen:
        """(Re)start a site's SuperNode: a restarted site rejoins at the next round it is sampled."""
        command = supernode_command(self.superlink, self.certs / CA_CERT, self.sites[site], site, free_port())
        self.procs[site] = spawn(command, self.work / "home" / site, self.log(site))
        return self.procs[site]

    def kill(self, site: str) -> None:
        """A site dropping out: its SuperNode and ClientApp killed, no goodbye to the SuperLink."""
        proc = self.procs[site]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def run(self, settings: RunSettings, timeout: float | None = None, app: Path = APP_DIR) -> None:
        submit(self.superlink, self.certs / CA_CERT, self.work / "home" / "flwr", run_config_of(settings),
               self.log("run"), timeout, app)

    def __exit__(self, *exc) -> None:
        for name in [n for n in self.procs if n != "superlink"] + ["superlink"]:
            if name in self.procs:
                stop(self.procs[name])
