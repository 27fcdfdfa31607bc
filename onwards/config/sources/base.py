"""What every config source shares: the follower protocol, the wake-up signal and the
rule that decides whether a freshly read config is applied, refused or ignored.

A follower runs inside one worker. It never touches the request path itself: it hands a
complete, validated Snapshot to `apply` (which swaps one reference) or a one-line
message to `refuse` (which logs and counts it). Whatever goes wrong while following, the
worker keeps serving the snapshot it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from onwards.config.errors import ConfigError
from onwards.config.model import Snapshot

log = logging.getLogger("onwards.config")

Apply = Callable[[Snapshot], None]
Refuse = Callable[[str], None]

# How often a follower re-reads its source even when nothing announced a change: the
# safety net for lost notifications (a missed pub/sub message, a file event the kernel or
# a network file system never delivered).
DEFAULT_RECHECK_SECS = 30.0


class ConfigFollower(Protocol):
    """Keeps one worker's config in step with its source."""

    async def run(self, apply: Apply, refuse: Refuse) -> None:
        """Follow the source until cancelled.

        Calls `apply(snapshot)` for each new valid config whose version differs from the
        current one and `refuse(message)` once for each invalid one. Survives every error
        (logs and retries); only cancellation ends it.
        """
        ...

    def trigger(self) -> None:
        """Re-read the source now. Safe to call from a signal handler or another thread."""
        ...


class Wakeup:
    """An asyncio.Event that may be set from anywhere.

    `trigger()` is called from a SIGHUP handler (loop.add_signal_handler, or plain
    signal.signal), possibly from another thread; asyncio.Event is not safe to set from
    those places, so once the follower's loop is known every set goes through
    call_soon_threadsafe, which only writes to the loop's self-pipe.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self) -> None:
        """Remember the running loop; call at the start of the follower's run()."""
        self._loop = asyncio.get_running_loop()

    def set(self) -> None:
        loop = self._loop
        if loop is None:
            # Not running yet: nothing can be waiting, so setting the flag runs no callbacks.
            self._event.set()
            return
        # RuntimeError: the loop is closed, the follower is gone, nothing to wake.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._event.set)

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, timeout: float | None) -> bool:
        """Wait until set or until `timeout` seconds pass; True when it was set."""
        if timeout is None:
            await self._event.wait()
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            return False
        return True


def raise_if_cancelling() -> None:
    """Raise CancelledError when this task was asked to stop but is still running.

    On Python 3.11, asyncio.wait_for (used by some Redis clients around reads) can swallow
    a cancellation that races with a completing read; the task then carries on as if never
    cancelled. Followers call this once per loop so that shutting a worker down cannot hang
    on them.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def stop_task(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait for it, re-cancelling a few times if it carries on.

    On Python 3.11, asyncio.wait_for (which some Redis clients use around reads) can lose
    a cancellation that arrives as the read completes; awaiting the task once would then
    wait for ever. The wait is bounded: a worker shutting down must not hang on a helper
    task.
    """
    for _ in range(10):
        if task.done():
            break
        task.cancel()
        await asyncio.wait({task}, timeout=0.2)
    if not task.done():
        # Left to end by itself (its connection is closed next); its outcome is still
        # collected, so asyncio does not log "exception was never retrieved".
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
    elif not task.cancelled():
        task.exception()


class VersionGate:
    """Decides what happens to a config read from a source.

    A version equal to the one being served is ignored (a re-read of unchanged content,
    a notice for a push already applied). A version that was refused before is not
    refused again: a broken file re-read by the safety net, or by an unrelated change in
    its directory, produces one refusal, not one every 30 seconds.
    """

    def __init__(self, current_version: str) -> None:
        self.current = current_version
        self.refused: str | None = None

    def is_new(self, version: str) -> bool:
        return version != self.current and version != self.refused

    def refuse(self, version: str, message: str, refuse: Refuse) -> None:
        self.refused = version
        report_refusal(message, self.current, refuse)

    def offer(self, version: str, result: Snapshot | str, apply: Apply, refuse: Refuse) -> bool:
        """Apply a parsed config, or refuse the message parsing produced; True when applied."""
        if isinstance(result, str):
            self.refuse(version, result, refuse)
            return False
        try:
            apply(result)
        except Exception:
            # Not marked as refused: the config is valid, applying it failed, and the next
            # change or trigger may try again.
            log.exception("applying config version %s failed; keeping version %s", version, self.current)
            return False
        # DEBUG: the apply and refuse callbacks are where reloads are logged and counted.
        log.debug("config version %s applied (was %s)", version, self.current or "(none)")
        self.current = version
        self.refused = None
        return True


def try_parse(parse: Callable[[], Snapshot], origin: str) -> Snapshot | str:
    """The parsed Snapshot, or the one-line message saying why it is invalid.

    Any exception other than ConfigError is a parser bug; a bug must not stop a follower
    either, so it becomes a refusal too (with the traceback in the log).
    """
    try:
        return parse()
    except ConfigError as error:
        return str(error)
    except Exception as error:
        log.exception("unexpected error while parsing config from %s", origin)
        return f"{origin}: unexpected error while parsing the config: {error!r}"


def report_refusal(message: str, current_version: str, refuse: Refuse) -> None:
    """Pass a refusal to the worker's callback (which logs and counts it); a failing
    callback must not stop the follower."""
    log.debug("config refused, keeping version %s: %s", current_version or "(none)", message)
    try:
        refuse(message)
    except Exception:
        log.exception("the refuse callback failed")
