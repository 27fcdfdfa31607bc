#!/usr/bin/env python3
"""The production topology on loopback, without containers: nginx in front of N gateway replicas
(M workers each) sharing one Redis, every process on 127.0.0.1.

Rule: one config, pushed to Redis once with `onwards config push`, followed by every replica
(`--config-from-redis`); nginx spreads requests over the replicas and retries a refused connection
on the next one, so a replica that gets SIGTERM (and drains: serves on, then refuses) costs no
request; `restart_replica` also takes it out of nginx first, for gateways run without the drain.
Every process runs in its own process group and is stopped with it; logs and generated files live
in one state directory.

    python deploy/local/topology.py                        # examples/config.json, LB on :8080
    python deploy/local/topology.py -f my.json --replicas 3 --workers 2 --port 8080
    python deploy/local/topology.py --redis-url redis://127.0.0.1:6379/0   # use a running Redis

It runs until Ctrl-C (or SIGTERM), then stops everything. Needs nginx and redis-server (Debian:
`apt-get install -y nginx-light redis-server`) and the `onwards` package in the running Python.
The same class (`Topology`) drives the tests in tests/deploy/.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "examples" / "config.json"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def find_binary(name: str) -> str | None:
    """A Debian binary, also when /usr/sbin is not on PATH (nginx lives there)."""
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/usr/bin"):
        if os.access(f"{folder}/{name}", os.X_OK):
            return f"{folder}/{name}"
    return None


def child_pids(pid: int) -> list[int]:
    """Live children of `pid`, from /proc (Linux)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] not in ("Z", "X") and int(fields[1]) == pid:
                found.append(int(entry))
    return found


def http_status(port: int, path: str, timeout: float = 2.0) -> int | None:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def wait_for(check: Callable[[], bool], timeout: float, what: str, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if not alive():
            raise RuntimeError(f"{what}: the process exited")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready within {timeout:.0f} s")
        time.sleep(0.05)


class Proc:
    """One command in its own process group (so its workers stop with it), output to a log file."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.env = env
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM the main process only (as an orchestrator does), wait, then kill the group."""
        popen = self.popen
        if popen is None:
            return None
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)  # whatever is left of the group
        popen.wait(5)
        return popen.returncode

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Replica:
    index: int
    port: int
    metrics_port: int
    proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.metrics_port}/metrics"


def nginx_conf(state: Path, port: int, replicas: Sequence[Replica], out: frozenset[int] = frozenset()) -> str:
    """The load balancer's config; replicas whose index is in `out` are marked down (no new requests)."""
    servers = "\n".join(
        f"        server {LOOPBACK}:{r.port} max_fails=1 fail_timeout=2s{' down' if r.index in out else ''};"
        for r in replicas
    )
    return f"""\
# Generated by deploy/local/topology.py; deploy/compose/nginx.conf is the same with container names.
worker_processes 1;
daemon off;
pid {state}/nginx.pid;
error_log {state}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {state}/nginx-access.log;
    client_body_temp_path {state}/nginx-tmp/body;
    proxy_temp_path {state}/nginx-tmp/proxy;
    fastcgi_temp_path {state}/nginx-tmp/fastcgi;
    uwsgi_temp_path {state}/nginx-tmp/uwsgi;
    scgi_temp_path {state}/nginx-tmp/scgi;
    client_max_body_size 32m;
    client_body_buffer_size 1m;
    upstream onwards {{
{servers}
    }}
    server {{
        listen {LOOPBACK}:{port} backlog=4096;
        location / {{
            proxy_pass http://onwards;
            proxy_http_version 1.1;
            # No upstream keep-alive: a replica that shuts down then refuses new connections, which
            # nginx retries on the next replica, instead of closing a reused one under a request.
            proxy_set_header Connection close;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            # Streams go out event by event, and long ones are not cut.
            proxy_buffering off;
            proxy_read_timeout 600s;
            proxy_connect_timeout 2s;
            # Only failures before a request reached a replica are retried (POSTs are not replayed).
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;
        }}
    }}
}}
"""


@dataclass
class Topology:
    config: Path = DEFAULT_CONFIG
    port: int = 8080
    replicas: int = 2
    workers: int = 2
    redis_url: str | None = None  # None: start a private redis-server
    redis_port: int = 6390
    prefix: str = "onwards"
    first_port: int = 3001  # replica i listens on first_port + i
    first_metrics_port: int = 9091
    gateway_args: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    state_dir: Path | None = None
    nodes: list[Replica] = field(default_factory=list, init=False)
    redis_proc: Proc | None = field(default=None, init=False)
    nginx: Proc | None = field(default=None, init=False)
    _own_state: bool = field(default=False, init=False)
    _out: frozenset[int] = field(default=frozenset(), init=False)  # replicas taken out of nginx

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def redis_address(self) -> str:
        return self.redis_url or f"redis://{LOOPBACK}:{self.redis_port}/0"

    def _env(self) -> dict[str, str]:
        # The example config references ${OPENAI_API_KEY}; with none set it still loads.
        return {"OPENAI_API_KEY": "sk-none", **os.environ, "PYTHONUNBUFFERED": "1", **self.env}

    def start(self) -> Topology:
        if self.state_dir is None:
            self.state_dir = Path(tempfile.mkdtemp(prefix="onwards-local-"))
            self._own_state = True
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # nginx's workers may run as another user (when started as root): let them reach the dir.
        self.state_dir.chmod(0o755)
        try:
            if self.redis_url is None:
                self._start_redis()
            self.push_config(self.config)
            self.nodes = [
                Replica(i, self.first_port + i, self.first_metrics_port + i) for i in range(self.replicas)
            ]
            for node in self.nodes:
                self.start_replica(node.index)
            self._start_nginx()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_redis(self) -> None:
        binary = find_binary("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        assert self.state_dir is not None
        argv = [
            binary,
            "--bind",
            LOOPBACK,
            "--port",
            str(self.redis_port),
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        argv += ["--dir", str(self.state_dir)]
        self.redis_proc = Proc("redis", argv, self.state_dir / "redis.log", self._env()).start()
        ping = find_binary("redis-cli")

        def answers() -> bool:
            if ping is None:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection((LOOPBACK, self.redis_port), 1) as s,
                ):
                    s.sendall(b"PING\r\n")
                    return s.recv(16).startswith(b"+PONG")
                return False
            done = subprocess.run(
                [ping, "-p", str(self.redis_port), "ping"], capture_output=True, check=False
            )
            return done.stdout.strip() == b"PONG"

        wait_for(answers, START_TIMEOUT, "redis-server", self.redis_proc.alive)

    def push_config(self, path: Path | str) -> str:
        """`onwards config push`: validate and store the file; every replica follows. Returns its output."""
        argv = [sys.executable, "-m", "onwards", "config", "push", "-f", str(path)]
        argv += ["--redis-url", self.redis_address, "--prefix", self.prefix]
        done = subprocess.run(
            argv, cwd=REPO_ROOT, env=self._env(), capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"onwards config push failed: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout.strip()

    def start_replica(self, index: int) -> Replica:
        node = self.nodes[index]
        if node.proc is not None and node.proc.alive():
            raise RuntimeError(f"replica {index} is running")
        assert self.state_dir is not None
        argv = [sys.executable, "-m", "onwards", "--config-from-redis", "--redis-url", self.redis_address]
        argv += ["--redis-prefix", self.prefix, "--host", LOOPBACK, "-p", str(node.port)]
        argv += ["--workers", str(self.workers), "--metrics-host", LOOPBACK]
        argv += ["--metrics-port", str(node.metrics_port), *self.gateway_args]
        log = self.state_dir / f"replica-{index}.log"
        node.proc = Proc(f"replica-{index}", argv, log, self._env()).start()
        proc = node.proc
        try:
            wait_for(lambda: http_status(node.port, "/ready") == 200, START_TIMEOUT, proc.name, proc.alive)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{proc.tail()}") from None
        return node

    def stop_replica(self, index: int, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM one replica and wait for it to exit; returns its exit status."""
        node = self.nodes[index]
        return None if node.proc is None else node.proc.terminate(timeout)

    def restart_replica(self, index: int) -> int | None:
        """One step of a rolling restart: out of the load balancer, SIGTERM, start, back in.

        Taking the replica out first is what a Kubernetes Service does before SIGTERM (with the
        preStop wait). With the gateway's drain (--drain-secs > 0) a plain stop and start loses
        nothing either; without it, a replica that is shutting down still holds its listening
        socket, so a connection nginx opens in that moment sits in the backlog unanswered and is
        reset, and nginx does not replay a POST it already sent.
        """
        self.set_rotation(out=self._out | {index})
        status = self.stop_replica(index)
        self.start_replica(index)
        self.set_rotation(out=self._out - {index})
        return status

    def set_rotation(self, out: frozenset[int] | set[int]) -> None:
        """Reload nginx with the replicas in `out` marked down; returns when no nginx worker of the
        previous config is left (nginx lets those finish their requests, then they exit)."""
        assert self.nginx is not None and self.nginx.popen is not None and self.state_dir is not None
        self._out = frozenset(out)
        master = self.nginx.popen.pid
        before = set(child_pids(master))
        (self.state_dir / "nginx.conf").write_text(
            nginx_conf(self.state_dir, self.port, self.nodes, self._out)
        )
        os.kill(master, signal.SIGHUP)
        nginx = self.nginx
        wait_for(lambda: not before & set(child_pids(master)), STOP_TIMEOUT, "nginx reload", nginx.alive)

    def _start_nginx(self) -> None:
        binary = find_binary("nginx")
        if binary is None:
            raise RuntimeError("nginx is not installed (apt-get install -y nginx-light)")
        assert self.state_dir is not None
        (self.state_dir / "nginx-tmp").mkdir(exist_ok=True)
        (self.state_dir / "nginx-tmp").chmod(0o777)
        conf = self.state_dir / "nginx.conf"
        conf.write_text(nginx_conf(self.state_dir, self.port, self.nodes))
        # -e: otherwise nginx first opens its compiled-in error log under /var/log.
        argv = [
            binary,
            "-p",
            str(self.state_dir),
            "-e",
            str(self.state_dir / "nginx-error.log"),
            "-c",
            str(conf),
        ]
        self.nginx = Proc("nginx", argv, self.state_dir / "nginx.log", self._env()).start()
        nginx = self.nginx
        try:
            wait_for(lambda: http_status(self.port, "/health") == 200, START_TIMEOUT, "nginx", nginx.alive)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{nginx.tail()}") from None

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.terminate(10)
        for node in self.nodes:
            if node.proc is not None:
                node.proc.terminate()
        if self.redis_proc is not None:
            self.redis_proc.terminate(10)
        if self._own_state and self.state_dir is not None:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> Topology:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("-f", "--config", type=Path, default=DEFAULT_CONFIG, help="config pushed to Redis")
    p.add_argument("--port", type=int, default=8080, help="the load balancer's port (8080)")
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="workers per replica (2)")
    p.add_argument("--first-port", type=int, default=3001, help="replica i listens on this + i (3001)")
    p.add_argument("--first-metrics-port", type=int, default=9091, help="replica i's metrics (9091)")
    p.add_argument("--redis-url", help="use this Redis instead of starting one")
    p.add_argument("--redis-port", type=int, default=6390, help="port of the Redis started here (6390)")
    p.add_argument("--prefix", default="onwards", help="Redis key prefix (onwards)")
    p.add_argument("--state-dir", type=Path, help="logs and generated files (a temporary directory)")
    p.add_argument("gateway_args", nargs="*", help="extra gateway flags, after --")
    args = p.parse_args(argv)
    if args.replicas < 1 or args.workers < 1:
        p.error("--replicas and --workers must be at least 1")
    topo = Topology(
        config=args.config,
        port=args.port,
        replicas=args.replicas,
        workers=args.workers,
        redis_url=args.redis_url,
        redis_port=args.redis_port,
        prefix=args.prefix,
        first_port=args.first_port,
        first_metrics_port=args.first_metrics_port,
        gateway_args=args.gateway_args,
        state_dir=args.state_dir,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        topo.start()
    except RuntimeError as exc:
        print(f"topology: {exc}", file=sys.stderr)
        return 2
    try:
        print(f"load balancer  {topo.url}  (nginx)")
        for node in topo.nodes:
            print(f"replica {node.index}      {node.url}  metrics {node.metrics_url}")
        print(f"redis          {topo.redis_address}  (prefix {topo.prefix!r})")
        print(f"logs           {topo.state_dir}")
        push = f"onwards config push -f FILE --redis-url {topo.redis_address} --prefix {topo.prefix}"
        print(f"push a config  {push}")
        print("Ctrl-C stops everything.", flush=True)
        stop.wait()
    finally:
        topo.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
