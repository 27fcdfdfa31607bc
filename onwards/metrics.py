"""Prometheus metrics of Onwards, summed over every Granian worker.

Each worker writes its numbers into memory-mapped files in one directory (prometheus-client's
multiprocess mode); the exporter child process (onwards.metrics_exporter) adds them up on
every scrape. The parent CLI calls `prepare_multiprocess_dir` and `start_exporter` before it
forks the workers; each worker calls `build_metrics` once and then the methods of `Metrics`
on the request path.

Label values are kept to bounded sets: targets are configured aliases (or "unknown"),
providers "<alias>/<index>", routes a fixed list computed by the caller, methods and statuses
are clamped here, and everything else is one of a few literals checked here. Nothing is ever
labelled by API key or raw path. See docs/metrics.md for every metric.
"""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import sys
import tempfile
import time

from prometheus_client import Counter, Gauge, Histogram, values
from prometheus_client.multiprocess import mark_process_dead

from onwards.metrics_exporter import READY_PREFIX, is_multiprocess_file

ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"

# Whole-request latency of an LLM gateway runs from milliseconds (errors, cached replies) to
# minutes (long streamed completions).
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# Time to first byte of an upstream response (headers received).
TTFB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UPSTREAM_ERROR_KINDS = ("connect", "timeout", "reset", "status")
LIMIT_SCOPES = ("key", "target", "provider")
LIMIT_KINDS = ("rate", "concurrency", "tokens")
LIMITER_STATES = {"closed": 0.0, "open": 1.0}
DEFERRED_RELEASE_RESULTS = ("kept", "dropped")
RELOAD_RESULTS = ("ok", "error")
AUTH_FAILURE_REASONS = ("missing", "invalid")
EDGE_REFUSAL_REASONS = ("path", "body_timeout", "preflight")

_PREFIX = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


class Metrics:
    """The metrics a worker records. This base class records nothing (metrics disabled)."""

    enabled = False

    def request_started(self) -> None:
        pass

    def request_finished(self, target: str, route: str, method: str, status: int, seconds: float) -> None:
        pass

    def upstream_response(self, provider: str, status: int, ttfb_seconds: float) -> None:
        pass

    def upstream_error(self, provider: str, kind: str) -> None:
        pass

    def limit_rejected(self, scope: str, kind: str) -> None:
        pass

    def limiter_error(self) -> None:
        pass

    def limiter_state(self, state: str) -> None:
        pass

    def limiter_problem(self, problem: str | None) -> None:
        pass

    def limiter_release_deferred(self, result: str, count: int) -> None:
        pass

    def fallback_attempt(self, target: str) -> None:
        pass

    def config_reload(self, result: str) -> None:
        pass

    def config_version(self, version: str) -> None:
        pass

    def streamed(self, provider: str, nbytes: int, events: int) -> None:
        pass

    def model_started(self, alias: str) -> None:
        """A request for a configured alias began (counted until its last byte)."""

    def model_finished(self, alias: str) -> None:
        pass

    def retry_backoff(self) -> None:
        """A retry paused before its next attempt."""

    def retry_budget_exhausted(self) -> None:
        """A retry was given up because its pause would exceed max_total_backoff_ms."""

    def auth_failure(self, reason: str) -> None:
        pass

    def requests_cut(self, count: int) -> None:
        pass

    def edge_refused(self, reason: str) -> None:
        pass

    def tokens_used(self, target: str, provider: str, key: str, prompt: int, completion: int) -> None:
        pass

    def tokens_unsettled(self, target: str) -> None:
        pass


def build_metrics(enabled: bool, prefix: str = "onwards") -> Metrics:
    """The metrics of this worker process; call once per process, after the fork.

    Enabled metrics need PROMETHEUS_MULTIPROC_DIR (set by `prepare_multiprocess_dir` in the
    parent) to name an existing directory.
    """
    if not enabled:
        return Metrics()
    if not isinstance(prefix, str) or (prefix and not _PREFIX.match(prefix)):
        raise ValueError(
            f"metrics prefix {prefix!r} is not a valid Prometheus name prefix "
            "(letters, digits, '_' and ':', not starting with a digit)"
        )
    path = os.environ.get(ENV_VAR)
    if not path or not os.path.isdir(path):
        state = "unset" if not path else f"{path!r}, which is not a directory"
        raise RuntimeError(
            f"metrics are enabled but {ENV_VAR} is {state}; "
            "the parent process must call prepare_multiprocess_dir() before starting workers"
        )
    _use_multiprocess_values(path)
    return PrometheusMetrics(prefix)


# The pid that has cleaned its own stale live-gauge files (see below).
_cleaned_pid: int | None = None

# prometheus-client asks for the pid on every update of every value, to notice a fork; by
# default that is os.getpid(), a system call each time (glibc no longer caches it), which
# measured 3-5% of a busy worker's CPU. The pid is kept here instead and refreshed in the child
# of every fork, which is exactly when it changes.
_pid = os.getpid()


def _refresh_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)


def _current_pid() -> int:
    return _pid


def _use_multiprocess_values(path: str) -> None:
    global _cleaned_pid
    # prometheus-client picks its value class when it is first imported. If that happened
    # before the parent set the env var (it imports this module to call
    # prepare_multiprocess_dir), the forked worker inherited the in-memory class and would
    # write no files, so the choice is made here, before any metric of this process exists:
    # file-backed values with the cached pid. Ours, once set, is kept: two file-backed classes
    # in one process would both append to the same files.
    if not getattr(values.ValueClass, "_onwards_pid_cache", False):
        value_class = values.MultiProcessValue(_current_pid)
        value_class._onwards_pid_cache = True
        values.ValueClass = value_class
    pid = os.getpid()
    if _cleaned_pid != pid:
        # Any live-gauge file named after our pid was written by a dead process whose pid we
        # reuse; left in place, its in-flight count would become our starting value.
        mark_process_dead(pid, path)
        _cleaned_pid = pid


def _status_label(status: int) -> str:
    return str(status) if isinstance(status, int) and 100 <= status <= 599 else "other"


def _method_label(method: str) -> str:
    return method if method in HTTP_METHODS else "other"


class PrometheusMetrics(Metrics):
    """Metrics written to the multiprocess dir. Label children are cached so a call is a dict hit
    plus one or two mmap writes."""

    enabled = True

    def __init__(self, prefix: str) -> None:
        p = f"{prefix}_" if prefix else ""
        self.prefix = prefix
        # registry=None: in multiprocess mode the exporter reads the files; registering in
        # the process-global registry would only make a second build fail on duplicates.
        self._requests = Counter(
            p + "requests",
            "Requests answered, by target, route, method and status.",
            ("target", "route", "method", "status"),
            registry=None,
        )
        self._duration = Histogram(
            p + "request_duration_seconds",
            "Time from receiving a request to its last byte sent.",
            ("target", "route"),
            buckets=REQUEST_BUCKETS,
            registry=None,
        )
        self._in_flight = Gauge(
            p + "requests_in_flight",
            "Requests being served now, summed over live workers.",
            registry=None,
            multiprocess_mode="livesum",
        )
        # The Rust gateway's names (with the default prefix), which autoscalers read to drain a
        # model before scaling it down; summed over live workers. Unlike there, the prefix
        # applies to them too, so a renamed gateway has no metric outside its prefix.
        self._rust_in_flight = Gauge(
            p + "requests_inflight",
            "Requests being served now (the Rust onwards' name), summed over live workers.",
            registry=None,
            multiprocess_mode="livesum",
        )
        self._model_in_flight = Gauge(
            p + "model_inflight",
            "Requests for each configured model being served now, until their last byte.",
            ("model",),
            registry=None,
            multiprocess_mode="livesum",
        )
        self._retries = Counter(
            p + "retries",
            "Pauses taken before a retry (fallback.backoff).",
            registry=None,
        )
        self._retry_budget = Counter(
            p + "retry_budget_exhausted",
            "Retries given up because the pause would exceed fallback.max_total_backoff_ms.",
            registry=None,
        )
        self._upstream = Counter(
            p + "upstream_requests",
            "Upstream responses received, by provider and status.",
            ("provider", "status"),
            registry=None,
        )
        self._ttfb = Histogram(
            p + "upstream_ttfb_seconds",
            "Time from sending a request upstream to its response headers.",
            ("provider",),
            buckets=TTFB_BUCKETS,
            registry=None,
        )
        self._upstream_errors = Counter(
            p + "upstream_errors",
            "Upstream attempts that failed, by provider and kind.",
            ("provider", "kind"),
            registry=None,
        )
        self._rejections = Counter(
            p + "limit_rejections",
            "Requests refused by a limit, by the refusing scope and kind.",
            ("scope", "kind"),
            registry=None,
        )
        self._limiter_errors = Counter(
            p + "limiter_redis_errors",
            "Limiter calls to Redis that failed.",
            registry=None,
        )
        self._circuit = Gauge(
            p + "limiter_circuit_open",
            "1 while any live worker's limiter circuit to Redis is open.",
            registry=None,
            multiprocess_mode="livemax",
        )
        self._misconfigured = Gauge(
            p + "limiter_misconfigured",
            "1 while any live worker's Redis says the limiter's URL or credentials are wrong.",
            registry=None,
            multiprocess_mode="livemax",
        )
        self._deferred = Counter(
            p + "limiter_releases_deferred",
            "Permit releases Redis could not take at once: kept to resend, or dropped past the bound.",
            ("result",),
            registry=None,
        )
        self._deferred_children = {r: self._deferred.labels(r) for r in DEFERRED_RELEASE_RESULTS}
        self._fallbacks = Counter(
            p + "fallback_attempts",
            "Extra providers tried after a failed attempt, by target.",
            ("target",),
            registry=None,
        )
        self._reloads = Counter(
            p + "config_reloads",
            "Config reloads, by result.",
            ("result",),
            registry=None,
        )
        self._config_active = Gauge(
            p + "config_active",
            "1 for each config version a live worker is serving.",
            ("version",),
            registry=None,
            multiprocess_mode="livemax",
        )
        self._bytes = Counter(
            p + "streamed_bytes",
            "Response body bytes sent to clients, by provider.",
            ("provider",),
            registry=None,
        )
        self._events = Counter(
            p + "sse_events",
            "Server-sent events sent to clients, by provider.",
            ("provider",),
            registry=None,
        )
        self._auth_failures = Counter(
            p + "auth_failures",
            "Requests refused for authentication, by reason.",
            ("reason",),
            registry=None,
        )

        self._cut = Counter(
            p + "requests_cut",
            "Requests and streams still in flight at the shutdown timeout, cut.",
            registry=None,
        )
        self._edge = Counter(
            p + "edge_refusals",
            "Requests refused before routing, by reason (path, body_timeout, preflight).",
            ("reason",),
            registry=None,
        )
        self._tokens = Counter(
            p + "tokens",
            "Model tokens the providers reported, by target, provider, key definition name and kind "
            "(prompt or completion).",
            ("target", "provider", "key", "kind"),
            registry=None,
        )
        self._unsettled = Counter(
            p + "token_reservations_unsettled",
            "Token-limited requests whose provider reported no usage: their reservation was kept.",
            ("target",),
            registry=None,
        )

        # Closed label sets are bound now; open but bounded ones on first use.
        self._edge_children = {r: self._edge.labels(r) for r in EDGE_REFUSAL_REASONS}
        self._rejection_children = {
            (s, k): self._rejections.labels(s, k) for s in LIMIT_SCOPES for k in LIMIT_KINDS
        }
        self._reload_children = {r: self._reloads.labels(r) for r in RELOAD_RESULTS}
        self._auth_children = {r: self._auth_failures.labels(r) for r in AUTH_FAILURE_REASONS}
        self._request_children: dict[tuple[str, str, str, int], Counter] = {}
        self._duration_children: dict[tuple[str, str], Histogram] = {}
        self._upstream_children: dict[tuple[str, int], Counter] = {}
        self._ttfb_children: dict[str, Histogram] = {}
        self._upstream_error_children: dict[tuple[str, str], Counter] = {}
        self._fallback_children: dict[str, Counter] = {}
        self._stream_children: dict[str, tuple[Counter, Counter]] = {}
        self._model_children: dict[str, Gauge] = {}
        self._token_children: dict[tuple[str, str, str], tuple[Counter, Counter]] = {}
        self._unsettled_children: dict[str, Counter] = {}
        self._active_version: str | None = None
        self._circuit.set(0)

    def request_started(self) -> None:
        self._in_flight.inc()
        self._rust_in_flight.inc()

    def request_finished(self, target: str, route: str, method: str, status: int, seconds: float) -> None:
        self._in_flight.dec()
        self._rust_in_flight.dec()
        if method not in HTTP_METHODS:
            method = "other"  # clients choose the method; never let them choose a new series
        key = (target, route, method, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self._requests.labels(
                target, route, method, _status_label(status)
            )
        child.inc()
        hist = self._duration_children.get((target, route))
        if hist is None:
            hist = self._duration_children[(target, route)] = self._duration.labels(target, route)
        hist.observe(seconds)

    def upstream_response(self, provider: str, status: int, ttfb_seconds: float) -> None:
        key = (provider, status)
        child = self._upstream_children.get(key)
        if child is None:
            child = self._upstream_children[key] = self._upstream.labels(provider, _status_label(status))
        child.inc()
        hist = self._ttfb_children.get(provider)
        if hist is None:
            hist = self._ttfb_children[provider] = self._ttfb.labels(provider)
        hist.observe(ttfb_seconds)

    def upstream_error(self, provider: str, kind: str) -> None:
        key = (provider, kind)
        child = self._upstream_error_children.get(key)
        if child is None:
            if kind not in UPSTREAM_ERROR_KINDS:
                raise ValueError(f"upstream error kind must be one of {UPSTREAM_ERROR_KINDS}, got {kind!r}")
            child = self._upstream_error_children[key] = self._upstream_errors.labels(provider, kind)
        child.inc()

    def limit_rejected(self, scope: str, kind: str) -> None:
        child = self._rejection_children.get((scope, kind))
        if child is None:
            raise ValueError(
                f"limit rejection needs scope in {LIMIT_SCOPES} and kind in {LIMIT_KINDS}, "
                f"got {scope!r}, {kind!r}"
            )
        child.inc()

    def limiter_error(self) -> None:
        self._limiter_errors.inc()

    def limiter_state(self, state: str) -> None:
        value = LIMITER_STATES.get(state)
        if value is None:
            raise ValueError(f"limiter state must be one of {tuple(LIMITER_STATES)}, got {state!r}")
        self._circuit.set(value)

    def limiter_problem(self, problem: str | None) -> None:
        self._misconfigured.set(0.0 if problem is None else 1.0)

    def limiter_release_deferred(self, result: str, count: int) -> None:
        child = self._deferred_children.get(result)
        if child is None:
            raise ValueError(
                f"deferred release result must be one of {DEFERRED_RELEASE_RESULTS}, got {result!r}"
            )
        child.inc(count)

    def fallback_attempt(self, target: str) -> None:
        child = self._fallback_children.get(target)
        if child is None:
            child = self._fallback_children[target] = self._fallbacks.labels(target)
        child.inc()

    def config_reload(self, result: str) -> None:
        child = self._reload_children.get(result)
        if child is None:
            raise ValueError(f"config reload result must be one of {RELOAD_RESULTS}, got {result!r}")
        child.inc()

    def config_version(self, version: str) -> None:
        if not isinstance(version, str) or not version:
            raise ValueError(f"config version must be a non-empty string, got {version!r}")
        if version == self._active_version:
            return
        # A row cannot be deleted from a worker's file, so the old version is set to 0.
        if self._active_version is not None:
            self._config_active.labels(self._active_version).set(0)
        self._config_active.labels(version).set(1)
        self._active_version = version

    def streamed(self, provider: str, nbytes: int, events: int) -> None:
        children = self._stream_children.get(provider)
        if children is None:
            children = (self._bytes.labels(provider), self._events.labels(provider))
            self._stream_children[provider] = children
        if nbytes:
            children[0].inc(nbytes)  # a negative amount raises ValueError in prometheus-client
        if events:
            children[1].inc(events)

    def model_started(self, alias: str) -> None:
        # Only configured aliases get here, so the label set is bounded by the config.
        child = self._model_children.get(alias)
        if child is None:
            child = self._model_children[alias] = self._model_in_flight.labels(alias)
        child.inc()

    def model_finished(self, alias: str) -> None:
        self._model_children[alias].dec()

    def retry_backoff(self) -> None:
        self._retries.inc()

    def retry_budget_exhausted(self) -> None:
        self._retry_budget.inc()

    def auth_failure(self, reason: str) -> None:
        child = self._auth_children.get(reason)
        if child is None:
            raise ValueError(f"auth failure reason must be one of {AUTH_FAILURE_REASONS}, got {reason!r}")
        child.inc()

    def requests_cut(self, count: int) -> None:
        self._cut.inc(count)

    def edge_refused(self, reason: str) -> None:
        child = self._edge_children.get(reason)
        if child is None:
            raise ValueError(f"edge refusal reason must be one of {EDGE_REFUSAL_REASONS}, got {reason!r}")
        child.inc()

    def tokens_used(self, target: str, provider: str, key: str, prompt: int, completion: int) -> None:
        # `key` is a key definition's name from the config (or "none"), never the token itself.
        labels = (target, provider, key)
        children = self._token_children.get(labels)
        if children is None:
            children = (
                self._tokens.labels(target, provider, key, "prompt"),
                self._tokens.labels(target, provider, key, "completion"),
            )
            self._token_children[labels] = children
        if prompt > 0:
            children[0].inc(prompt)
        if completion > 0:
            children[1].inc(completion)

    def tokens_unsettled(self, target: str) -> None:
        child = self._unsettled_children.get(target)
        if child is None:
            child = self._unsettled_children[target] = self._unsettled.labels(target)
        child.inc()


# --- parent side ---------------------------------------------------------------------------


def prepare_multiprocess_dir(path: str | None) -> str:
    """Create or empty the metrics dir, export it as PROMETHEUS_MULTIPROC_DIR, return its path.

    Files of an earlier run are deleted so they never count. Only files prometheus-client or
    the exporter write are touched; any other *.db file is refused, since the collector would
    try to read it.
    """
    if path is None:
        path = tempfile.mkdtemp(prefix="onwards-metrics-")
    else:
        if not isinstance(path, str) or not path:
            raise ValueError(f"metrics dir must be a non-empty path, got {path!r}")
        path = os.path.abspath(path)
        if os.path.exists(path) and not os.path.isdir(path):
            raise ValueError(f"metrics dir {path!r} exists and is not a directory")
        os.makedirs(path, exist_ok=True)
        foreign = []
        for name in sorted(os.listdir(path)):
            full = os.path.join(path, name)
            if is_multiprocess_file(name) and os.path.isfile(full):
                os.remove(full)
            elif name.endswith(".db"):
                foreign.append(name)
        if foreign:
            raise ValueError(
                f"metrics dir {path!r} holds .db files that are not Prometheus metric files "
                f"({', '.join(foreign[:5])}); use an empty or dedicated directory"
            )
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"metrics dir {path!r} is not writable")
    os.environ[ENV_VAR] = path
    return path


def start_exporter(
    port: int, host: str, multiproc_dir: str, *, ready_timeout: float = 10.0
) -> subprocess.Popen[bytes]:
    """Start the /metrics exporter process and wait until it listens.

    Raises RuntimeError when it cannot listen (port in use, bad host): its reason is on stderr.
    """
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"metrics port must be between 1 and 65535, got {port!r}")
    if not os.path.isdir(multiproc_dir):
        raise ValueError(f"metrics dir {multiproc_dir!r} is not a directory")
    cmd = [
        sys.executable,
        "-m",
        "onwards.metrics_exporter",
        "--port",
        str(port),
        "--host",
        host,
        "--multiproc-dir",
        multiproc_dir,
        "--parent-pid",
        str(os.getpid()),
    ]
    env = dict(os.environ)
    # Make `-m onwards...` importable even when Onwards runs from a source checkout.
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    try:
        line = _read_line(proc, ready_timeout)
    finally:
        proc.stdout.close()
    if not line.startswith(READY_PREFIX):
        stop_exporter(proc)
        raise RuntimeError(
            f"metrics exporter did not start listening on {host}:{port} "
            f"(exit code {proc.returncode}; its error is logged above)"
        )
    return proc


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                break
            chunk = os.read(fd, 4096)
            if not chunk:  # exited
                break
            buf += chunk
    return buf.decode(errors="replace")


def stop_exporter(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> int:
    """Stop the exporter (SIGTERM, then SIGKILL after `timeout`) and return its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
