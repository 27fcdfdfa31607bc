"""`onwards`: refuse a busy port, validate the config, prepare metrics, then run Granian with N
workers of the app (onwards/edge/worker.py); the exit status says whether the stop cut requests.

Every flag can also be set with an ONWARDS_* environment variable (the flag wins).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from onwards import __version__
from onwards.config import ConfigError, load_config_file
from onwards.config.last_good import write_last_good
from onwards.config.model import Snapshot
from onwards.edge.drain import CUT_CLEANUP_S, cut_total
from onwards.edge.limits import default_backpressure, raise_open_file_limit
from onwards.edge.ports import port_problem
from onwards.edge.worker import MAIN_PID_ENV, serve_worker
from onwards.limits.redis.check import redis_url_problem
from onwards.logging_setup import configure_logging
from onwards.settings import SETTINGS_ENV, Option, Settings, cli_default, env_name, options

log = logging.getLogger("onwards.cli")

# Exit status when the gateway stopped but cut requests still in flight at the shutdown timeout.
EXIT_CUT = 3

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _number(
    kind: type[int] | type[float], minimum: float | None, maximum: float | None
) -> Callable[[str], int | float]:
    def convert(raw: str) -> int | float:
        try:
            value = kind(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {raw!r}") from None
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g}, got {raw!r}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:g}, got {raw!r}")
        return value

    return convert


def _converter(option: Option) -> Callable[[str], Any]:
    if option.kind == "bool":
        return parse_bool
    if option.kind == "int":
        return _number(int, option.minimum, option.maximum)
    if option.kind == "float":
        return _number(float, option.minimum, option.maximum)

    def text(raw: str) -> str:
        if option.choices and raw not in option.choices:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(option.choices)}, got {raw!r}")
        return raw

    return text


def _env_default(parser: argparse.ArgumentParser, name: str, option: Option, default: Any) -> Any:
    """An ONWARDS_* variable is the default the flag overrides; a bad one stops the start in one line."""
    env = env_name(name)
    raw = os.environ.get(env)
    if raw in (None, ""):
        return default
    try:
        return _converter(option)(raw)
    except argparse.ArgumentTypeError as exc:
        parser.error(f"{env}: {exc}")


def build_parser() -> argparse.ArgumentParser:
    """The parser, generated from the declarations in onwards/settings.py."""
    p = argparse.ArgumentParser(
        prog="onwards",
        description="OpenAI-compatible AI gateway with cluster-wide limits. "
        "Also: `onwards config push|show` to manage a config stored in Redis.",
    )
    for f, option in options():
        default = _env_default(p, f.name, option, cli_default(f, option))
        help_ = f"{option.help} ({env_name(f.name)})"
        if option.kind == "bool":
            # --name, --name=false, --name false and --no-name all work (the onwards docs show each).
            p.add_argument(
                *option.flags,
                dest=f.name,
                nargs="?",
                const=True,
                type=parse_bool,
                default=default,
                metavar="BOOL",
                help=help_,
            )
            p.add_argument(
                f"--no-{option.long[2:]}", dest=f.name, action="store_false", help=argparse.SUPPRESS
            )
        else:
            p.add_argument(
                *option.flags,
                dest=f.name,
                type=_converter(option),
                default=default,
                metavar=option.metavar or (f"{{{','.join(option.choices)}}}" if option.choices else None),
                help=help_,
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
    values = {f.name: getattr(args, f.name) for f, _ in options()}
    if values["targets"]:
        values["targets"] = os.path.abspath(values["targets"])
    return Settings(**values)


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
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server import Server

    open_files = raise_open_file_limit()
    backpressure = settings.backpressure or default_backpressure(open_files)
    log.info("each worker holds up to %d connections (open-file limit %d)", backpressure, open_files)
    os.environ[SETTINGS_ENV] = settings.to_env()
    os.environ[MAIN_PID_ENV] = str(os.getpid())
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
        # Backpressure counts idle, slow and streaming connections alike; Granian's default
        # (backlog / workers) lets a few hundred of them starve new requests (onwards/edge/limits.py).
        backpressure=backpressure,
        respawn_failed_workers=True,
        log_level=LogLevels(settings.log_level),
        log_access=False,
        # Granian's own lines (worker spawn, respawn, crash) in the same format as ours.
        log_dictconfig=_granian_log_config(settings.log_format),
        # hyper's header read timeout also bounds the wait for the next request on an idle
        # keep-alive connection. (A connection that never sends a byte is not covered: hyper starts
        # the timer at the first byte; docs/operations.md.)
        http1_settings=HTTP1Settings(
            header_read_timeout=max(1, round(settings.keepalive_timeout_secs * 1000))
        ),
        # A worker drains, then waits for its requests, then cuts them; past that it is killed.
        workers_kill_timeout=math.ceil(
            settings.drain_secs + settings.shutdown_timeout_secs + CUT_CLEANUP_S + 3
        ),
    )
    try:
        server.serve(spawn_target=serve_worker)
    finally:
        if exporter is not None:
            stop_exporter(exporter)
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)
    cut = cut_total(settings.run_dir) if settings.run_dir else 0
    if cut:
        log.error("%d request%s cut at shutdown (past --shutdown-timeout-secs)", cut, "" if cut == 1 else "s")
        return EXIT_CUT
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "config":
        from onwards.config.commands import run_config_command

        return run_config_command(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = settings_from_args(args, parser)
    if not settings.reuse_port:
        problem = port_problem(settings.host, settings.port)
        if problem:
            print(f"onwards: error: {problem}", file=sys.stderr)
            return 2
    configure_logging(settings.log_level, settings.log_format)
    if settings.redis_url and (problem := redis_url_problem(settings.redis_url, settings.redis_prefix)):
        print(f"onwards: error: {problem}", file=sys.stderr)
        return 2
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
        settings = dataclasses.replace(settings, last_good_path=last_good, run_dir=run_dir)
        return serve(settings)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
