"""A private, throw-away redis-server for tests that must stop, kill or restart Redis.

The shared server on 127.0.0.1:6379 is never disturbed: each of these runs on its own free port.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
from collections.abc import Sequence

import pytest

from tests.support.processes import ManagedProcess, redis_available, wait_until


class RedisServer(ManagedProcess):
    """A private, throw-away redis-server (no persistence) on a given loopback port."""

    label = "redis-server"
    startup_timeout = 10.0

    def __init__(self, port: int, extra_args: Sequence[str] = ()) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        super().__init__([*argv, "--daemonize", "no", *extra_args])

    def ready(self) -> bool:
        return redis_available(self.url, timeout=0.5)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
        wait_until(lambda: not self.is_running(), timeout=5)
        self.stop()

    def stop(self, timeout: float = 5.0) -> int | None:
        if self.is_running():
            # A SIGSTOPped server would not act on SIGTERM until continued.
            with contextlib.suppress(ProcessLookupError):
                self.send_signal(signal.SIGCONT)
        return super().stop(timeout)
