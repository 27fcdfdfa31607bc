"""Graceful drain of one worker: not ready, still serving, then stop accepting, finish, cut.

Rule, on SIGTERM or SIGINT:
1. at once `/ready` answers 503 (`draining`), so a load balancer takes the instance out;
2. for `drain_secs` new connections and requests are still served as usual;
3. then the listener stops accepting (new connections are refused, idle keep-alive ones close);
4. requests and streams in flight get up to `shutdown_timeout_secs` to finish;
5. the rest are cut: cancelled, so each one's own cleanup releases its permits and writes its
   access-log line; they are counted, and the count is reported to the CLI, whose exit status then
   says requests were cut.
A second signal changes nothing (the parent kills a worker that outlives its timeout). When the main
process dies, the same sequence runs without the drain and with a short timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from onwards.edge import worker
from onwards.errors import error_body

log = logging.getLogger("onwards.drain")

PARENT_GONE_TIMEOUT_S = 0.5
# Cut requests get this long to run their cleanup (release permits, log) after the cancel.
CUT_CLEANUP_S = 2.0
CUT_REPORT_PREFIX = "cut-"
SHUTTING_DOWN = error_body(
    "The gateway is shutting down and could not finish this request in time. Please retry.",
    "server_error",
    "shutting_down",
)
_CUT_HEADERS = (
    (b"content-type", b"application/json"),
    (b"content-length", str(len(SHUTTING_DOWN)).encode()),
    (b"connection", b"close"),
)


class Drain:
    """In-flight requests of one worker and its stop sequence."""

    def __init__(
        self, drain_secs: float, shutdown_timeout_secs: float, port: int, report_dir: str | None
    ) -> None:
        self.drain_secs = drain_secs
        self.shutdown_timeout_secs = shutdown_timeout_secs
        self.port = port
        self.report_dir = report_dir
        self.in_flight: set[asyncio.Task[Any]] = set()
        self.draining = False  # /ready answers 503 from the first signal on
        self.cutting = False  # set just before the cut: a cancel seen then is ours
        self._stopping = False
        self._timer: asyncio.TimerHandle | None = None
        self._finisher: asyncio.Task[int] | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Take over SIGTERM/SIGINT from Granian; False when not running under serve_worker."""
        if worker.granian_stop is None:
            if worker.in_onwards_worker:
                # Granian changed the internals the hook relies on (tests/unit/test_edge_granian.py).
                log.warning("graceful drain unavailable: Granian's stop signal could not be hooked")
            return False
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.begin)
        worker.on_parent_gone = self.parent_gone
        return True

    def begin(self) -> None:
        if self.draining:
            return
        self.draining = True
        log.info(
            "stop signal: draining, /ready answers 503; new connections are served for %.3g s more, "
            "then requests in flight get %.3g s to finish",
            self.drain_secs,
            self.shutdown_timeout_secs,
        )
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.drain_secs, self.stop_accepting)

    def parent_gone(self) -> None:
        self.draining = True
        self.shutdown_timeout_secs = min(self.shutdown_timeout_secs, PARENT_GONE_TIMEOUT_S)
        self.stop_accepting()

    def stop_accepting(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
        # Granian's accept loop ends and its listener closes: new connections are refused, so a
        # load balancer retries them elsewhere at once; idle keep-alive connections close.
        stop = worker.granian_stop
        if stop is not None:
            stop()
        log.info(
            "drain over: stopped accepting, %d request%s in flight",
            len(self.in_flight),
            "" if len(self.in_flight) == 1 else "s",
        )
        # Granian now waits for every open connection before the lifespan shutdown, so the
        # shutdown timeout runs here, beside it.
        self._finisher = asyncio.get_running_loop().create_task(self._finish())

    async def finish(self) -> int:
        """At lifespan shutdown: how many requests were cut (waiting and cutting first if no stop
        signal started that already)."""
        if self._finisher is None:
            return await self._finish()
        return await self._finisher

    async def _finish(self) -> int:
        pending = {t for t in self.in_flight if not t.done()}
        if pending:
            _, pending = await asyncio.wait(pending, timeout=self.shutdown_timeout_secs)
        if not pending:
            return 0
        self.cutting = True
        log.warning(
            "shutdown timeout (%.3g s): cutting %d request%s still in flight",
            self.shutdown_timeout_secs,
            len(pending),
            "" if len(pending) == 1 else "s",
        )
        for task in pending:
            task.cancel("cut at shutdown")
        await asyncio.wait(pending, timeout=CUT_CLEANUP_S)
        self._report(len(pending))
        return len(pending)

    def _report(self, cut: int) -> None:
        if not self.report_dir:
            return
        path = os.path.join(self.report_dir, f"{CUT_REPORT_PREFIX}{os.getpid()}")
        with contextlib.suppress(OSError), open(path, "w") as out:
            out.write(str(cut))


async def end_cut_response(send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    """Finish the response of a request that was cut: a 503 when nothing was sent yet, else the end
    of the body as it stands (a stream then lacks its last events). Granian keeps the connection,
    and so the worker, open until the response ends."""
    try:
        await send({"type": "http.response.start", "status": 503, "headers": list(_CUT_HEADERS)})
        await send({"type": "http.response.body", "body": SHUTTING_DOWN, "more_body": False})
        return
    except Exception:  # the response had started (or the client is gone)
        pass
    with contextlib.suppress(Exception):
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def cut_total(report_dir: str) -> int:
    """The CLI's side: requests every worker reported cut at shutdown."""
    total = 0
    with contextlib.suppress(OSError):
        for name in os.listdir(report_dir):
            if name.startswith(CUT_REPORT_PREFIX):
                with contextlib.suppress(OSError, ValueError), open(os.path.join(report_dir, name)) as f:
                    total += int(f.read().strip() or 0)
    return total
