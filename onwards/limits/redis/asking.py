"""The side connection for Redis Cluster `ASK`: calls redirected to a slot's importing node.

While the gateway's slot is being migrated, the owner answers `ASK <slot> <host:port>` for a call
whose keys have already moved. That one call must go to the named node preceded by `ASKING` (which
lets only the very next command of that connection through). It goes on a connection of its own,
opened on the first ASK and kept for the next ones (a migration sends many), so the data connection
and its one write per loop iteration stay as they are. The slot map is not changed: until
`SETSLOT NODE` ends the migration, every other call still goes to the owner.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol


class Connection(Protocol):
    """What is needed of one pipelined connection (transport._Protocol)."""

    lost: Exception | None

    def send(self, packed: bytes) -> asyncio.Future[Any]: ...

    def close_when_idle(self) -> None: ...


class AskChannel:
    """One connection to the node the last ASK named; another node replaces it."""

    def __init__(
        self, open_connection: Callable[[tuple[str, int]], Awaitable[Connection]], asking: bytes
    ) -> None:
        self._open = open_connection
        self._asking = asking  # the packed ASKING command
        self._node: tuple[str, int] | None = None
        self._connection: Connection | None = None
        # Single flight: calls that get ASK together share one new connection.
        self._opening = asyncio.Lock()

    async def send(self, node: tuple[str, int], packed: bytes) -> Any:
        """ASKING and `packed` to `node`, in one write; the reply to `packed`."""
        connection = await self._connection_to(node)
        asking = connection.send(self._asking)
        replies = await asyncio.gather(asking, connection.send(packed), return_exceptions=True)
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return replies[1]

    def close(self) -> None:
        """Let the connection go once its calls have their replies (the data connection moved)."""
        connection, self._connection, self._node = self._connection, None, None
        if connection is not None:
            connection.close_when_idle()

    async def _connection_to(self, node: tuple[str, int]) -> Connection:
        async with self._opening:
            connection = self._connection
            if connection is not None and self._node == node and connection.lost is None:
                return connection
            self.close()
            connection = await self._open(node)
            self._node, self._connection = node, connection
            return connection
