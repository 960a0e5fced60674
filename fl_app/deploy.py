"""Run the app unchanged on Flower's deployment engine, on this machine.

`python -m fl_app.deploy [--run-config '<k>=<v> ...' ...] [--insecure] [--auth] [--restart-dead] [--log-dir DIR]`

One `flower-superlink` (deployment mode) and one `flower-supernode` per client (a state, or one
of its `clients-per-state` shards, given as --node-config state and shard), each a separate
process on 127.0.0.1 with its own FLWR_HOME under one temp dir; then `flwr run` against that
SuperLink, the ServerApp log streamed, the run's final status checked. Everything started here
(and every process those start) is stopped by pid at the end, also on Ctrl-C, SIGTERM or failure.

TLS is on by default, with a throwaway CA and a certificate for 127.0.0.1 made in the temp dir;
`--insecure` runs without TLS. `--auth` turns on SuperNode authentication: one key per client,
registered with the SuperLink, and the printed node ids bound to their states (`node-states`).
`--restart-dead` restarts a SuperNode that exits during the run, with the same command line.
Exit 0 when the run finished:completed, 1 when it failed or the federation did not come up,
2 on bad config or data (nothing started), 130 after SIGINT and 143 after SIGTERM.
Logs: in the temp dir, kept (moved to a new dir, path printed) only when something failed;
`--log-dir DIR` keeps them in DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from flwr.common.config import get_fused_config_from_dir, parse_config_args

from clients.shards import client_ids
from clients.sources import resolve_source
from core.tasks import TASKS
from fl_app.app_copy import copy_app
from fl_app.config import parse_config
from fl_app.processes import STOP_GRACE_S, stop_tree, summary, with_env
from fl_app.run_status import parse_status

REPO = Path(__file__).resolve().parent.parent
CONNECTION = "fairfl-deploy"
STARTUP_TIMEOUT_S = 180.0
RUN_TIMEOUT_S = 3600.0
RESTART_LIMIT = 5  # restarts per SuperNode with --restart-dead: a node that keeps dying is left dead
POLL_S = 0.2  # how often waits look at the processes and the signals
# Flower's documented poll interval of SuperExec (default 1 s): a SuperNode's messages start sooner.
FLOWER_POLL_ENV = {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.2"}


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived: stop what was started and exit 128 + the signal number."""


class Signals:
    """SIGINT and SIGTERM only set a flag (and wake the waits); the code raises `Interrupted` where
    it waits, so no signal ever lands inside a Popen or the teardown, and no inherited disposition
    (a background job ignores SIGINT) decides what Ctrl-C does."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.event = threading.Event()

    def install(self) -> Signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        note = ("stopping everything started" if not self.received else "already stopping; ignored until done")
        self.received.append(signum)
        self.event.set()
        os.write(2, f"{name} received: {note}\n".encode())  # unbuffered: safe inside a handler

    def check(self) -> None:
        if self.received:
            raise Interrupted(signal.Signals(self.received[0]).name)

    def wait(self, seconds: float) -> None:
        """Sleep up to `seconds`, or until a signal arrives (then raise Interrupted)."""
        self.event.wait(seconds)
        self.check()

    def exit_code(self) -> int | None:
        return 128 + self.received[0] if self.received else None


class NoSignals(Signals):
    """For library use (tests): nothing installed, nothing interrupts."""

    def install(self) -> Signals:
        return self


def run_command(command: list[str], signals: Signals, **popen) -> subprocess.CompletedProcess:
    """subprocess.run that a signal interrupts: the child is stopped, then Interrupted raised."""
    with subprocess.Popen(command, **popen) as proc:
        result: list[tuple] = []
        reader = threading.Thread(target=lambda: result.append(proc.communicate()), daemon=True)
        reader.start()
        while reader.is_alive():
            reader.join(POLL_S)
            if signals.received:
                proc.kill()
                reader.join()
                signals.check()
        out, err = result[0]
        return subprocess.CompletedProcess(command, proc.returncode, out, err)


@dataclass
class Service:
    """A started SuperLink or SuperNode, and how to start it again."""

    name: str
    port: int
    log: Path
    proc: subprocess.Popen
    command: list[str] = field(default_factory=list)
    home: Path | None = None
    restarts: int = 0  # how many times --restart-dead started this SuperNode again


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plan(run_configs: list[str], signals: Signals | None = None) -> dict | None:
    """`python -m fl_app.check` exactly as run.sh runs it, plus the clients (one SuperNode each).

    None when the check failed (it has printed its one message). The codes come from resolving
    the pinned config the way the ServerApp will; the check itself reports only their number.
    """
    args = [a for rc in run_configs for a in ("--run-config", rc)]
    out = run_command([sys.executable, "-m", "fl_app.check", *args], signals or NoSignals(), cwd=REPO,
                      stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        return None
    the_plan = json.loads(out.stdout)
    the_plan["results_dir"] = the_plan["results_dir"] or " ".join(the_plan["replicates"])  # replicates: theirs
    config = parse_config(get_fused_config_from_dir(REPO, parse_config_args([*run_configs, the_plan["overrides"]])))
    source = resolve_source(config.data_source, config.data_path, config.data_dir, config.states, TASKS[config.task])
    clients = client_ids(source.states, config.clients_per_state)
    the_plan["clients"] = [{"state": c.state, "shard": c.shard, "label": c.label} for c in clients]
    assert len(clients) == the_plan["num_clients"], (clients, the_plan)
    return the_plan


def make_loopback_certs(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost: (ca, cert, key) PEM files."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)

    def builder(subject: str, issuer: str, public_key) -> x509.CertificateBuilder:
        name = lambda cn: x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])  # noqa: E731
        return (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=2)))

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (builder("fairfl throwaway CA", "fairfl throwaway CA", ca_key.public_key())
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (builder("127.0.0.1", "fairfl throwaway CA", key.public_key())
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.crt", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths


def make_node_key(directory: Path, name: str) -> tuple[Path, Path]:
    """A SuperNode's authentication key (EC P-384, OpenSSH format, as `ssh-keygen -t ecdsa -b 384`
    makes it): (private key, public key) files."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    private, public = directory / name, directory / f"{name}.pub"
    directory.mkdir(parents=True, exist_ok=True)
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    private.chmod(0o600)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    return private, public


def superlink_healthy(port: int, ca: Path | None) -> bool:
    scheme, verify = ("http", True) if ca is None else ("https", ssl.create_default_context(cafile=str(ca)))
    try:
        return httpx.get(f"{scheme}://127.0.0.1:{port}/health", verify=verify, timeout=2.0).is_success
    except httpx.HTTPError:
        return False


def write_cli_config(home: Path, port: int, ca: Path | None) -> None:
    """The `flwr` CLI's config.toml: one connection with the explicit address, made the default."""
    home.mkdir(parents=True)
    tls = "insecure = true" if ca is None else f"root-certificates = {json.dumps(str(ca))}"
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\naddress = "127.0.0.1:{port}"\n{tls}\n'
    )


def node_config(client: dict) -> str:
    return f'state="{client["state"]}" shard={client["shard"]}'


class Federation:
    """The processes of one local deployment: start them, run the app on them, stop them all.

    `own_tree` (the CLI) also stops every other process this process started; a library user
    (a test) stops only the services and what they started.
    """

    def __init__(self, tmp: Path, logs: Path, insecure: bool, signals: Signals | None = None,
                 own_tree: bool = False) -> None:
        self.tmp, self.logs, self.insecure = tmp, logs, insecure
        self.signals = signals or NoSignals()
        self.own_tree = own_tree
        self.services: list[Service] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.supervisor: threading.Thread | None = None
        self.env = {
            **os.environ,
            **{k: os.environ.get(k, v) for k, v in FLOWER_POLL_ENV.items()},
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "PATH": f"{sysconfig.get_path('scripts')}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        if "FAIRFL_GIT_COMMIT" not in self.env:
            commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
            self.env["FAIRFL_GIT_COMMIT"] = commit.stdout.strip() if commit.returncode == 0 else "unavailable"
        self.ca: Path | None = None
        if insecure:
            self.link_tls = self.node_tls = ["--insecure"]
        else:
            self.ca, cert, key = make_loopback_certs(tmp)
            self.link_tls = ["--ssl-ca-certfile", str(self.ca), "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
            self.node_tls = ["--root-certificates", str(self.ca)]
        self.link_port = 0
        self.cli_home = tmp / "cli"

    # -- processes ---------------------------------------------------------------------------
    def start(self, name: str, command: list[str], port: int, home: Path, log: Path, restarts: int = 0) -> Service:
        """Start one Flower process in its own session (so Ctrl-C reaches only us) and FLWR_HOME;
        a restart appends to the same log."""
        home.mkdir(parents=True, exist_ok=True)
        with log.open("ab" if restarts else "wb") as out:
            proc = subprocess.Popen(command, env={**self.env, "FLWR_HOME": str(home)}, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        service = Service(name, port, log, proc, command, home, restarts)
        with self.lock:
            self.services.append(service)
        print(f"{name}: pid {proc.pid}, port {port}, log {log}", file=sys.stderr, flush=True)
        return service

    def start_superlink(self, auth: bool = False) -> Service:
        self.link_port = free_port()
        link = self.start("SuperLink", [
            "flower-superlink", *self.link_tls, "--host", "127.0.0.1", "--port", str(self.link_port),
            "--database", str(self.tmp / "superlink" / "state.db"), "--disable-runtime-dependency-installation",
            *(["--enable-supernode-auth"] if auth else []),
        ], self.link_port, self.tmp / "superlink", self.logs / "superlink.log")
        self.wait_until("SuperLink API answering", lambda: superlink_healthy(self.link_port, self.ca))
        write_cli_config(self.cli_home, self.link_port, self.ca)
        return link

    def start_supernode(self, label: str, config: str, key: Path | None = None) -> Service:
        port = free_port()
        return self.start(f"SuperNode {label}", [
            "flower-supernode", *self.node_tls, "--superlink", f"127.0.0.1:{self.link_port}",
            "--node-config", config, "--isolation", "subprocess", "--host", "127.0.0.1", "--port", str(port),
            *(["--auth-supernode-private-key", str(key)] if key else []),
        ], port, self.tmp / f"supernode-{label}", self.logs / f"supernode-{label}.log")

    def supernodes(self) -> list[Service]:
        """The current process of every SuperNode (the latest, after restarts)."""
        with self.lock:
            latest = {s.name: s for s in self.services if s.name.startswith("SuperNode ")}
        return list(latest.values())

    def wait_until(self, what: str, ready, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Poll ready() until true; fail early when a service exited; a signal interrupts."""
        started = time.monotonic()
        while not ready():
            for s in self.supernodes() + [s for s in self.services if s.name == "SuperLink"]:
                if s.proc.poll() is not None:
                    raise RuntimeError(f"{s.name} exited with code {s.proc.returncode} while waiting for {what}; "
                                       f"see {s.log}")
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            self.signals.wait(POLL_S * 5)
        print(f"{what} after {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)

    def supervise(self) -> None:
        """`--restart-dead`: from now on, a SuperNode that exits is started again (same command line)."""
        def watch() -> None:
            given_up: set[str] = set()
            while not self.stopping.wait(POLL_S):
                for node in self.supernodes():
                    code = node.proc.poll()
                    if code is None or node.name in given_up or self.stopping.is_set() or self.signals.received:
                        continue
                    if node.restarts >= RESTART_LIMIT:
                        print(f"{node.name} exited with code {code} after {RESTART_LIMIT} restarts; left stopped",
                              file=sys.stderr, flush=True)
                        given_up.add(node.name)
                        continue
                    print(f"{node.name} exited with code {code}; restarting it ({node.restarts + 1} of "
                          f"{RESTART_LIMIT})", file=sys.stderr, flush=True)
                    self.start(node.name, node.command, node.port, node.home, node.log, node.restarts + 1)

        self.supervisor = threading.Thread(target=watch, name="restart-dead", daemon=True)
        self.supervisor.start()

    # -- the flwr CLI ------------------------------------------------------------------------
    def cli(self, *args: str, **popen) -> subprocess.CompletedProcess:
        env = {**self.env, "FLWR_HOME": str(self.cli_home)}
        return run_command(["flwr", *args], self.signals, cwd=REPO, env=env, **popen)

    def register(self, public_key: Path) -> int:
        """`flwr supernode register KEY.pub`: the node id the SuperLink gives that key."""
        out = self.cli("supernode", "register", str(public_key), CONNECTION, "--format", "json",
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            return int(json.loads(out.stdout)["node-id"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise RuntimeError(f"flwr supernode register {public_key} failed:\n{out.stdout}{out.stderr}") from None

    def online_supernodes(self) -> int:
        out = self.cli("supernode", "ls", CONNECTION, "--format", "json", stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
        try:
            return sum(n.get("status") == "online" for n in json.loads(out.stdout).get("nodes", []))
        except (json.JSONDecodeError, AttributeError):
            return 0

    def wait_online(self, n: int) -> None:
        self.wait_until(f"{n} SuperNodes online", lambda: self.online_supernodes() == n)

    def submit(self, run_configs: list[str]) -> str:
        """`flwr run` of the app (fl_app/app_copy.py) against this SuperLink: the run id."""
        overrides = [a for rc in run_configs for a in ("--run-config", rc)]
        app = self.tmp / "app"  # the checkout's packaged files alone: `flwr run` walks every file it is given
        if not app.exists():
            copy_app(REPO, app)
        out = self.cli("run", str(app), CONNECTION, "--format", "json", *overrides, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
        try:
            return str(json.loads(out.stdout)["run-id"])
        except (json.JSONDecodeError, KeyError):
            raise RuntimeError(f"flwr run did not start:\n{out.stdout}{out.stderr}") from None

    def stream(self, run_id: str, **popen) -> None:
        """The ServerApp's log until the run ends (on this process's stdout unless redirected)."""
        self.cli("log", run_id, CONNECTION, "--stream", **popen)

    def status(self, run_id: str, timeout_s: float = RUN_TIMEOUT_S) -> str:
        """The run's final status (`flwr log --stream` ends with the run, but says nothing of how)."""
        deadline = time.monotonic() + timeout_s
        while True:
            out = self.cli("ls", "--run-id", run_id, "--format", "json", stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
            status = parse_status(out.stdout)
            if status.startswith("finished") or time.monotonic() > deadline:
                return status
            self.signals.wait(2.0)

    # -- teardown ----------------------------------------------------------------------------
    def stop(self) -> list[int]:
        """SIGTERM everything started, and all they started; SIGKILL what is left after the grace.

        Also stops what left a service's session (a SuperExec orphaned by a killed SuperNode),
        any process that still has a service's FLWR_HOME in its environment, and with `own_tree`
        any other process this one started (fl_app/processes.py).
        """
        self.stopping.set()
        if self.supervisor is not None:
            self.supervisor.join()
        started = time.monotonic()
        sessions = {s.proc.pid for s in self.services}
        homes = {f"FLWR_HOME={home}" for home in [self.cli_home, *(s.home for s in self.services)]}
        names = stop_tree(sessions | ({os.getpid()} if self.own_tree else set()), sessions, STOP_GRACE_S,
                          lambda: with_env(homes))
        print(summary(names, time.monotonic() - started), file=sys.stderr, flush=True)
        return sorted(names)


def run_federation(run_configs: list[str], the_plan: dict, fed: Federation, auth: bool = False,
                   restart_dead: bool = False) -> bool:
    """Start the SuperLink and the SuperNodes, run the app, True when it completed."""
    fed.start_superlink(auth=auth)
    keys: dict[str, Path] = {}
    bindings: list[str] = []
    if auth:
        for client in the_plan["clients"]:
            private, public = make_node_key(fed.tmp / "keys", f"supernode-{client['label']}")
            node_id = fed.register(public)
            print(f"SuperNode {client['label']}: key {public} registered as node {node_id}", file=sys.stderr, flush=True)
            keys[client["label"]] = private
            bindings.append(f"{node_id}={client['state']}")
    for client in the_plan["clients"]:
        fed.signals.check()
        fed.start_supernode(client["label"], node_config(client), keys.get(client["label"]))
    n = len(the_plan["clients"])
    fed.wait_online(n)
    if restart_dead:
        fed.supervise()
    extra = [f'node-states="{",".join(bindings)}"'] if auth else []
    run_id = fed.submit([*run_configs, the_plan["overrides"], *extra])
    labels = ",".join(c["label"] for c in the_plan["clients"])
    print(f"run {run_id} started on {n} SuperNodes ({labels})", file=sys.stderr, flush=True)
    fed.stream(run_id)
    status = fed.status(run_id)
    print(f"run {run_id}: {status}", file=sys.stderr, flush=True)
    return status == "finished:completed"


def main(argv: list[str] | None = None) -> int:
    signals = Signals().install()
    parser = argparse.ArgumentParser(prog="python -m fl_app.deploy", description=__doc__.splitlines()[0])
    parser.add_argument("--run-config", "-c", action="append", default=[], help="as for flwr run (repeatable)")
    parser.add_argument("--insecure", action="store_true", help="no TLS between the processes (loopback only)")
    parser.add_argument("--auth", action="store_true",
                        help="SuperNode authentication: a registered key per client, node ids bound to states")
    parser.add_argument("--restart-dead", action="store_true", help="restart a SuperNode that exits during the run")
    parser.add_argument("--log-dir", type=Path, help="write the SuperLink/SuperNode logs here and keep them")
    args = parser.parse_args(argv)
    if args.auth and args.insecure:
        print("error: --auth needs TLS (SuperNode authentication is refused without it); drop --insecure",
              file=sys.stderr)
        return 2
    try:
        the_plan = plan(args.run_config, signals)
    except Interrupted as stop:
        print(f"interrupted by {stop} before anything was started", file=sys.stderr)
        return signals.exit_code()
    if the_plan is None:
        return 2
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="fairfl-deploy-"))
    logs = args.log_dir.resolve() if args.log_dir else tmp / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"deployment: {len(the_plan['clients'])} SuperNodes, {'no TLS' if args.insecure else 'TLS (throwaway CA)'}"
          f"{', SuperNode authentication' if args.auth else ''}, temp dir {tmp}, results in {the_plan['results_dir']}",
          file=sys.stderr, flush=True)
    ok = False
    fed = Federation(tmp, logs, args.insecure, signals, own_tree=True)
    try:
        ok = run_federation(args.run_config, the_plan, fed, args.auth, args.restart_dead)
    except Interrupted as stop:
        print(f"interrupted by {stop}", file=sys.stderr)
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
    finally:
        fed.stop()
        if not ok and not args.log_dir and fed.services:  # keep the evidence
            logs = Path(shutil.move(str(logs), tempfile.mkdtemp(prefix="fairfl-deploy-logs-")))
        shutil.rmtree(tmp, ignore_errors=True)
    code = signals.exit_code()
    if code is not None:
        print(f"stopped by {signal.Signals(code - 128).name} (exit {code}); results so far in "
              f"{the_plan['results_dir']} (a run with a completed round continues with resume=\"...\"); "
              f"SuperLink/SuperNode logs in {logs}", file=sys.stderr)
        return code
    if not ok:
        print(f"the run did not complete; SuperLink/SuperNode logs in {logs}", file=sys.stderr)
        return 1
    kept = f"in {logs}" if args.log_dir else "removed (keep them with --log-dir DIR)"
    print(f"deployment run completed in {time.monotonic() - started:.0f} s; SuperLink/SuperNode logs {kept}",
          file=sys.stderr)
    write_report(the_plan["results_dir"])
    print(f"results: {the_plan['results_dir']}")
    return 0


def write_report(results: str) -> None:
    """The same `report/` as `./run.sh run` writes after a run (FAIRFL_NO_REPORT=1 skips it)."""
    if os.environ.get("FAIRFL_NO_REPORT") == "1":
        return
    done = subprocess.run([sys.executable, "-m", "analysis.report", results, "--out", str(Path(results) / "report")],
                          cwd=REPO, stdout=subprocess.DEVNULL, check=False)
    print(f"report: {Path(results) / 'report' / 'report.md'}" if done.returncode == 0
          else "the report could not be written (the results are complete)", file=sys.stderr)


if __name__ == "__main__":
    exit_code = main()
    for late in (signal.SIGINT, signal.SIGTERM):  # one after the teardown must not turn the exit code into -2
        signal.signal(late, signal.SIG_IGN)
    sys.exit(exit_code)
