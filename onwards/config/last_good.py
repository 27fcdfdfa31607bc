"""The last config that validated, kept on disk for workers that start while the source is broken.

Granian starts workers at any time (respawns after a crash, SIGHUP replaces them all). A worker
that could not load its config at start (a broken file, an unreachable Redis) would fail to
start, and a worker that keeps failing makes Granian stop the whole server. So the CLI writes
the config it validated here, every worker that applies a newer one writes that, and a worker
that cannot load its source at start serves this one instead, with the same version its
siblings report, while its follower refuses or waits for the source.
"""

from __future__ import annotations

import logging
import os

import orjson

from onwards.config.errors import ConfigError
from onwards.config.model import Snapshot
from onwards.config.parse import parse_config_bytes

log = logging.getLogger("onwards.config")


def write_last_good(path: str, snapshot: Snapshot) -> None:
    """Replace the file atomically (temp file + rename), so a reader never sees half of it."""
    if not snapshot.raw:
        return
    record = {"version": snapshot.version, "origin": snapshot.origin, "body": snapshot.raw.decode("utf-8")}
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as handle:
            handle.write(orjson.dumps(record))
        os.replace(tmp, path)
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot keep the last good config in %s: %s", path, exc)


def load_last_good(path: str) -> Snapshot | None:
    """The kept config, parsed again (it validated when kept), or None when there is none."""
    try:
        with open(path, "rb") as handle:
            record = orjson.loads(handle.read())
        return parse_config_bytes(record["body"].encode("utf-8"), record["origin"], record["version"])
    except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
        log.warning("no usable last good config in %s: %s", path, exc)
        return None
