"""Process settings: declared once here, with their flag, environment variable, default and help.

The CLI builds its parser from these declarations and the README's flag table is generated from them
(a test fails when the two disagree), so a setting is never described in three places.

Workers may be forked or spawned, so the settings travel in one environment variable as JSON rather
than in module globals.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Literal

SETTINGS_ENV = "ONWARDS_WORKER_SETTINGS"
ENV_PREFIX = "ONWARDS_"

Kind = Literal["str", "int", "float", "bool"]
# Marks an Option whose CLI default is the dataclass default (dataclasses.MISSING would mean "required").
SAME_DEFAULT: Any = object()


@dataclass(frozen=True, slots=True)
class Option:
    """How one setting is given on the command line and in the environment, and how it is documented."""

    flags: tuple[str, ...]  # e.g. ("-p", "--port"); the long form is last
    help: str
    kind: Kind = "str"
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    # The default the CLI applies when it differs from the dataclass default (which embedders get).
    cli_default: Any = SAME_DEFAULT
    # How the README shows the default, when the value itself does not say it well.
    shown_default: str | None = None

    @property
    def long(self) -> str:
        return self.flags[-1]


def _opt(default: Any, *flags: str, help: str, **more: Any) -> Any:
    return field(default=default, metadata={"option": Option(flags=tuple(flags), help=help, **more)})


@dataclass(frozen=True, slots=True)
class Settings:
    targets: str | None = _opt(
        None, "-f", "--targets", help="JSON config file", metavar="PATH", shown_default="required*"
    )
    config_from_redis: bool = _opt(
        False,
        "--config-from-redis",
        kind="bool",
        help="load the config stored by `onwards config push` and follow its updates (*instead of `-f`)",
    )
    host: str = _opt("0.0.0.0", "--host", help="listen address")
    port: int = _opt(3000, "-p", "--port", kind="int", minimum=0, maximum=65535, help="listen port")
    workers: int = _opt(
        1,
        "--workers",
        kind="int",
        minimum=1,
        metavar="N",
        help="Granian worker processes (crashed workers are respawned)",
    )
    redis_url: str | None = _opt(
        None,
        "--redis-url",
        metavar="URL",
        shown_default="none",
        help="Redis for cluster-wide limits (and the config with --config-from-redis): redis://, rediss://, "
        "redis+sentinel://host:port[,...]/service[/db], redis+cluster://host:port[,...]; "
        "without it limits are per process",
    )
    redis_prefix: str = _opt(
        "onwards", "--redis-prefix", metavar="P", help="prefix of every Redis key and channel"
    )
    responses_ttl_secs: int = _opt(
        30 * 24 * 3600,
        "--responses-ttl-secs",
        kind="int",
        minimum=1,
        metavar="S",
        shown_default="`2592000` (30 days)",
        help="how long a stored response can be continued with previous_response_id "
        "(in Redis with --redis-url, else in each worker's memory)",
    )
    watch: bool = _opt(True, "-w", "--watch", kind="bool", help="reload the config file when it changes")
    metrics: bool = _opt(True, "-m", "--metrics", kind="bool", help="serve Prometheus metrics")
    metrics_host: str = _opt("0.0.0.0", "--metrics-host", help="metrics address")
    metrics_port: int = _opt(
        9090, "--metrics-port", kind="int", minimum=0, maximum=65535, help="metrics port"
    )
    metrics_prefix: str = _opt("onwards", "--metrics-prefix", help="prefix of every metric name")
    # None: not given on the command line, so the config's http_pool (or its default) applies.
    pool_max_idle_per_host: int | None = _opt(
        None,
        "--pool-max-idle-per-host",
        kind="int",
        minimum=0,
        metavar="N",
        shown_default="`100`",
        help="idle upstream connections kept per host, per worker (wins over the config's http_pool)",
    )
    pool_idle_timeout_secs: float | None = _opt(
        None,
        "--pool-idle-timeout-secs",
        kind="float",
        minimum=0,
        metavar="S",
        shown_default="`90`",
        help="how long an idle upstream connection is kept (wins over the config's http_pool)",
    )
    log_level: str = _opt(
        "info",
        "--log-level",
        choices=("debug", "info", "warning", "error", "critical"),
        help="debug, info, warning, error, critical",
    )
    log_format: str = _opt(
        "pretty", "--log-format", choices=("json", "pretty"), help="`json` (one object a line) or `pretty`"
    )
    access_log: bool = _opt(True, "--access-log", kind="bool", help="one line per request")
    backlog: int = _opt(2048, "--backlog", kind="int", minimum=1, metavar="N", help="listen backlog")
    # None: derived from the open-file limit at start (onwards/edge/limits.py).
    backpressure: int | None = _opt(
        None,
        "--backpressure",
        kind="int",
        minimum=1,
        metavar="N",
        shown_default="auto",
        help="connections one worker serves at once before new ones wait (auto: half the open-file limit)",
    )
    reuse_port: bool = _opt(
        False,
        "--reuse-port",
        kind="bool",
        help="share the listen port with a process already bound to it (off: a busy port stops the start)",
    )
    body_timeout_secs: float = _opt(
        30.0,
        "--body-timeout-secs",
        kind="float",
        minimum=0.001,
        metavar="S",
        help="longest time to receive a request body; a slower one gets 408",
    )
    keepalive_timeout_secs: float = _opt(
        30.0,
        "--keepalive-timeout-secs",
        kind="float",
        minimum=0.001,
        metavar="S",
        help="longest wait for the next request's headers on a connection (idle keep-alive and slow headers)",
    )
    drain_secs: float = _opt(
        5.0,
        "--drain-secs",
        kind="float",
        minimum=0,
        metavar="S",
        help="after SIGTERM: /ready answers 503 while new connections are still served for this long",
    )
    shutdown_timeout_secs: float = _opt(
        30.0,
        "--shutdown-timeout-secs",
        kind="float",
        minimum=0,
        metavar="S",
        help="after the drain: how long requests and streams in flight may finish before they are cut",
    )
    # Freeze the loaded app and raise the collector's threshold in each worker (gc_tuning.py). Off
    # unless the CLI turns it on: an app embedded in another process leaves its collector alone.
    gc_tuning: bool = _opt(
        False,
        "--gc-tuning",
        kind="bool",
        cli_default=True,
        help="freeze the loaded app and run Python's garbage collector less often in each worker",
    )
    # Where workers keep the last config that validated (written by the CLI at start and by any
    # worker that applies a new one), so a worker that starts while the file is broken serves it.
    # Internal: set by the CLI, not a flag.
    last_good_path: str | None = None
    # Internal: the CLI's run directory, where each worker reports how many requests it cut at shutdown.
    run_dir: str | None = None

    def to_env(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        raw = (environ if environ is not None else os.environ).get(SETTINGS_ENV)
        if not raw:
            return cls()
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in json.loads(raw).items() if k in fields})


def options() -> list[tuple[dataclasses.Field[Any], Option]]:
    """Every setting that is a flag, in declaration order, with its declaration."""
    return [(f, f.metadata["option"]) for f in dataclasses.fields(Settings) if "option" in f.metadata]


def env_name(setting: str) -> str:
    return ENV_PREFIX + setting.upper()


def cli_default(f: dataclasses.Field[Any], option: Option) -> Any:
    return f.default if option.cli_default is SAME_DEFAULT else option.cli_default


def flag_table() -> str:
    """The README's table of flags, generated from the declarations above."""
    rows = ["| flag | env | default | meaning |", "|---|---|---|---|"]
    for f, option in options():
        names = ", ".join(option.flags)
        if option.kind == "bool":
            names = f"{option.long} / --no-{option.long[2:]}"
        elif option.metavar:
            names = f"{names} {option.metavar}"
        default = cli_default(f, option)
        if option.shown_default is not None:
            shown = option.shown_default
        elif option.kind == "bool":
            shown = "on" if default else "off"
        else:
            shown = f"`{default}`"
        rows.append(f"| `{names}` | `{env_name(f.name)}` | {shown} | {option.help} |")
    rows.append("| `-V, --version` | | | print the version |")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m onwards.settings prints the README table
    print(flag_table())
