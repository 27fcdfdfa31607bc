"""The disconnect watch: notices a client that went away while its request waits or streams,
and cancels the request's task so its permits are freed.

Waiting on an upstream longer than DISCONNECT_WATCH_DELAY, or starting a stream, starts one task
that reads the ASGI receive channel; quick requests never pay for it. Starting it also arms the
request's deferred lease renewal.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from starlette.types import Receive

if TYPE_CHECKING:
    from onwards.proxy.permits import Permits

DISCONNECT_WATCH_DELAY = 0.5


class DisconnectWatch:
    __slots__ = ("disconnected", "owner", "permits", "receive", "task", "timer")

    def __init__(self, receive: Receive, permits: Permits) -> None:
        """Watch on behalf of the current task, from DISCONNECT_WATCH_DELAY on."""
        self.receive = receive
        self.permits = permits
        self.owner = asyncio.current_task()
        self.task: asyncio.Task[None] | None = None
        self.disconnected = False
        self.timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            DISCONNECT_WATCH_DELAY, self.start
        )

    def start(self) -> None:
        """Watch from now on (idempotent)."""
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._watch())
        self.permits.watch_started()

    async def _watch(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                if self.owner is not None:
                    self.owner.cancel()
                return

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
