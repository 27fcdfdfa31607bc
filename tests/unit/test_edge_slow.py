"""The body-read sweeper: slow reads are cancelled and recognised as such; fast ones are left alone."""

from __future__ import annotations

import asyncio

from onwards.edge.slow import BodyWatch


async def test_a_slow_read_is_cancelled_and_marked():
    watch = BodyWatch(0.05)
    watch.start()
    outcome: list[str] = []

    async def slow_read() -> None:
        task = asyncio.current_task()
        assert task is not None
        watch.begin(task)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            outcome.append("expired" if watch.end(task) else "other")
            task.uncancel()

    try:
        await asyncio.wait_for(slow_read(), timeout=10)
    finally:
        await watch.stop()
    assert outcome == ["expired"]
    assert not watch.reading and not watch.expired


async def test_a_read_that_finishes_is_forgotten():
    watch = BodyWatch(30)
    task = asyncio.current_task()
    assert task is not None
    watch.begin(task)
    assert watch.end(task) is False
    assert not watch.reading
