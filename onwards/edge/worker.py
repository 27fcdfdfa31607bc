"""The Granian worker process as Onwards runs it: Granian's own ASGI worker, plus two hooks.

Rule: a worker never outlives its main process, and a stop signal starts a drain instead of
closing the listener at once.

- Stop signals. Granian's worker closes its listener on SIGTERM/SIGINT. Here its signal setup is
  wrapped so the stop handle is kept (`granian_stop`); the app's lifespan then installs its own
  SIGTERM/SIGINT handler (onwards/edge/drain.py) and calls `granian_stop` when the drain is over.
- Parent death. A thread polls the parent pid; when the main process is gone (killed by any
  signal, SIGKILL included) the worker stops at once through `on_parent_gone`, and exits by force
  PARENT_GONE_EXIT_S later if that has not finished, so an orphan never keeps serving an old config.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("onwards.worker")

MAIN_PID_ENV = "ONWARDS_MAIN_PID"
PARENT_POLL_S = 0.2
PARENT_GONE_EXIT_S = 1.5

# Set in the worker process by `_hook_granian_signals`; None when the app runs elsewhere (tests,
# an embedding server), where nothing here is installed.
granian_stop: Callable[[], None] | None = None
# Set by the app: what to do, on the event loop, when the main process is gone.
on_parent_gone: Callable[[], None] | None = None
_loop: Any = None
# True in a process started by serve_worker: a drain is then expected to work.
in_onwards_worker = False


def _hook_granian_signals() -> None:
    import granian._signals as granian_signals

    original = granian_signals.set_loop_signals

    def set_loop_signals(loop: Any) -> Any:
        global granian_stop, _loop
        event = original(loop)
        granian_stop = event.set
        _loop = loop
        return event

    granian_signals.set_loop_signals = set_loop_signals


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    log.error("the main process %d is gone: this worker stops now", parent)
    callback, loop = on_parent_gone, _loop
    if callback is not None and loop is not None:
        with contextlib.suppress(RuntimeError):  # the loop already closed
            loop.call_soon_threadsafe(callback)
    time.sleep(PARENT_GONE_EXIT_S)
    # Still alive: something hangs. An orphan must not keep the port.
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    os._exit(70)


def serve_worker(*args: Any, **kwargs: Any) -> None:
    """Granian's spawn target for one worker: the hooks above, then Granian's ASGI lifespan worker."""
    from granian.server.mp import MPServer

    global in_onwards_worker
    in_onwards_worker = True
    _hook_granian_signals()
    # The pid the CLI recorded: a parent that died before this line is noticed too (ppid is then 1).
    parent = int(os.environ.get(MAIN_PID_ENV) or os.getppid())
    threading.Thread(target=_watch_parent, args=(parent,), name="onwards-parent-watch", daemon=True).start()
    MPServer._spawn_asgi_lifespan_worker(*args, **kwargs)
