"""The worker's upstream pool: idle connections capped per host, retired hosts closed."""

from __future__ import annotations

import asyncio

from onwards.config.model import HttpPool
from onwards.proxy.client import build_session


def idle(session, port: int) -> int:
    return sum(len(conns) for key, conns in session.connector._conns.items() if key.port == port)


async def test_idle_connections_are_capped_per_host_and_active_ones_are_not(mock_upstream):
    mock_upstream.delay = 0.2
    session = build_session(HttpPool(max_idle_per_host=2, idle_timeout_secs=30))
    try:

        async def one() -> int:
            async with session.post(f"{mock_upstream.url}/v1/chat/completions", json={"model": "m"}) as r:
                await r.read()
                return r.status

        # Five at once all run (no queueing behind the idle cap)...
        assert await asyncio.gather(*(one() for _ in range(5))) == [200] * 5
        assert mock_upstream.max_in_flight == 5
        # ...and only two of their connections are kept afterwards.
        assert idle(session, mock_upstream.port) == 2
    finally:
        await session.close()


async def test_keep_only_closes_idle_connections_to_hosts_no_provider_uses(mock_upstream_factory):
    a, b = mock_upstream_factory("a"), mock_upstream_factory("b")
    session = build_session(HttpPool())
    try:
        for upstream in (a, b):
            async with session.get(f"{upstream.url}/v1/models") as r:
                await r.read()
        assert idle(session, a.port) == 1 and idle(session, b.port) == 1

        session.connector.keep_only({f"{a.url}/v1/"})
        assert idle(session, a.port) == 1
        assert idle(session, b.port) == 0
        # A request to the retired host still works; its connection is closed when it ends.
        async with session.get(f"{b.url}/v1/models") as r:
            await r.read()
        assert idle(session, b.port) == 0
    finally:
        await session.close()
