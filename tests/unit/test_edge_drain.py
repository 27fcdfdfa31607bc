"""The drain state machine of one worker, and the busy-port check, without Granian."""

from __future__ import annotations

import asyncio
import socket

import pytest

from onwards.edge import drain as drain_module
from onwards.edge import worker
from onwards.edge.drain import Drain, cut_total
from onwards.edge.ports import port_problem


@pytest.fixture
def stopped(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr(worker, "granian_stop", lambda: calls.append(1))
    return calls


async def test_begin_marks_draining_then_stops_accepting_once(stopped: list[int]):
    d = Drain(0.01, 1.0, 0, None)
    d.begin()
    d.begin()  # a second signal changes nothing
    assert d.draining
    while not stopped:
        await asyncio.sleep(0.01)
    assert await d.finish() == 0
    assert stopped == [1]


async def test_requests_in_flight_finish_within_the_timeout(stopped: list[int]):
    d = Drain(0, 30.0, 0, None)
    done = asyncio.Event()

    async def request() -> None:
        await done.wait()

    task = asyncio.get_running_loop().create_task(request())
    d.in_flight.add(task)
    d.stop_accepting()
    asyncio.get_running_loop().call_soon(done.set)
    assert await d.finish() == 0
    assert task.done() and not task.cancelled()


async def test_requests_past_the_timeout_are_cut_and_reported(stopped: list[int], tmp_path):
    d = Drain(0, 0.05, 0, str(tmp_path))
    seen: list[bool] = []

    async def stuck() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append(d.cutting)  # the handler can tell a cut from a disconnect
            raise

    tasks = [asyncio.get_running_loop().create_task(stuck()) for _ in range(2)]
    d.in_flight.update(tasks)
    await asyncio.sleep(0)
    d.stop_accepting()
    assert await d.finish() == 2
    assert seen == [True, True]
    assert cut_total(str(tmp_path)) == 2


async def test_parent_gone_skips_the_drain_and_shortens_the_timeout(stopped: list[int]):
    d = Drain(60, 30, 0, None)
    d.parent_gone()
    assert d.draining and stopped == [1]
    assert d.shutdown_timeout_secs == drain_module.PARENT_GONE_TIMEOUT_S
    assert await d.finish() == 0


def test_install_is_a_no_op_outside_the_onwards_worker(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(worker, "granian_stop", None)
    assert Drain(1, 1, 0, None).install(asyncio.new_event_loop()) is False


def test_cut_total_ignores_other_files(tmp_path):
    (tmp_path / "cut-1").write_text("3")
    (tmp_path / "cut-2").write_text("oops")
    (tmp_path / "last-good-config.json").write_text("{}")
    assert cut_total(str(tmp_path)) == 3
    assert cut_total(str(tmp_path / "missing")) == 0


def test_port_problem_names_a_busy_port():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        problem = port_problem("127.0.0.1", port)
        assert problem is not None and "already in use" in problem and "--reuse-port" in problem
    assert port_problem("127.0.0.1", port) is None
    assert port_problem("127.0.0.1", 0) is None
    assert port_problem("no-such-host.invalid", 3000) is not None
