"""Process settings: what the CLI decided, handed to every Granian worker.

Workers may be forked or spawned, so the settings travel in one environment variable as
JSON rather than in module globals.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

SETTINGS_ENV = "ONWARDS_WORKER_SETTINGS"


@dataclass(frozen=True, slots=True)
class Settings:
    targets: str | None = None
    config_from_redis: bool = False
    host: str = "0.0.0.0"
    port: int = 3000
    workers: int = 1
    redis_url: str | None = None
    redis_prefix: str = "onwards"
    watch: bool = True
    metrics: bool = True
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9090
    metrics_prefix: str = "onwards"
    # None: not given on the command line, so the config's http_pool (or its default) applies.
    pool_max_idle_per_host: int | None = None
    pool_idle_timeout_secs: float | None = None
    log_level: str = "info"
    log_format: str = "pretty"
    access_log: bool = True
    backlog: int = 2048
    backpressure: int = 4096
    # Where workers keep the last config that validated (written by the CLI at start and by any
    # worker that applies a new one), so a worker that starts while the file is broken serves it.
    last_good_path: str | None = None
    # Freeze the loaded app and raise the collector's threshold in each worker (gc_tuning.py). Off
    # unless the CLI turns it on: an app embedded in another process leaves its collector alone.
    gc_tuning: bool = False

    def to_env(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        raw = (environ if environ is not None else os.environ).get(SETTINGS_ENV)
        if not raw:
            return cls()
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in json.loads(raw).items() if k in fields})
