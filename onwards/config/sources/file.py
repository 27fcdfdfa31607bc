"""Follow a JSON config file: reload it in this worker whenever its content changes.

The watch is on the file's parent directory, not on the file. A watch on the file itself
dies with the inode it was set on, and the usual ways of replacing a config all replace
the inode: an editor or `mv` writing a temp file and renaming it over the old one, a
Kubernetes ConfigMap swapping its `..data` symlink, a deploy tool deleting and
re-creating the file. The directory outlives all of them.

Events only say "something may have changed"; the content decides. Every wake-up re-reads
the file and compares its content hash with the version being served, so spurious or
duplicate events cost one read and nothing else. On top of events the file is re-read
every `recheck_secs` as a safety net (network file systems and some container mounts
deliver no inotify events at all), and `trigger()` (SIGHUP) re-reads it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from watchfiles import Change, awatch

from onwards.config.model import Snapshot
from onwards.config.parse import content_version, parse_config_bytes
from onwards.config.sources.base import (
    DEFAULT_RECHECK_SECS,
    Apply,
    ConfigFollower,
    Refuse,
    VersionGate,
    Wakeup,
    raise_if_cancelling,
    report_refusal,
    stop_task,
    try_parse,
)

log = logging.getLogger("onwards.config")

# watchfiles groups events for at least STEP_MS of quiet and at most DEBOUNCE_MS, so a
# rename plus the writes around it arrive as one wake-up.
STEP_MS = 50
DEBOUNCE_MS = 100
# A file that does not parse right after an event may still be being written (an editor
# that truncates and then writes in several chunks). It is read again after this pause
# and refused only if it did not change meanwhile.
SETTLE_SECS = 0.25
SETTLE_ATTEMPTS = 8
# How often the watcher checks that the directories it watches are still the ones the
# path leads to (a directory replaced, a symlink pointing somewhere new).
REARM_CHECK_MS = 2_000
WATCH_RETRY_MAX_SECS = 5.0
# How long run() waits for the first watch before reading anyway (a directory that does
# not exist yet cannot be watched; the file is then read and the watch comes later).
WATCH_START_SECS = 2.0


class FileFollower(ConfigFollower):
    """A ConfigFollower for one config file."""

    def __init__(
        self,
        path: str,
        current_version: str,
        *,
        watch: bool = True,
        recheck_secs: float | None = DEFAULT_RECHECK_SECS,
    ) -> None:
        self._path = path  # as the operator wrote it: used in messages and as the origin
        self._abs = os.path.abspath(path)
        self._watch = watch
        self._recheck_secs = recheck_secs
        self._gate = VersionGate(current_version)
        self._wakeup = Wakeup()
        self._missing = False  # logged once per disappearance, not per check
        self._read_error: str | None = None
        self._armed: tuple[tuple[str, int, int], ...] = ()
        self._watch_started = asyncio.Event()

    @property
    def current_version(self) -> str:
        return self._gate.current

    def trigger(self) -> None:
        self._wakeup.set()

    async def run(self, apply: Apply, refuse: Refuse) -> None:
        self._wakeup.bind()
        watcher = asyncio.create_task(self._watch_forever()) if self._watch else None
        try:
            if watcher is not None:
                # Read only once the watch exists: a change landing between a first read
                # and the watch being set up would otherwise wait for the periodic re-check.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(WATCH_START_SECS):
                        await self._watch_started.wait()
            while True:
                raise_if_cancelling()
                # The first pass catches a change made between the worker loading the file
                # and this start.
                try:
                    await self._check(apply, refuse)
                except Exception:
                    log.exception("checking config file %s failed; will try again", self._path)
                await self._wakeup.wait(self._recheck_secs)
                self._wakeup.clear()
        finally:
            if watcher is not None:
                await stop_task(watcher)

    # -- reading ---------------------------------------------------------------------

    async def _check(self, apply: Apply, refuse: Refuse) -> None:
        raw = self._read(refuse)
        if raw is None:
            return
        version = content_version(raw)
        if not self._gate.is_new(version):
            return
        result = self._parse(raw, version)
        for _ in range(SETTLE_ATTEMPTS):
            if not isinstance(result, str):
                break
            await asyncio.sleep(SETTLE_SECS)
            again = self._read(refuse)
            if again is None:
                return
            if again == raw:
                break  # stable and still invalid: a real mistake, not a write in progress
            raw, version = again, content_version(again)
            if not self._gate.is_new(version):
                return
            result = self._parse(raw, version)
        self._gate.offer(version, result, apply, refuse)

    def _parse(self, raw: bytes, version: str) -> Snapshot | str:
        return try_parse(lambda: parse_config_bytes(raw, self._path, version), self._path)

    def _read(self, refuse: Refuse) -> bytes | None:
        """The file's bytes, or None when it cannot be read right now."""
        try:
            raw = Path(self._abs).read_bytes()
        except FileNotFoundError:
            if not self._missing:
                self._missing = True
                log.warning(
                    "config file %s is missing; keeping config version %s and waiting for it to come back",
                    self._path,
                    self._gate.current,
                )
            return None
        except OSError as error:
            # Permission denied, a directory where the file should be: an operator mistake
            # that waiting does not fix, so it is refused like a bad config (once, not on
            # every re-check).
            message = f"{self._path}: cannot read the config file: {error.strerror or error}"
            if message != self._read_error:
                self._read_error = message
                report_refusal(message, self._gate.current, refuse)
            return None
        if self._missing:
            self._missing = False
            log.info("config file %s is back", self._path)
        self._read_error = None
        return raw

    # -- watching --------------------------------------------------------------------

    def _watch_dirs(self) -> tuple[tuple[str, int, int], ...]:
        """The directories to watch, each with its identity (device, inode).

        The path's own directory sees renames, deletions and symlink swaps. When the path
        is (or passes through) a symlink, the directory of the file it resolves to is
        watched too, so an in-place edit of the target is seen. The identities let the
        watcher notice a directory that was replaced or a symlink that now points
        elsewhere, and re-arm on the new ones.
        """
        dirs = [os.path.dirname(self._abs)]
        resolved = os.path.dirname(os.path.realpath(self._abs))
        if resolved not in dirs:
            dirs.append(resolved)
        found = []
        for directory in dirs:
            try:
                st = os.stat(directory)
            except OSError:
                continue
            found.append((directory, st.st_dev, st.st_ino))
        return tuple(found)

    def _relevant(self, _change: Change, path: str) -> bool:
        name = os.path.basename(path)
        if name == os.path.basename(self._abs):
            return True
        if os.path.islink(self._abs) or os.path.realpath(self._abs) != self._abs:
            # Symlink layouts (a ConfigMap's `..data` swap) change other names than the
            # file's own; the content comparison sorts out what really changed.
            return True
        return path in (d for d, _, _ in self._armed)

    async def _watch_forever(self) -> None:
        delay = 0.5
        rearming = False
        warned = False
        while True:
            self._armed = self._watch_dirs()
            if not self._armed:
                if not warned:
                    warned = True
                    log.warning("cannot watch %s: its directory does not exist; retrying", self._path)
                self._watch_started.set()  # nothing to wait for: run() reads the file now
                rearming = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, WATCH_RETRY_MAX_SECS)
                continue
            try:
                changes_stream = awatch(
                    *(d for d, _, _ in self._armed),
                    watch_filter=self._relevant,
                    debounce=DEBOUNCE_MS,
                    step=STEP_MS,
                    rust_timeout=REARM_CHECK_MS,
                    yield_on_timeout=True,
                    recursive=False,
                )
                # The first step of the `async for` below runs, without giving up control,
                # into awatch setting up its inotify watches; whoever these two wake reads
                # the file only after that, so no change can fall between read and watch.
                self._watch_started.set()
                if rearming:
                    self._wakeup.set()  # anything may have changed while nothing watched
                rearming = True
                async for changes in changes_stream:
                    if changes:
                        self._wakeup.set()
                    if self._watch_dirs() != self._armed:
                        log.info("re-arming the watch on %s: its directory moved", self._path)
                        break
                delay = 0.5
                warned = False
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._watch_started.set()
                if not warned:
                    warned = True
                    log.warning("watching %s failed (%s); retrying", self._path, error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, WATCH_RETRY_MAX_SECS)
