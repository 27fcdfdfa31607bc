"""The access log: one line per proxied request, built cheaply and written in batches.

The `logging` module is not on this path: a LogRecord, a formatter pass and an unbuffered write per
request cost about a third of the gateway's throughput. Here a line is one orjson call (json) or one
f-string (pretty), appended to a per-worker buffer. The buffer is written in one `write` when it
reaches 64 KiB, 100 ms after its first line, at the lifespan's end and when the worker process exits,
whichever comes first. A worker that crashes therefore loses at most the last 100 ms of lines.

The lines look like the `logging` lines of onwards/logging_setup.py (same timestamp, level, logger
and pid fields), so the stream reads as one log.
"""

from __future__ import annotations

import asyncio
import atexit
import multiprocessing.util
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from starlette.types import Scope

    from onwards.proxy.exchange import Outcome

MAX_BUFFER_BYTES = 64 * 1024
MAX_DELAY_S = 0.1
LOGGER = "onwards.access"

Writer = Callable[[bytes], Any]


def write_stderr(data: bytes) -> None:
    """Write all of `data` to file descriptor 2 (a pipe may take it in parts)."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(2, view)
        except InterruptedError:
            continue
        except OSError:
            return  # stderr is gone: there is nowhere left to say so
        view = view[written:]


class AccessLog:
    """One worker's access log. Not thread-safe: it lives on the worker's event loop."""

    __slots__ = (
        "_buffer",
        "_clock",
        "_fmt",
        "_max_bytes",
        "_max_delay",
        "_pid",
        "_stamp",
        "_timer",
        "write",
    )

    def __init__(
        self,
        fmt: str,
        write: Writer = write_stderr,
        *,
        max_bytes: int = MAX_BUFFER_BYTES,
        max_delay: float = MAX_DELAY_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if fmt not in ("json", "pretty"):
            raise ValueError(f"unknown log format {fmt!r}")
        self._fmt = fmt
        self.write = write
        self._max_bytes = max_bytes
        self._max_delay = max_delay
        self._clock = clock
        self._pid = os.getpid()
        # One growing bytearray, not a list of lines: keeping many small bytes objects alive until the
        # write cost several times more than building them.
        self._buffer = bytearray()
        self._timer: asyncio.TimerHandle | None = None
        self._stamp = (-1, "")  # (second, "HH:MM:SS") of the last pretty line: one strftime a second

    def record(
        self,
        scope: Scope,
        route: str,
        status: int,
        request_id: str,
        outcome: Outcome,
        seconds: float,
    ) -> None:
        """Buffer the line of one finished request."""
        now = self._clock()
        client = scope.get("client")
        host = client[0] if client else ""
        if self._fmt == "json":
            line = self._json(now, scope["method"], route, status, request_id, host, outcome, seconds)
        else:
            line = self._pretty(now, scope["method"], route, status, request_id, host, outcome, seconds)
        buffer = self._buffer
        buffer += line
        if len(buffer) >= self._max_bytes:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._max_delay, self._due)

    def _json(
        self,
        now: float,
        method: str,
        route: str,
        status: int,
        request_id: str,
        host: str,
        outcome: Outcome,
        seconds: float,
    ) -> bytes:
        return orjson.dumps(
            {
                "ts": round(now, 6),
                "level": "info",
                "logger": LOGGER,
                "msg": f"{method} {route} {status}",
                "pid": self._pid,
                "request_id": request_id,
                "client": host,
                "method": method,
                "route": route,
                "status": status,
                "target": outcome.target,
                "provider": outcome.provider,
                "key": outcome.key,
                "attempts": outcome.attempts,
                "limiter": outcome.limiter,
                "duration_ms": round(seconds * 1000, 3),
                "bytes_out": outcome.bytes_out,
                "prompt_tokens": outcome.prompt_tokens,
                "completion_tokens": outcome.completion_tokens,
                "error": outcome.error,
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )

    def _pretty(
        self,
        now: float,
        method: str,
        route: str,
        status: int,
        request_id: str,
        host: str,
        outcome: Outcome,
        seconds: float,
    ) -> bytes:
        second = int(now)
        if self._stamp[0] != second:
            self._stamp = (second, time.strftime("%H:%M:%S", time.localtime(second)))
        millis = int((now - second) * 1000)
        # Empty fields are left out, as the logging formatter does.
        line = (
            f"{self._stamp[1]}.{millis:03d} INFO    [{self._pid}] {LOGGER}: {method} {route} {status}  "
            f"request_id={request_id}"
        )
        if host:
            line += f" client={host}"
        line += f" method={method} route={route} status={status} target={outcome.target}"
        if outcome.provider:
            line += f" provider={outcome.provider}"
        if outcome.key:
            line += f" key={outcome.key}"
        line += (
            f" attempts={outcome.attempts} limiter={outcome.limiter}"
            f" duration_ms={round(seconds * 1000, 3)} bytes_out={outcome.bytes_out}"
        )
        if outcome.prompt_tokens or outcome.completion_tokens:
            line += f" prompt_tokens={outcome.prompt_tokens} completion_tokens={outcome.completion_tokens}"
        error = outcome.error
        if error:
            if "\n" in error or "\r" in error:
                # The one client-chosen text (an unknown model name) must not start a line of its own.
                error = error.replace("\r", "\\r").replace("\n", "\\n")
            line += f" error={error}"
        return (line + "\n").encode("utf-8", "backslashreplace")

    def _due(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """Write everything buffered, in one write."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._buffer:
            return
        data = bytes(self._buffer)
        self._buffer.clear()
        self.write(data)

    def flush_at_exit(self) -> None:
        """Flush when this process exits, by whichever way it does.

        A Granian worker is a forked multiprocessing child: it ends in os._exit, which skips atexit
        but runs multiprocessing's own exit finalizers. A process that exits normally runs atexit.
        Flushing twice writes nothing the second time.
        """
        atexit.register(self.flush)
        multiprocessing.util.Finalize(None, self.flush, exitpriority=10)
