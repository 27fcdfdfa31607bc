"""`onwards`: validate the config, prepare metrics, then run Granian with N workers of the app.

Every flag can also be set with an ONWARDS_* environment variable (the flag wins).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence

from onwards import __version__
from onwards.config import ConfigError, load_config_file
from onwards.config.last_good import write_last_good
from onwards.config.model import Snapshot
from onwards.logging_setup import configure_logging
from onwards.settings import SETTINGS_ENV, Settings

log = logging.getLogger("onwards.cli")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _env(name: str) -> str | None:
    value = os.environ.get(f"ONWARDS_{name}")
    return value if value not in (None, "") else None


def _env_bool(name: str, default: bool) -> bool:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return parse_bool(raw)
    except argparse.ArgumentTypeError:
        raise SystemExit(f"onwards: error: ONWARDS_{name}: expected true or false, got {raw!r}") from None


def _env_num(name: str, kind: type, default: object) -> object:
    raw = _env(name)
    if raw is None:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise SystemExit(f"onwards: error: ONWARDS_{name}: expected a number, got {raw!r}") from None


def _bool_flag(
    parser: argparse.ArgumentParser, name: str, short: str | None, default: bool, help_: str
) -> None:
    """--name, --name=false, --name false and --no-name all work (the onwards docs show each)."""
    names = [f"--{name}"] + ([short] if short else [])
    parser.add_argument(
        *names, nargs="?", const=True, type=parse_bool, default=default, metavar="BOOL", help=help_
    )
    parser.add_argument(
        f"--no-{name}", dest=name.replace("-", "_"), action="store_false", help=argparse.SUPPRESS
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="onwards",
        description="OpenAI-compatible AI gateway with cluster-wide limits. "
        "Also: `onwards config push|show` to manage a config stored in Redis.",
    )
    p.add_argument("-f", "--targets", default=_env("TARGETS"), metavar="PATH", help="JSON config file")
    p.add_argument("--host", default=_env("HOST") or "0.0.0.0", help="address to listen on (0.0.0.0)")
    p.add_argument("-p", "--port", type=int, default=_env_num("PORT", int, 3000), help="port (3000)")
    p.add_argument(
        "--workers", type=int, default=_env_num("WORKERS", int, 1), help="Granian worker processes (1)"
    )
    p.add_argument(
        "--redis-url",
        default=_env("REDIS_URL"),
        help="Redis for cluster-wide limits (and config with --config-from-redis); "
        "without it limits are enforced per process",
    )
    p.add_argument(
        "--redis-prefix",
        default=_env("REDIS_PREFIX") or "onwards",
        help="prefix of every Redis key (onwards)",
    )
    _bool_flag(
        p,
        "config-from-redis",
        None,
        _env_bool("CONFIG_FROM_REDIS", False),
        "load the config stored by `onwards config push` and follow its updates",
    )
    _bool_flag(p, "watch", "-w", _env_bool("WATCH", True), "reload the config file when it changes (true)")
    _bool_flag(p, "metrics", "-m", _env_bool("METRICS", True), "serve Prometheus metrics (true)")
    p.add_argument(
        "--metrics-host", default=_env("METRICS_HOST") or "0.0.0.0", help="metrics address (0.0.0.0)"
    )
    p.add_argument(
        "--metrics-port", type=int, default=_env_num("METRICS_PORT", int, 9090), help="metrics port (9090)"
    )
    p.add_argument("--metrics-prefix", default=_env("METRICS_PREFIX") or "onwards", help="metric name prefix")
    p.add_argument(
        "--pool-max-idle-per-host",
        type=int,
        default=_env_num("POOL_MAX_IDLE_PER_HOST", int, None),
        help="idle upstream connections kept per host and worker (config http_pool, else 100)",
    )
    p.add_argument(
        "--pool-idle-timeout-secs",
        type=float,
        default=_env_num("POOL_IDLE_TIMEOUT_SECS", float, None),
        help="seconds an idle upstream connection is kept (config http_pool, else 90)",
    )
    p.add_argument(
        "--log-level",
        default=_env("LOG_LEVEL") or "info",
        choices=["debug", "info", "warning", "error", "critical"],
    )
    p.add_argument("--log-format", default=_env("LOG_FORMAT") or "pretty", choices=["json", "pretty"])
    _bool_flag(p, "access-log", None, _env_bool("ACCESS_LOG", True), "one log line per request (true)")
    _bool_flag(
        p,
        "gc-tuning",
        None,
        _env_bool("GC_TUNING", True),
        "freeze the loaded app and run the garbage collector less often, in each worker (true)",
    )
    p.add_argument(
        "--backpressure",
        type=int,
        default=_env_num("BACKPRESSURE", int, 4096),
        help="connections each worker serves at once before new ones wait (4096)",
    )
    p.add_argument(
        "--backlog", type=int, default=_env_num("BACKLOG", int, 2048), help="listen backlog (2048)"
    )
    p.add_argument("-V", "--version", action="version", version=f"onwards {__version__}")
    return p


def settings_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Settings:
    if args.config_from_redis:
        if not args.redis_url:
            parser.error("--config-from-redis needs --redis-url (or ONWARDS_REDIS_URL)")
        if args.targets:
            parser.error("use either -f/--targets or --config-from-redis, not both")
    elif not args.targets:
        parser.error("the config file is required: -f/--targets PATH (or --config-from-redis)")
    for flag, value, low in (("--workers", args.workers, 1), ("--port", args.port, 0)):
        if value < low:
            parser.error(f"{flag} must be at least {low}")
    if args.pool_max_idle_per_host is not None and args.pool_max_idle_per_host < 0:
        parser.error("--pool-max-idle-per-host must not be negative")
    return Settings(
        targets=os.path.abspath(args.targets) if args.targets else None,
        config_from_redis=args.config_from_redis,
        host=args.host,
        port=args.port,
        workers=args.workers,
        redis_url=args.redis_url,
        redis_prefix=args.redis_prefix,
        watch=args.watch,
        metrics=args.metrics,
        metrics_host=args.metrics_host,
        metrics_port=args.metrics_port,
        metrics_prefix=args.metrics_prefix,
        pool_max_idle_per_host=args.pool_max_idle_per_host,
        pool_idle_timeout_secs=args.pool_idle_timeout_secs,
        log_level=args.log_level,
        log_format=args.log_format,
        access_log=args.access_log,
        gc_tuning=args.gc_tuning,
        backlog=args.backlog,
        backpressure=args.backpressure,
    )


def _validate_config(settings: Settings) -> Snapshot:
    """Load the config once in the parent so a bad one stops the start with one clear line."""
    if settings.config_from_redis:
        from onwards.config.sources.redis import load_from_redis

        assert settings.redis_url is not None
        return asyncio.run(load_from_redis(settings.redis_url, settings.redis_prefix))
    assert settings.targets is not None
    return load_config_file(settings.targets)


def _granian_log_config(log_format: str) -> dict[str, object]:
    formatter = (
        "onwards.logging_setup.JsonFormatter"
        if log_format == "json"
        else "onwards.logging_setup.PrettyFormatter"
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"onwards": {"()": formatter}},
        "handlers": {
            "console": {
                "formatter": "onwards",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {"_granian": {"handlers": ["console"], "level": "INFO", "propagate": False}},
    }


def serve(settings: Settings) -> int:
    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels
    from granian.server import Server

    os.environ[SETTINGS_ENV] = settings.to_env()
    exporter = None
    own_dir: str | None = None
    if settings.metrics:
        from onwards.metrics import prepare_multiprocess_dir, start_exporter, stop_exporter

        try:
            given_dir = os.environ.get("ONWARDS_METRICS_DIR")
            multiproc_dir = prepare_multiprocess_dir(given_dir)
            own_dir = None if given_dir else multiproc_dir
            exporter = start_exporter(settings.metrics_port, settings.metrics_host, multiproc_dir)
        except (ValueError, RuntimeError, OSError) as exc:
            print(f"onwards: error: metrics: {exc}", file=sys.stderr)
            return 2
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    server = Server(
        "onwards.app:create_app",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        loop=Loops.uvloop if sys.platform != "win32" else Loops.asyncio,
        backlog=settings.backlog,
        # Granian's default (backlog / workers) counts idle keep-alive connections from load
        # balancers and long streams; with it, a few hundred open streams starve new requests.
        backpressure=settings.backpressure,
        respawn_failed_workers=True,
        log_level=LogLevels(settings.log_level),
        log_access=False,
        # Granian's own lines (worker spawn, respawn, crash) in the same format as ours.
        log_dictconfig=_granian_log_config(settings.log_format),
        workers_kill_timeout=30,
    )
    try:
        server.serve()
    finally:
        if exporter is not None:
            stop_exporter(exporter)
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "config":
        from onwards.config.commands import run_config_command

        return run_config_command(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = settings_from_args(args, parser)
    configure_logging(settings.log_level, settings.log_format)
    try:
        snapshot = _validate_config(settings)
    except ConfigError as exc:
        print(f"onwards: error: {exc}", file=sys.stderr)
        return 2
    log.info("config %s (version %s, %d targets)", snapshot.origin, snapshot.version, len(snapshot.targets))
    if settings.redis_url:
        log.info("limits are cluster-wide in Redis (prefix %r)", settings.redis_prefix)
    elif settings.workers > 1:
        log.warning(
            "NO --redis-url: limits are enforced PER PROCESS, so %d workers let through up to %dx every "
            "configured rate and concurrency limit. Set --redis-url for exact limits.",
            settings.workers,
            settings.workers,
        )
    else:
        log.info("no --redis-url: limits are enforced in this one process")
    run_dir = tempfile.mkdtemp(prefix="onwards-run-")
    try:
        last_good = os.path.join(run_dir, "last-good-config.json")
        write_last_good(last_good, snapshot)
        settings = dataclasses.replace(settings, last_good_path=last_good)
        return serve(settings)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
