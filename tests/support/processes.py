"""Run real processes (the gateway, the stand-alone mock upstream) with bounded waits and sure cleanup.

Every process starts in its own session, hence its own process group, so stopping it reaches the
workers it forked as well; whatever is still in the group after the grace period is killed. Output goes
to a temporary file that ``output()`` returns for assertion messages, because a pipe nobody reads would
eventually block a chatty process.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self, TypeVar

import redis

REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
# The tail of a log that goes into an exception message; whole logs of a crashed run can be huge.
_OUTPUT_LIMIT = 20_000
# How a child started by multiprocessing's "spawn" method shows up in its command line.
_SPAWNED_CHILD = "--multiprocessing-fork"

T = TypeVar("T")


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago (the OS picks it; another process could still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_until(
    predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.05, message: str | None = None
) -> T:
    """Call ``predicate`` until it returns something truthy and return that; TimeoutError after ``timeout``.

    The predicate is always tried once more at the deadline, so a slow last poll cannot cause a failure.
    """
    if timeout < 0 or interval <= 0:
        raise ValueError(f"need timeout >= 0 and interval > 0, got timeout={timeout} interval={interval}")
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(message or f"condition {predicate!r} not met within {timeout}s")
        time.sleep(min(interval, remaining))


def redis_available(url: str, timeout: float = 0.5) -> bool:
    """True when a Redis server at ``url`` answers PING within ``timeout`` seconds.

    A malformed URL raises ValueError instead of returning False: silently skipping every Redis test
    because of a typo in REDIS_URL would hide the typo.
    """
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def http_status(host: str, port: int, path: str, timeout: float = 1.0) -> int | None:
    """The status of ``GET path``, or None when nothing answered properly."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


class ProcessStartError(RuntimeError):
    """A managed process exited or never became ready; the message carries its output."""


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgrp) of ``pid`` from /proc, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name sits in parentheses and may itself contain spaces or ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _live_pids() -> list[tuple[int, str, int, int]]:
    """Every live (non-zombie) process as (pid, state, ppid, pgrp)."""
    rows = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None and stat[0] not in ("Z", "X"):
                rows.append((int(entry), *stat))
    return rows


def group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid`` (zombies left for someone else to reap are ignored)."""
    return sorted(pid for pid, _state, _ppid, pgrp in _live_pids() if pgrp == pgid)


def child_pids(pid: int) -> list[int]:
    """Live direct children of ``pid``."""
    return sorted(child for child, _state, ppid, _pgrp in _live_pids() if ppid == pid)


_running: set[ManagedProcess] = set()


@atexit.register
def _stop_leftovers() -> None:
    # Last line of defence when a test run is interrupted before fixtures tear down.
    for process in list(_running):
        process.stop()


class ManagedProcess:
    """One command run in its own process group with output captured to a temporary file."""

    label = "process"
    startup_timeout = STARTUP_TIMEOUT

    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> None:
        self.argv = [str(part) for part in argv]
        # Unbuffered, so output() shows what a process printed right before it hung or died.
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError(f"{self.label} is not started")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def output(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        if self._log_path is None:
            return ""
        try:
            return self._log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def describe(self) -> str:
        """Command, state and output tail, for assertion and error messages."""
        out = self.output()
        if len(out) > _OUTPUT_LIMIT:
            out = "[... earlier output cut ...]\n" + out[-_OUTPUT_LIMIT:]
        state = "running" if self.is_running() else f"exited with {self.returncode}"
        return f"{self.label} ({' '.join(self.argv)}) is {state}; output:\n{out or '<no output>'}"

    def launch(self) -> None:
        if self._proc is not None:
            raise RuntimeError(f"{self.label} was already started; make a new instance to run it again")
        fd, name = tempfile.mkstemp(prefix=f"onwards-{self.label}-", suffix=".log")
        self._log_path = Path(name)
        with os.fdopen(fd, "wb") as log:
            self._proc = subprocess.Popen(
                self.argv,
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _running.add(self)

    def ready(self) -> bool:
        """Whether the started process is ready for use; subclasses probe their HTTP endpoint."""
        return True

    def start(self) -> Self:
        """Launch and wait until ``ready()``; on death or timeout stop it and raise with its output."""
        self.launch()
        self.wait_ready(self.ready, self.startup_timeout)
        return self

    def wait_ready(self, ready: Callable[[], bool], timeout: float) -> None:
        """Poll ``ready`` until true; stop the process and raise with its output if it dies or times out."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while not ready():
            if self._proc.poll() is not None:
                message = f"{self.label} exited before it was ready.\n{self.describe()}"
                self.stop()
                raise ProcessStartError(message)
            if time.monotonic() > deadline:
                message = f"{self.label} was not ready within {timeout}s.\n{self.describe()}"
                self.stop()
                raise ProcessStartError(message)
            time.sleep(0.05)

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the main process only (e.g. SIGHUP), not to its group."""
        os.kill(self.pid, sig)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM the whole group, wait up to ``timeout``, then SIGKILL what is left. Safe to repeat."""
        proc = self._proc
        if proc is None:
            return None
        pgid = proc.pid  # start_new_session made it the group leader
        if proc.poll() is None:
            self._signal_group(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(pgid, signal.SIGKILL)
                proc.wait(5)
        # Workers can outlive a parent that exited first; nothing of the group may survive a test.
        if group_members(pgid):
            try:
                wait_until(lambda: not group_members(pgid), timeout=min(timeout, 2.0))
            except TimeoutError:
                self._signal_group(pgid, signal.SIGKILL)
                wait_until(lambda: not group_members(pgid), timeout=5.0)
        _running.discard(self)
        return proc.returncode

    def close(self) -> None:
        """Stop and delete the captured output."""
        self.stop()
        if self._log_path is not None:
            self._log_path.unlink(missing_ok=True)

    @staticmethod
    def _signal_group(pgid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)

    def __enter__(self) -> Self:
        return self if self._proc is not None else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class GatewayProcess(ManagedProcess):
    """``python -m onwards`` on a loopback port, ready once ``GET /health`` answers 200.

    Without ``config_path`` no ``-f`` is passed (the config then comes from Redis, via ``redis_url`` and
    whatever ``extra_args`` the test adds, e.g. ``--config-from-redis``). Without ``metrics_port`` a free
    one is chosen, so parallel gateways never fight over the default; metrics listen on loopback too.
    Tests sharing a Redis should pass ``redis_prefix`` (the ``unique_prefix`` fixture) to stay apart.
    """

    label = "gateway"

    def __init__(
        self,
        config_path: str | os.PathLike[str] | None = None,
        *,
        workers: int = 2,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        metrics_port: int | None = None,
        redis_url: str | None = None,
        redis_prefix: str | None = None,
        port: int | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        if isinstance(extra_args, str):
            raise TypeError("extra_args must be a sequence of arguments, not one string")
        self.config_path = None if config_path is None else Path(config_path)
        self.host = LOOPBACK
        self.port = free_port() if port is None else port
        self.metrics_port = free_port() if metrics_port is None else metrics_port
        self.workers = workers
        self.startup_timeout = startup_timeout
        argv: list[str] = [sys.executable, "-m", "onwards"]
        if self.config_path is not None:
            argv += ["-f", str(self.config_path)]
        argv += ["--host", self.host, "-p", str(self.port), "--workers", str(workers)]
        argv += ["--metrics-host", self.host, "--metrics-port", str(self.metrics_port)]
        if redis_url is not None:
            argv += ["--redis-url", redis_url]
        if redis_prefix is not None:
            argv += ["--redis-prefix", redis_prefix]
        if "--drain-secs" not in extra_args:
            # Tests stop gateways all the time; the production drain (5 s of not-ready serving)
            # would only make each stop slower. Drain tests pass their own --drain-secs.
            argv += ["--drain-secs", "0"]
        argv += list(extra_args)
        super().__init__(argv, env=env)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def ready(self) -> bool:
        return http_status(self.host, self.port, "/health") == 200

    def worker_pids(self) -> list[int]:
        """The gateway's live worker processes.

        A worker is a child that was forked from the gateway (so it shares the gateway's command line) or
        started by multiprocessing's spawn method; other children, such as the metrics exporter or
        multiprocessing's resource tracker, are not workers.
        """
        parent = _cmdline(self.pid)
        return [
            pid
            for pid in child_pids(self.pid)
            if (cmdline := _cmdline(pid)) == parent or _SPAWNED_CHILD in cmdline.split()
        ]


class MockUpstreamProcess(ManagedProcess):
    """``python -m tests.support.mock_upstream`` as its own process, for benchmarks and multi-process tests.

    ``mock_args`` are extra flags of that module (``--delay``, ``--chunks``, ``--no-record``, ...).
    """

    label = "mock-upstream"

    def __init__(
        self,
        name: str = "mock",
        *,
        port: int | None = None,
        mock_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        if isinstance(mock_args, str):
            raise TypeError("mock_args must be a sequence of arguments, not one string")
        self.name = name
        self.host = LOOPBACK
        self.port = free_port() if port is None else port
        self.startup_timeout = startup_timeout
        argv = [sys.executable, "-m", "tests.support.mock_upstream", "--host", self.host]
        argv += ["--port", str(self.port), "--name", name, *mock_args]
        super().__init__(argv, env=env)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ready(self) -> bool:
        return http_status(self.host, self.port, "/__mock/stats") == 200

    def stats(self) -> dict[str, Any]:
        """Requests seen, in flight, max in flight and disconnects, from the running mock."""
        return self._control("GET", "/__mock/stats")

    def reset(self) -> dict[str, Any]:
        """Zero the mock's counters and drop its recorded requests and queued failures."""
        return self._control("POST", "/__mock/reset")

    def _control(self, method: str, path: str) -> dict[str, Any]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise RuntimeError(f"{method} {path} on {self.label} answered {response.status}: {body!r}")
        return json.loads(body)
