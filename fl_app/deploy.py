"""Run the app unchanged on Flower's deployment engine, on this machine.

`python -m fl_app.deploy [--run-config '<k>=<v> ...' ...] [--insecure] [--log-dir DIR]`

One `flower-superlink` (deployment mode) and one `flower-supernode` per client (a state, or one
of its `clients-per-state` shards, given as --node-config state and shard), each a separate
process on 127.0.0.1 with its own FLWR_HOME under one temp dir; then `flwr run` against that
SuperLink, the ServerApp log streamed, the run's final status checked. Everything started here
(and every process those start) is stopped by pid at the end, also on Ctrl-C or failure.

TLS is on by default, with a throwaway CA and a certificate for 127.0.0.1 made in the temp dir;
`--insecure` runs without TLS. Exit 0 when the run finished:completed, 1 when it failed or the
federation did not come up, 2 on bad config or data (nothing started).
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
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
from flwr.common.config import get_fused_config_from_dir, parse_config_args

from clients.shards import client_ids
from clients.sources import resolve_source
from core.tasks import TASKS
from fl_app.config import parse_config
from fl_app.run_status import run_status

REPO = Path(__file__).resolve().parent.parent
CONNECTION = "fairfl-deploy"
STARTUP_TIMEOUT_S = 90.0
RUN_TIMEOUT_S = 3600.0
STOP_GRACE_S = 10.0


@dataclass
class Service:
    """A started SuperLink or SuperNode."""

    name: str
    port: int
    log: Path
    proc: subprocess.Popen


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plan(run_configs: list[str]) -> dict | None:
    """`python -m fl_app.check` exactly as run.sh runs it, plus the clients (one SuperNode each).

    None when the check failed (it has printed its one message). The codes come from resolving
    the pinned config the way the ServerApp will; the check itself reports only their number.
    """
    args = [a for rc in run_configs for a in ("--run-config", rc)]
    out = subprocess.run([sys.executable, "-m", "fl_app.check", *args], cwd=REPO, stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        return None
    the_plan = json.loads(out.stdout)
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

    now = datetime.now(timezone.utc)

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


def start(name: str, command: list[str], port: int, env: dict, home: Path, log: Path) -> Service:
    """Start one Flower process in its own session (so Ctrl-C reaches only us) and FLWR_HOME."""
    home.mkdir(parents=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env={**env, "FLWR_HOME": str(home)}, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    print(f"{name}: pid {proc.pid}, port {port}, log {log}", file=sys.stderr, flush=True)
    return Service(name, port, log, proc)


def wait_until(what: str, ready, services: list[Service], timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    """Poll ready() until true; fail early when one of the services exited."""
    started = time.monotonic()
    while not ready():
        for s in services:
            if s.proc.poll() is not None:
                raise RuntimeError(f"{s.name} exited with code {s.proc.returncode} while waiting for {what}; see {s.log}")
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(1.0)
    print(f"{what} after {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)


def superlink_healthy(port: int, ca: Path | None) -> bool:
    scheme, verify = ("http", True) if ca is None else ("https", str(ca))
    try:
        return httpx.get(f"{scheme}://127.0.0.1:{port}/health", verify=verify, timeout=2.0).is_success
    except httpx.HTTPError:
        return False


def online_supernodes(env: dict) -> int:
    out = subprocess.run(["flwr", "supernode", "ls", CONNECTION, "--format", "json"],
                         env=env, capture_output=True, text=True)
    try:
        return sum(n.get("status") == "online" for n in json.loads(out.stdout).get("nodes", []))
    except (json.JSONDecodeError, AttributeError):
        return 0


def write_cli_config(home: Path, port: int, ca: Path | None) -> None:
    """The `flwr` CLI's config.toml: one connection with the explicit address, made the default."""
    home.mkdir(parents=True)
    tls = "insecure = true" if ca is None else f"root-certificates = {json.dumps(str(ca))}"
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\naddress = "127.0.0.1:{port}"\n{tls}\n'
    )


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) of every process (Linux /proc; empty elsewhere)."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            table[int(stat.parent.name)] = (int(fields[1]), fields[0])
        except (OSError, IndexError, ValueError):
            continue
    return table


def _descendants(pids: set[int]) -> set[int]:
    """Every live (not zombie) descendant of pids."""
    table = _processes()
    found, todo = set(), list(pids)
    while todo:
        parent = todo.pop()
        for pid, (ppid, state) in table.items():
            if ppid == parent and state != "Z" and pid not in found:
                found.add(pid)
                todo.append(pid)
    return found


def _alive(pids: set[int]) -> set[int]:
    table = _processes()
    return {pid for pid in pids if pid in table and table[pid][1] != "Z"}


def _signal(pid: int, sig: int, group: bool = False) -> None:
    try:
        os.killpg(pid, sig) if group else os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop(services: list[Service]) -> list[int]:
    """SIGTERM everything this command started, and all they started; SIGKILL what is left.

    Walks the process tree from this process, not only from `services`, so a process whose
    Popen was interrupted by Ctrl-C before it was recorded is stopped too.
    """
    started = time.monotonic()
    tree = _descendants({os.getpid(), *(s.proc.pid for s in services)})  # snapshot: orphans move to init
    names = {pid: _name(pid) for pid in tree}
    for pid in tree:
        _signal(pid, signal.SIGTERM)
    for s in services:  # each runs in its own session: also what it spawned after the snapshot
        _signal(s.proc.pid, signal.SIGTERM, group=True)
    while _alive(tree) and time.monotonic() - started < STOP_GRACE_S:
        time.sleep(0.2)
        _reap()  # a dead parent must not stay a zombie: its children watch whether its pid exists
    left = _alive(tree | _descendants(tree))
    if left:
        print(f"still running after {STOP_GRACE_S:.0f} s, killing: {sorted(left)}", file=sys.stderr)
        for pid in left:
            _signal(pid, signal.SIGKILL)
    time.sleep(0.2)
    _reap()
    by_name: dict[str, list[int]] = {}
    for pid in sorted(tree):
        by_name.setdefault(names[pid], []).append(pid)
    print(f"stopped pids {' '.join(map(str, sorted(tree)))} in {time.monotonic() - started:.1f} s "
          f"({'; '.join(f'{n}: {len(p)}' for n, p in by_name.items())})", file=sys.stderr)
    return sorted(tree)


def _name(pid: int) -> str:
    """The program a process runs: `flower-supernode` rather than `python`."""
    try:
        argv = [Path(a).name for a in Path(f"/proc/{pid}/cmdline").read_text().split("\0") if a]
    except OSError:
        return "?"
    return (argv[1] if len(argv) > 1 and argv[0].startswith("python") else argv[0]) if argv else "?"


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def run_federation(run_configs: list[str], the_plan: dict, insecure: bool, tmp: Path, logs: Path,
                   services: list[Service]) -> bool:
    """Start the SuperLink and SuperNodes (appended to services), run the app, True when it completed."""
    env = {
        **os.environ,
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "PATH": f"{sysconfig.get_path('scripts')}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    if "FAIRFL_GIT_COMMIT" not in env:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
        env["FAIRFL_GIT_COMMIT"] = commit.stdout.strip() if commit.returncode == 0 else "unavailable"
    ca = None
    if insecure:
        link_tls = node_tls = ["--insecure"]
    else:
        ca, cert, key = make_loopback_certs(tmp)
        link_tls = ["--ssl-ca-certfile", str(ca), "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
        node_tls = ["--root-certificates", str(ca)]

    link_port = free_port()
    superlink = start("SuperLink", [
        "flower-superlink", *link_tls, "--host", "127.0.0.1", "--port", str(link_port),
        "--database", str(tmp / "superlink" / "state.db"), "--disable-runtime-dependency-installation",
    ], link_port, env, tmp / "superlink", logs / "superlink.log")
    services.append(superlink)
    wait_until("SuperLink API answering", lambda: superlink_healthy(link_port, ca), services)

    for client in the_plan["clients"]:
        port, label = free_port(), client["label"]
        services.append(start(f"SuperNode {label}", [
            "flower-supernode", *node_tls, "--superlink", f"127.0.0.1:{link_port}",
            "--node-config", f'state="{client["state"]}" shard={client["shard"]}', "--isolation", "subprocess",
            "--host", "127.0.0.1", "--port", str(port),
        ], port, env, tmp / f"supernode-{label}", logs / f"supernode-{label}.log"))

    cli_home = tmp / "cli"
    write_cli_config(cli_home, link_port, ca)
    env["FLWR_HOME"] = str(cli_home)
    n = len(the_plan["clients"])
    wait_until(f"{n} SuperNodes online", lambda: online_supernodes(env) == n, services)

    overrides = [a for rc in [*run_configs, the_plan["overrides"]] for a in ("--run-config", rc)]
    out = subprocess.run(["flwr", "run", str(REPO), CONNECTION, "--format", "json", *overrides],
                         cwd=REPO, env=env, capture_output=True, text=True)
    try:
        run_id = str(json.loads(out.stdout)["run-id"])
    except (json.JSONDecodeError, KeyError):
        print(f"flwr run did not start:\n{out.stdout}{out.stderr}", file=sys.stderr)
        return False
    print(f"run {run_id} started on {n} SuperNodes ({','.join(c['label'] for c in the_plan['clients'])})", file=sys.stderr, flush=True)
    subprocess.run(["flwr", "log", run_id, CONNECTION, "--stream"], cwd=REPO, env=env)
    os.environ.update(FLWR_HOME=env["FLWR_HOME"], PATH=env["PATH"])  # run_status calls `flwr ls` itself
    status = run_status(run_id, timeout_s=RUN_TIMEOUT_S)
    print(f"run {run_id}: {status}", file=sys.stderr)
    return status == "finished:completed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fl_app.deploy", description=__doc__.splitlines()[0])
    parser.add_argument("--run-config", "-c", action="append", default=[], help="as for flwr run (repeatable)")
    parser.add_argument("--insecure", action="store_true", help="no TLS between the processes (loopback only)")
    parser.add_argument("--log-dir", type=Path, help="write the SuperLink/SuperNode logs here and keep them")
    args = parser.parse_args(argv)

    the_plan = plan(args.run_config)
    if the_plan is None:
        return 2
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="fairfl-deploy-"))
    logs = args.log_dir.resolve() if args.log_dir else tmp / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"deployment: {len(the_plan['clients'])} SuperNodes, {'no TLS' if args.insecure else 'TLS (throwaway CA)'}, "
          f"temp dir {tmp}, results in {the_plan['results_dir']}", file=sys.stderr, flush=True)
    services: list[Service] = []
    ok = False
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        ok = run_federation(args.run_config, the_plan, args.insecure, tmp, logs, services)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second Ctrl-C/TERM must not cut the teardown short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop(services)
        if not ok and not args.log_dir and services:  # keep the evidence
            logs = Path(shutil.move(str(logs), tempfile.mkdtemp(prefix="fairfl-deploy-logs-")))
        shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if not ok:
        print(f"the run did not complete; SuperLink/SuperNode logs in {logs}", file=sys.stderr)
        return 1
    kept = f"in {logs}" if args.log_dir else "removed (keep them with --log-dir DIR)"
    print(f"deployment run completed in {time.monotonic() - started:.0f} s; SuperLink/SuperNode logs {kept}",
          file=sys.stderr)
    print(f"results: {the_plan['results_dir']}")
    return 0


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
