"""The last config that validated, kept on disk for workers that start while the source is broken.

Granian starts workers at any time (respawns after a crash, SIGHUP replaces them all). A worker
that read a broken file at start would fail to start, and a worker that keeps failing makes
Granian stop the whole server. So the CLI writes the config it validated here, every worker
that applies a newer one writes that, and a worker that cannot load the file at start serves
this one instead and reports the file as refused.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("onwards.config")


def write_last_good(path: str, raw: bytes) -> None:
    """Replace the file atomically (temp file + rename), so a reader never sees half of it."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as handle:
            handle.write(raw)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot keep the last good config in %s: %s", path, exc)


def read_last_good(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None
