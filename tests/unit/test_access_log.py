"""The access log: its two line formats, its batching, and its flushes at shutdown and at exit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from onwards.access_log import AccessLog
from onwards.app import create_app
from onwards.proxy.exchange import Outcome
from onwards.settings import Settings
from tests.support.mock_upstream import MockUpstream

SCOPE: dict[str, Any] = {"method": "POST", "client": ("10.1.2.3", 51234)}
CLOCK = 1795309907.266999


class FakeWriter:
    """Records every write; `wrote` is set on each."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.wrote = asyncio.Event()

    def __call__(self, data: bytes) -> None:
        self.writes.append(data)
        self.wrote.set()

    def lines(self) -> list[str]:
        return b"".join(self.writes).decode().splitlines()


def outcome(**fields: Any) -> Outcome:
    base: dict[str, Any] = {
        "target": "gpt-4o",
        "provider": "gpt-4o/0",
        "attempts": 1,
        "limiter": "allowed",
        "key": "team-a",
        "bytes_out": 321,
    }
    return Outcome(**{**base, **fields})


def one_line(fmt: str, result: Outcome, status: int = 200, scope: dict[str, Any] = SCOPE) -> str:
    writer = FakeWriter()
    log = AccessLog(fmt, writer, clock=lambda: CLOCK)
    log.record(scope, "/v1/chat/completions", status, "rid-1", result, 0.0134)
    log.flush()
    assert len(writer.writes) == 1 and writer.writes[0].endswith(b"\n")
    (line,) = writer.lines()
    return line


async def test_a_json_line_has_every_field_and_the_logging_lines_shape() -> None:
    entry = json.loads(one_line("json", outcome()))
    assert entry == {
        "ts": CLOCK,
        "level": "info",
        "logger": "onwards.access",
        "msg": "POST /v1/chat/completions 200",
        "pid": entry["pid"],
        "request_id": "rid-1",
        "client": "10.1.2.3",
        "method": "POST",
        "route": "/v1/chat/completions",
        "status": 200,
        "target": "gpt-4o",
        "provider": "gpt-4o/0",
        "key": "team-a",
        "attempts": 1,
        "limiter": "allowed",
        "duration_ms": 13.4,
        "bytes_out": 321,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "error": "",
    }
    assert isinstance(entry["pid"], int)


async def test_a_pretty_line_reads_as_key_value_pairs_without_empty_fields() -> None:
    line = one_line("pretty", outcome())
    pattern = (
        r"\d\d:\d\d:\d\d\.266 INFO    \[\d+\] onwards\.access: POST /v1/chat/completions 200  "
        r"request_id=rid-1 client=10\.1\.2\.3 method=POST route=/v1/chat/completions status=200 "
        r"target=gpt-4o provider=gpt-4o/0 key=team-a attempts=1 limiter=allowed duration_ms=13\.4 "
        r"bytes_out=321"
    )
    assert re.fullmatch(pattern, line), line
    refused = one_line(
        "pretty",
        outcome(provider="", key="", attempts=0, limiter="none", bytes_out=80, error="invalid bearer token"),
        status=401,
        scope={"method": "POST", "client": None},
    )
    assert " provider=" not in refused and " key=" not in refused and " client=" not in refused, refused
    assert refused.endswith(" bytes_out=80 error=invalid bearer token"), refused


async def test_the_reported_usage_is_in_both_formats() -> None:
    pretty = one_line("pretty", outcome(prompt_tokens=12, completion_tokens=31))
    assert pretty.endswith(" bytes_out=321 prompt_tokens=12 completion_tokens=31"), pretty
    entry = json.loads(one_line("json", outcome(prompt_tokens=12, completion_tokens=31)))
    assert (entry["prompt_tokens"], entry["completion_tokens"]) == (12, 31)


async def test_an_error_with_a_line_break_stays_on_one_line() -> None:
    for fmt in ("pretty", "json"):
        written = one_line(fmt, outcome(error="unknown model 'a\nFAKE 00:00:00 line'"))
        assert "FAKE" in written  # one_line already required exactly one line


async def test_many_requests_are_written_in_few_writes() -> None:
    writer = FakeWriter()
    log = AccessLog("json", writer, max_delay=3600)
    line_size = len(one_line("json", outcome())) + 1
    count = 2000
    for i in range(count):
        log.record(SCOPE, "/v1/chat/completions", 200, f"rid-{i}", outcome(), 0.001)
    log.flush()
    # Full 64 KiB buffers, then the rest: one write per 64 KiB, not one per request.
    assert len(writer.writes) == -(-count * line_size // (64 * 1024))
    assert all(len(w) >= 64 * 1024 for w in writer.writes[:-1])
    assert [json.loads(x)["request_id"] for x in writer.lines()] == [f"rid-{i}" for i in range(count)]


async def test_a_quiet_buffer_is_written_by_its_timer() -> None:
    writer = FakeWriter()
    log = AccessLog("pretty", writer, max_delay=0.05)
    for i in range(3):
        log.record(SCOPE, "/v1/embeddings", 200, f"rid-{i}", outcome(), 0.001)
    assert writer.writes == []  # nothing per request
    await asyncio.wait_for(writer.wrote.wait(), 10)
    assert len(writer.writes) == 1 and len(writer.lines()) == 3
    log.flush()  # nothing left: no empty write
    assert len(writer.writes) == 1


@contextlib.contextmanager
def _own_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        yield
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


async def test_the_lifespan_end_flushes_what_is_buffered(write_config, mock_upstream: MockUpstream) -> None:
    path = write_config({"targets": {"gpt": {"url": mock_upstream.url + "/v1"}}})
    with _own_logging():
        app = create_app(Settings(targets=str(path), watch=False, metrics=False, log_format="json"))
    assert app.gateway.access_log is not None  # on by default
    writer = FakeWriter()
    app.gateway.access_log = AccessLog("json", writer, max_delay=3600)
    async with app.starlette.router.lifespan_context(app.starlette):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=10) as client:
            whole = await client.post("/v1/chat/completions", json={"model": "gpt", "messages": []})
            streamed = await client.post(
                "/v1/chat/completions", json={"model": "gpt", "messages": [], "stream": True}
            )
            assert whole.status_code == streamed.status_code == 200
            assert streamed.headers["content-type"].startswith("text/event-stream")
        assert writer.writes == []
    entries = [json.loads(line) for line in writer.lines()]
    assert [(e["status"], e["target"], e["bytes_out"]) for e in entries] == [
        (200, "gpt", len(whole.content)),
        (200, "gpt", len(streamed.content)),
    ]


def test_off_or_below_info_there_is_no_access_log(write_config, mock_upstream: MockUpstream) -> None:
    path = write_config({"targets": {"gpt": {"url": mock_upstream.url + "/v1"}}})
    with _own_logging():
        off = create_app(Settings(targets=str(path), watch=False, metrics=False, access_log=False))
        quiet = create_app(Settings(targets=str(path), watch=False, metrics=False, log_level="warning"))
    assert off.gateway.access_log is None and quiet.gateway.access_log is None


_EXITING = textwrap.dedent(
    """
    import asyncio, multiprocessing, sys
    from onwards.access_log import AccessLog
    from onwards.proxy.exchange import Outcome

    def worker() -> None:
        async def main() -> None:
            log = AccessLog("json", max_delay=3600)
            log.flush_at_exit()
            log.record({"method": "POST"}, "/v1/x", 200, "rid-" + sys.argv[1], Outcome(), 0.0)
        asyncio.run(main())

    if sys.argv[1] == "fork":
        # How a Granian worker ends: a forked multiprocessing child, which leaves by os._exit.
        child = multiprocessing.get_context("fork").Process(target=worker)
        child.start()
        child.join()
        sys.exit(child.exitcode)
    worker()
    """
)


@pytest.mark.parametrize("how", ["fork", "plain"])
def test_a_process_that_exits_writes_its_buffered_lines(how: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _EXITING, how], capture_output=True, timeout=60, check=False, text=True
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(x) for x in done.stderr.splitlines() if x.startswith("{")]
    assert [x["request_id"] for x in lines] == [f"rid-{how}"], done.stderr
