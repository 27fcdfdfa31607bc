"""The overhead benchmark: the gateway against a bare Python proxy and against no proxy at all.

    python -m tests.bench.run [--quick] [--duration S] [--repeats R] [--out DIR] [--profile]

Everything runs on 127.0.0.1: nginx (or a Granian fallback) as the upstream, the bare proxy, the
gateway in three configurations, wrk as the load. Results go to DIR (bench-results/ by default) as
JSON and markdown; the markdown is also printed. docs/performance.md explains the set-up and the
figures. The exit status says whether the benchmark ran, never whether it was fast enough:
0 ran cleanly, 1 some responses were errors, 2 a prerequisite is missing or a process did not start,
130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from tests.bench import procinfo, report
from tests.bench.bare_proxy import BareProxy
from tests.bench.configs import gateway_config
from tests.bench.fast_upstream import FastUpstream
from tests.bench.nginx import NginxUpstream, nginx_binary
from tests.bench.payloads import CHAT_PATH
from tests.bench.procinfo import Connections
from tests.bench.sse_upstream import SseUpstream
from tests.bench.ttfb import run_ttfb
from tests.bench.wrk import WrkError, run_wrk, wrk_binary
from tests.support.processes import (
    LOOPBACK,
    REPO_ROOT,
    GatewayProcess,
    ManagedProcess,
    ProcessStartError,
    free_port,
    redis_available,
)

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_OUT = REPO_ROOT / "bench-results"
STARTUP_TIMEOUT = 90.0  # a dozen Granian servers starting at once on two cores take a while
PAUSE_S = 0.3  # between runs, so one run's tail does not land in the next
AFTER_S = 0.5  # wait before counting connections "after" a run
SAMPLE_S = 0.25  # connection sampling interval during a run
TTFB_CONCURRENCY = 16

INSTALL_HINT = {
    "wrk": "apt-get install -y wrk",
    "nginx": "apt-get install -y nginx-light   (or nginx)",
    "py-spy": f"{sys.executable} -m pip install py-spy",
}


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says why and what to do."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- plan --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    quick: bool
    duration_s: int
    repeats: int
    workers: tuple[int, ...]
    concurrencies: tuple[int, ...]
    httpx: bool
    ttfb: bool
    ttfb_c1: bool
    warmup_s: int
    stream_chunks: int
    stream_delay_ms: float
    wrk_threads: int
    metrics: bool
    use_nginx: bool
    profile_s: int  # 0: no profile


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Plan]:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="smoke mode: 1 s runs, 1 repeat, 2 workers only")
    parser.add_argument("--duration", type=int, help="seconds per wrk run (4; quick: 1)")
    parser.add_argument("--repeats", type=int, help="interleaved repeats of the matrix (3; quick: 1)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory for the JSON and markdown")
    parser.add_argument("--no-httpx", action="store_true", help="skip the httpx bare proxy (c64, 1 worker)")
    parser.add_argument("--no-ttfb", action="store_true", help="skip the streaming time-to-first-byte test")
    parser.add_argument(
        "--stream-chunks", type=int, default=20, help="events per stream in the TTFB test (20)"
    )
    parser.add_argument(
        "--stream-delay-ms", type=float, default=5.0, help="pause between stream events in the TTFB test (5)"
    )
    parser.add_argument(
        "--wrk-threads", type=int, default=1, help="wrk threads (1: the load generator stays small)"
    )
    parser.add_argument("--no-metrics", action="store_true", help="run the gateways with --no-metrics")
    parser.add_argument(
        "--upstream",
        choices=("auto", "nginx", "granian"),
        default="auto",
        help="nginx, the Granian RSGI fallback, or nginx when installed (auto)",
    )
    parser.add_argument(
        "--profile", type=int, nargs="?", const=10, default=0, metavar="S",
        help="after the matrix, sample gateway (d) with py-spy during an S-second c64 run (10)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    duration = args.duration if args.duration is not None else (1 if args.quick else 4)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    if duration < 1:
        parser.error("--duration must be a whole number of seconds >= 1 (wrk takes whole seconds)")
    if repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.stream_chunks < 1 or args.stream_delay_ms < 0:
        parser.error("--stream-chunks must be >= 1 and --stream-delay-ms >= 0")
    if args.wrk_threads < 1:
        parser.error("--wrk-threads must be at least 1")
    if args.profile < 0:
        parser.error("--profile needs a positive number of seconds")
    plan = Plan(
        quick=args.quick,
        duration_s=duration,
        repeats=repeats,
        workers=(report.TARGET_WORKERS,) if args.quick else (1, report.TARGET_WORKERS),
        concurrencies=(1, report.HIGH_CONCURRENCY),
        httpx=not args.quick and not args.no_httpx,
        ttfb=not args.no_ttfb,
        ttfb_c1=not args.quick and not args.no_ttfb,
        warmup_s=0 if args.quick else 1,
        stream_chunks=args.stream_chunks,
        stream_delay_ms=args.stream_delay_ms,
        wrk_threads=args.wrk_threads,
        metrics=not args.no_metrics,
        use_nginx=args.upstream == "nginx" or (args.upstream == "auto" and nginx_binary() is not None),
        profile_s=args.profile,
    )
    return args, plan


def check_prerequisites(plan: Plan) -> list[str]:
    """Stop with the install command for what is missing; return notes on what will be left out."""
    missing = []
    if wrk_binary() is None:
        missing.append(f"wrk is not installed: {INSTALL_HINT['wrk']}")
    if plan.profile_s:
        from tests.bench.profile import py_spy_binary

        if py_spy_binary() is None:
            missing.append(f"--profile needs py-spy: {INSTALL_HINT['py-spy']}")
    if plan.httpx:
        try:
            import httpx  # noqa: F401
        except ImportError:
            missing.append(
                f"the httpx comparison needs httpx: {sys.executable} -m pip install httpx (or --no-httpx)"
            )
    if plan.use_nginx and nginx_binary() is None:
        missing.append(f"--upstream nginx needs nginx: {INSTALL_HINT['nginx']}")
    if missing:
        raise BenchError("missing prerequisites (this script installs nothing):\n  " + "\n  ".join(missing))
    notes = []
    if not plan.use_nginx:
        why = "nginx is not installed" if nginx_binary() is None else "--upstream granian was asked for"
        notes.append(
            f"{why}, so the upstream is the Granian RSGI fallback (tests/bench/fast_upstream.py), several "
            "times slower than nginx: direct figures understate the ceiling, and upstream connections "
            f"opened are inferred from ports (they undercount). nginx: {INSTALL_HINT['nginx']}"
        )
    return notes


# -- processes ---------------------------------------------------------------------------------


@dataclass
class Instance:
    """One proxy under test with the upstream port that only it uses."""

    variant: str
    workers: int
    upstream_port: int
    process: ManagedProcess
    pids: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.variant}/w{self.workers}"

    @property
    def chat_url(self) -> str:
        return f"{self.process.url}{CHAT_PATH}"  # type: ignore[attr-defined]


class Bench:
    """Owns every process, config file and Redis key of one benchmark; ``close`` removes them all."""

    def __init__(self, plan: Plan, redis_url: str | None, notes: list[str]) -> None:
        self.plan = plan
        self.redis_url = redis_url
        self.notes = notes
        self.prefix = f"onwards-bench-{uuid.uuid4().hex[:10]}"
        self.tmp = Path(tempfile.mkdtemp(prefix="onwards-bench-"))
        self.processes: list[ManagedProcess] = []
        self.instances: dict[str, Instance] = {}
        self.direct_port = free_port()
        self.sse: SseUpstream | None = None
        self.stream_targets: dict[str, tuple[str, str]] = {}  # key -> (label, url)
        self.upstream_label = ""
        # Connections the upstream accepted so far (nginx's stub_status); None with the fallback upstream.
        self.accepts: Callable[[], int] | None = None
        self.redis_cpu = RedisCpu(redis_url) if redis_url is not None else None

    # Variants this run measures, in table order.
    def variants(self, workers: int, concurrency: int) -> list[str]:
        out = ["b", "c"]
        if self.redis_url is not None:
            out.append("d")
        out.append("e")
        if self.plan.httpx and workers == 1 and concurrency == report.HIGH_CONCURRENCY:
            out.append("bx")
        if workers == report.TARGET_WORKERS and concurrency == report.HIGH_CONCURRENCY:
            out.append("bg")
            if self.redis_url is not None:
                out += ["dn", "dt"]
        return out

    def _gateway(self, upstream_url: str, variant: str, workers: int) -> GatewayProcess:
        config = gateway_config(
            upstream_url, limits=variant in ("d", "dn", "dt", "e"), tokens=variant == "dt"
        )
        path = self.tmp / f"gateway-{variant}-{uuid.uuid4().hex[:6]}.json"
        path.write_text(json.dumps(config, indent=2))
        # The gateway as users run it: default flags, so the access log is on and goes to the
        # process's output like any deployment's (a file here). Only (dn) turns it off, to show its cost.
        extra = ["--no-access-log"] if variant == "dn" else []
        if not self.plan.metrics:
            extra.append("--no-metrics")
        redis_url = None
        if variant in ("d", "dn", "dt"):
            redis_url = self.redis_url
            extra += ["--redis-prefix", self.prefix]
        # ONWARDS_* variables of the caller's shell would change what is measured.
        env = {k: "" for k in os.environ if k.startswith("ONWARDS_")}
        return GatewayProcess(
            path,
            workers=workers,
            redis_url=redis_url,
            extra_args=extra,
            env=env,
            startup_timeout=STARTUP_TIMEOUT,
        )

    def _proxy(self, variant: str, upstream_url: str, workers: int) -> ManagedProcess:
        if variant in ("b", "bx", "bg"):
            client = "httpx" if variant == "bx" else "aiohttp"
            return BareProxy(upstream_url, free_port(), workers, client, gc_tuning=variant == "bg")
        return self._gateway(upstream_url, variant, workers)

    def start(self) -> None:
        plan = self.plan
        wanted: list[tuple[str, int]] = []
        for workers in plan.workers:
            for variant in dict.fromkeys(v for c in plan.concurrencies for v in self.variants(workers, c)):
                wanted.append((variant, workers))
        ports = {key: free_port() for key in wanted}
        upstream_ports = [self.direct_port, *ports.values()]
        launched: list[tuple[ManagedProcess, Callable[[], bool]]] = []
        if self.plan.use_nginx:
            nginx = NginxUpstream(upstream_ports)
            self.accepts = nginx.accepts
            self.upstream_label = "nginx, 1 worker"
            launched.append((self._launch(nginx), nginx.ready))
        else:
            self.upstream_label = "Granian RSGI fallback, 1 process per port"
            for port in upstream_ports:
                fast = FastUpstream(port)
                launched.append((self._launch(fast), fast.ready))
        for (variant, workers), port in ports.items():
            proc = self._proxy(variant, f"http://{LOOPBACK}:{port}", workers)
            self.instances[f"{variant}/w{workers}"] = Instance(variant, workers, port, proc)
            launched.append((self._launch(proc), proc.ready))
        if plan.ttfb:
            self.sse = SseUpstream(free_port(), plan.stream_chunks, plan.stream_delay_ms)
            launched.append((self._launch(self.sse), self.sse.ready))
            workers = report.TARGET_WORKERS
            gateway_variant = "d" if self.redis_url is not None else "e"
            bare = self._proxy("b", self.sse.url, workers)
            gateway = self._proxy(gateway_variant, self.sse.url, workers)
            launched += [(self._launch(bare), bare.ready), (self._launch(gateway), gateway.ready)]
            self.stream_targets = {
                "direct": ("direct (a)", f"{self.sse.url}{CHAT_PATH}"),
                "bare": (f"bare proxy (b), {workers} workers", f"{bare.url}{CHAT_PATH}"),  # type: ignore[attr-defined]
                "gateway": (
                    f"gateway ({gateway_variant}), {workers} workers",
                    f"{gateway.url}{CHAT_PATH}",  # type: ignore[attr-defined]
                ),
            }
        log(f"starting {len(launched)} processes (upstream: {self.upstream_label}) ...")
        for proc, ready in launched:
            proc.wait_ready(ready, STARTUP_TIMEOUT)
        for instance in self.instances.values():
            instance.pids = procinfo.worker_pids(instance.process.pid)
            if len(instance.pids) != instance.workers:
                raise BenchError(
                    f"{instance.name}: expected {instance.workers} workers, found {instance.pids}"
                )

    def _launch(self, proc: ManagedProcess) -> ManagedProcess:
        self.processes.append(proc)
        proc.launch()
        return proc

    def close(self) -> None:
        # SIGTERM everything first so the servers shut down side by side, then wait for each.
        for proc in self.processes:
            if proc.is_running():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.close()
            except Exception as exc:  # keep cleaning up the others
                log(f"could not stop {proc.label}: {exc}")
        if self.redis_url is not None:
            self._delete_redis_keys()
        for path in self.tmp.glob("*"):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.tmp.rmdir()

    def _delete_redis_keys(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url, socket_timeout=5, socket_connect_timeout=2)
        try:
            keys = list(client.scan_iter(match=f"{self.prefix}:*", count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
        except (redis.RedisError, OSError) as exc:
            log(f"could not delete the benchmark's Redis keys ({self.prefix}:*): {exc}")
        finally:
            client.close()


# -- measuring ---------------------------------------------------------------------------------


class RedisCpu:
    """Redis's own CPU per admitted request of gateway (d), from INFO around each of its c64 runs.

    `used_cpu_user + used_cpu_sys` is everything the server did (scripts, parsing, networking);
    `cmdstat_evalsha` is the scripts' own time. Other clients of the same Redis during a run would
    be counted too, so run the benchmark on a quiet machine.
    """

    def __init__(self, redis_url: str) -> None:
        import redis

        self._client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=2)
        self.cpu_s = 0.0
        self.script_us = 0.0
        self.requests = 0

    def read(self) -> tuple[float, float]:
        cpu = self._client.info("cpu")
        stats = self._client.info("commandstats")
        evalsha = stats.get("cmdstat_evalsha", {})
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), float(evalsha.get("usec", 0))

    def add(self, before: tuple[float, float], after: tuple[float, float], requests: int) -> None:
        self.cpu_s += after[0] - before[0]
        self.script_us += after[1] - before[1]
        self.requests += requests

    def figures(self) -> dict[str, float | int | None]:
        if not self.requests:
            return {"requests": 0, "cpu_us_per_request": None, "script_us_per_request": None}
        per = self.cpu_s * 1e6 / self.requests
        return {
            "requests": self.requests,
            "cpu_us_per_request": per,
            "script_us_per_request": self.script_us / self.requests,
            # What one Redis core sustains at this cost, with nothing else on it.
            "requests_per_core_s": 1e6 / per if per else None,
        }


class ConnectionSampler:
    """Samples one proxy's upstream connections in a thread while wrk runs."""

    def __init__(self, instance: Instance, accepts: Callable[[], int] | None) -> None:
        self.tracker = procinfo.ConnectionTracker(instance.upstream_port, instance.pids, accepts)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"conns-{instance.name}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.tracker.sample()

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


def measure_matrix(bench: Bench, runs: list[dict[str, Any]], connections: dict[str, dict[str, Any]]) -> None:
    plan = bench.plan
    direct_url = f"http://{LOOPBACK}:{bench.direct_port}{CHAT_PATH}"
    order: list[tuple[str, int | None, int]] = []
    for concurrency in plan.concurrencies:
        order.append(("a", None, concurrency))
        for workers in plan.workers:
            order += [(v, workers, concurrency) for v in bench.variants(workers, concurrency)]
    if plan.warmup_s:
        log(f"warming up each proxy for {plan.warmup_s} s ...")
        for instance in bench.instances.values():
            run_wrk(instance.chat_url, report.HIGH_CONCURRENCY, plan.warmup_s, plan.wrk_threads)
    total = len(order) * plan.repeats
    done = 0
    for repeat in range(plan.repeats):
        # Interleaved (a, b, c, d, e, a, b, ...): slow drifts of a shared machine hit every
        # configuration alike.
        for variant, workers, concurrency in order:
            instance = None if variant == "a" else bench.instances[f"{variant}/w{workers}"]
            url = direct_url if instance is None else instance.chat_url
            watch = instance is not None and concurrency == report.HIGH_CONCURRENCY
            sampler = ConnectionSampler(instance, bench.accepts) if watch and instance is not None else None
            redis_cpu = bench.redis_cpu if variant == "d" and concurrency == report.HIGH_CONCURRENCY else None
            before = redis_cpu.read() if redis_cpu is not None else None
            with sampler or contextlib.nullcontext():
                result = run_wrk(url, concurrency, plan.duration_s, plan.wrk_threads)
            if redis_cpu is not None and before is not None:
                redis_cpu.add(before, redis_cpu.read(), result.requests)
            if sampler is not None and instance is not None:
                during = sampler.tracker.during()
                time.sleep(AFTER_S)
                _keep_worst(connections, instance, during, sampler.tracker.now())
            done += 1
            runs.append({"variant": variant, "workers": workers, "concurrency": concurrency, "repeat": repeat,
                         **result.to_dict()})  # fmt: skip
            label = f"({variant})" + (f" w{workers}" if workers else "")
            errors = f"  non-2xx {result.non_2xx}" if result.non_2xx else ""
            log(
                f"[{done}/{total}] {label:8} c{concurrency:<3} {result.requests_per_s:>10,.0f} req/s  "
                f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms{errors}"
            )
            time.sleep(PAUSE_S)


def _keep_worst(
    connections: dict[str, dict[str, Any]], instance: Instance, during: Connections, after: Connections
) -> None:
    """Keep the largest connection counts seen for an instance over its repeats."""
    entry = connections.setdefault(
        instance.name, {"workers": instance.workers, "during": None, "after": None}
    )
    for phase, seen in (("during", during), ("after", after)):
        old = entry[phase]
        if old is None or seen.total > old["total"]:
            entry[phase] = seen.to_dict()


def measure_ttfb(bench: Bench, concurrency: int) -> dict[str, dict[str, Any]]:
    plan = bench.plan
    samples: dict[str, list[dict[str, Any]]] = {key: [] for key in bench.stream_targets}
    for repeat in range(plan.repeats):
        for key, (label, url) in bench.stream_targets.items():
            figures = run_ttfb(url, concurrency, plan.duration_s)
            samples[key].append(figures)
            log(
                f"[ttfb c{concurrency} {repeat + 1}/{plan.repeats}] {label:28} "
                f"{figures['streams_per_s']:8,.0f} streams/s  "
                f"TTFB p50 {_fmt(figures['ttfb_p50_ms'])} ms  p99 {_fmt(figures['ttfb_p99_ms'])} ms"
                + (f"  errors {figures['errors']}" if figures["errors"] else "")
            )
            time.sleep(PAUSE_S)
    out = {}
    for key, figures in samples.items():
        out[key] = {
            "label": bench.stream_targets[key][0],
            "samples": len(figures),
            "streams_per_s": _median([f["streams_per_s"] for f in figures]),
            "ttfb_p50_ms": _median([f["ttfb_p50_ms"] for f in figures]),
            "ttfb_p99_ms": _median([f["ttfb_p99_ms"] for f in figures]),
            "errors": sum(f["errors"] for f in figures),
        }
    return out


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _median(values: list[float | None]) -> float | None:
    import statistics

    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def peak_rss(bench: Bench) -> dict[str, list[float]]:
    out = {}
    for name, instance in bench.instances.items():
        out[name] = [mb for mb in (procinfo.peak_rss_mb(pid) for pid in instance.pids) if mb is not None]
    return out


def profile_gateway(bench: Bench, out_dir: Path, stamp: str) -> dict[str, Any] | None:
    from tests.bench.profile import hot_spots, render_markdown, start_recording

    plan = bench.plan
    workers = max(plan.workers)
    instance = bench.instances.get(f"d/w{workers}") or bench.instances.get(f"e/w{workers}")
    if instance is None:
        return None
    raw_path = out_dir / f"profile-{stamp}-{instance.variant}-w{workers}.txt"
    log(f"profiling ({instance.variant}) w{workers} with py-spy for {plan.profile_s} s at c64 ...")
    spy = start_recording(instance.process.pid, plan.profile_s, raw_path)
    try:
        time.sleep(1.0)  # py-spy attaches to every worker before the load starts
        load = run_wrk(instance.chat_url, report.HIGH_CONCURRENCY, plan.profile_s, plan.wrk_threads)
        output, _ = spy.communicate(timeout=plan.profile_s + 30)
    finally:
        if spy.poll() is None:
            spy.kill()
            spy.wait(5)
    if spy.returncode != 0 or not raw_path.exists():
        raise BenchError(f"py-spy failed ({spy.returncode}): {output.decode(errors='replace')[-2000:]}")
    spots = hot_spots(raw_path.read_text())
    spots["variant"] = instance.name
    spots["raw_profile"] = str(raw_path)
    spots["requests_per_s_while_sampled"] = load.requests_per_s
    (out_dir / f"profile-{stamp}.md").write_text(render_markdown(spots))
    return spots


# -- the whole run -----------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("onwards", "granian", "aiohttp", "httpx", "starlette", "redis", "uvloop"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    for tool, argv in (("wrk", ["wrk", "-v"]), ("nginx", [nginx_binary() or "nginx", "-v"])):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
            text = (done.stdout + done.stderr).strip().splitlines()
            if text:
                out[tool] = text[0]
    return out


def _git_commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        )
        if done.returncode == 0:
            return done.stdout.strip()
    return None


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """SIGTERM and SIGHUP end the run through the normal cleanup, like Ctrl-C does."""

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run(plan: Plan, out_dir: Path) -> tuple[dict[str, Any], str]:
    notes = check_prerequisites(plan)
    redis_url: str | None = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    if not redis_available(redis_url, timeout=1.0):
        notes.append(f"no Redis answered at {redis_url} (set REDIS_URL): configuration (d) was not measured")
        redis_url = None
    started = dt.datetime.now().astimezone()
    stamp = started.strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    runs: list[dict[str, Any]] = []
    connections: dict[str, dict[str, Any]] = {}
    ttfb: dict[str, dict[str, Any]] = {}
    ttfb_c1: dict[str, dict[str, Any]] = {}
    profile = None
    bench = Bench(plan, redis_url, notes)
    try:
        try:
            bench.start()
        except ProcessStartError as exc:
            raise BenchError(f"a process did not start:\n{exc}") from None
        measure_matrix(bench, runs, connections)
        if plan.ttfb:
            ttfb = measure_ttfb(bench, TTFB_CONCURRENCY)
            if plan.ttfb_c1:
                # One stream at a time: the forwarding path's own first-byte cost, without queueing.
                ttfb_c1 = measure_ttfb(bench, 1)
        rss = peak_rss(bench)
        if plan.profile_s:
            profile = profile_gateway(bench, out_dir, stamp)
    finally:
        log("stopping all processes ...")
        bench.close()
    if plan.wrk_threads < 2:
        notes.append(
            "wrk ran 1 thread, which may cap the direct (a) figure at c64 (nginx alone can do more); "
            "the proxies stay far below what one wrk thread can drive"
        )
    summary = report.summarize(runs)
    ratio = report.ratios(summary)
    added = report.added_latency(summary)
    result: dict[str, Any] = {
        "meta": {
            "started": started.isoformat(timespec="seconds"),
            "quick": plan.quick,
            "duration_s": plan.duration_s,
            "repeats": plan.repeats,
            "workers": list(plan.workers),
            "concurrencies": list(plan.concurrencies),
            "upstream": bench.upstream_label,
            "wrk_threads": plan.wrk_threads,
            "gateway_metrics": plan.metrics,
            "ttfb_concurrency": TTFB_CONCURRENCY,
            "stream_chunks": plan.stream_chunks,
            "stream_delay_ms": plan.stream_delay_ms,
            "redis": redis_url is not None,
            "cpus": os.cpu_count(),
            "loadavg_before": list(load_before),
            "loadavg_after": list(os.getloadavg()),
            "commit": _git_commit(),
            "versions": _versions(),
            "notes": notes,
        },
        "runs": runs,
        "summary": summary,
        "ratios": ratio,
        "added_latency_c1": added,
        "connections": connections,
        "rss_mb": rss,
        "ttfb": ttfb,
        "ttfb_c1": ttfb_c1,
        "redis_cpu": bench.redis_cpu.figures() if bench.redis_cpu is not None else None,
        "targets": report.targets(
            ratio, added, connections, ttfb, bench.redis_cpu.figures() if bench.redis_cpu else None
        ),
        "profile": profile,
    }
    markdown = report.render_markdown(result)
    (out_dir / f"bench-{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / f"bench-{stamp}.md").write_text(markdown)
    return result, markdown


def main(argv: Sequence[str] | None = None) -> int:
    args, plan = parse_args(argv)
    out_dir: Path = args.out.resolve()
    try:
        with _terminate_as_exit():
            result, markdown = run(plan, out_dir)
    except KeyboardInterrupt:
        log("interrupted; every process was stopped")
        return 130
    except (BenchError, WrkError) as exc:
        log(f"benchmark failed: {exc}")
        return 2
    print(markdown)
    if result["profile"]:
        from tests.bench.profile import render_markdown as render_profile

        print(f"Profile of ({result['profile']['variant']}) at c64:\n")
        print(render_profile(result["profile"]))
    log(f"results in {out_dir}")
    failed = [
        f"({r['variant']}) w{r['workers']} c{r['concurrency']}: {r['non_2xx']} non-2xx"
        for r in result["summary"]
        if r["non_2xx"]
    ]
    failed += [
        f"TTFB {v['label']}: {v['errors']} errors"
        for v in (*result["ttfb"].values(), *result["ttfb_c1"].values())
        if v["errors"]
    ]
    if failed:
        log(
            "some responses were errors, so those figures do not measure the proxy:\n  " + "\n  ".join(failed)
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
