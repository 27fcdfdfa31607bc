"""A scriptable OpenAI-compatible upstream for tests and benchmarks.

It is deliberately built on aiohttp.web rather than Starlette so that a bug shared with the gateway's own
stack can never make both sides agree on something wrong.

Two ways to run it:

* in a background thread of the test process (``MockUpstream("a").start()``), which lets a test read what
  the upstream saw (``mock.requests``, ``mock.max_in_flight``, ``mock.disconnects``) directly;
* as its own process (``python -m tests.support.mock_upstream --port P``), so a load generator and the
  mock do not share one GIL. ``GET /__mock/stats`` and ``POST /__mock/reset`` expose the counters there.

A single request can be steered through the gateway with headers, since the gateway forwards them:
``x-mock-status`` (answer with that status), ``x-mock-delay`` (seconds before response headers),
``x-mock-chunks`` / ``x-mock-chunk-delay`` (shape of an SSE stream) and ``x-mock-hang`` (never answer until
the client goes away). A header wins over the instance defaults and over ``fail_next``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

CONTROL_PREFIX = "/__mock/"
STATUS_HEADER = "x-mock-status"
DELAY_HEADER = "x-mock-delay"
CHUNKS_HEADER = "x-mock-chunks"
CHUNK_DELAY_HEADER = "x-mock-chunk-delay"
HANG_HEADER = "x-mock-hang"
NAME_HEADER = "x-mock-name"

# The extra field every generated body carries, so sanitization tests can check it disappears.
EXTRA_FIELD = "provider_extra"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_START_TIMEOUT = 10.0
# How long stop() lets open responses finish before aiohttp cancels them (a hanging request never would).
_SHUTDOWN_GRACE = 0.5


@dataclass
class RecordedRequest:
    """One request as the mock received it.

    ``status`` is the status the mock chose (None while undecided or for a hang); ``disconnected`` turns
    True when the client went away before the response was complete. Both are filled in from the mock's
    own thread while the request is being served.
    """

    method: str
    path: str  # path including the query string, as sent
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    body: bytes
    received_at: float  # time.monotonic() on arrival
    status: int | None = None
    disconnected: bool = False

    def json(self) -> Any:
        return json.loads(self.body)


class _BadControl(ValueError):
    """A control header or setting with a value the mock cannot act on."""


def _check_status(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 200 <= value <= 599:
        raise _BadControl(f"{what} must be an integer HTTP status from 200 to 599, got {value!r}")
    return value


def _check_seconds(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise _BadControl(f"{what} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def _check_count(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _BadControl(f"{what} must be an integer >= 0, got {value!r}")
    return value


@dataclass(frozen=True)
class _Plan:
    """How to answer one request, after headers, fail_next and defaults are combined."""

    status: int
    delay: float
    chunks: int
    chunk_delay: float
    hang: bool


@dataclass
class Canned:
    """An answer given verbatim to one request, queued with ``MockUpstream.answer_next``: for
    upstreams that misbehave (junk fields, leaky error bodies, errors inside a 200, empty 200s,
    streams that stall). A list ``body`` is written chunk by chunk as a stream; ``stall`` keeps
    the response open after the body until the client goes away."""

    status: int = 200
    body: bytes | list[bytes] = b""
    content_type: str = "application/json"
    stall: bool = False


class MockUpstream:
    """An OpenAI-compatible upstream whose answers a test can script.

    ``status``, ``delay``, ``chunks`` and ``chunk_delay`` are the defaults for every request and may be
    changed while it runs. Use ``fail_next(n, status)`` to make only the next ``n`` requests fail.
    """

    def __init__(
        self,
        name: str = "mock",
        *,
        status: int = 200,
        delay: float = 0.0,
        chunks: int = 3,
        chunk_delay: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        record: bool = True,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an integer from 0 to 65535, got {port!r}")
        self.name = name
        self.host = host
        self.status = status
        self.delay = delay
        self.chunks = chunks
        self.chunk_delay = chunk_delay
        # Benchmarks turn recording off so a long run does not keep every body in memory.
        self.record = record
        self._requested_port = port
        self._port: int | None = None
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._failures: collections.deque[int] = collections.deque()
        self._canned: collections.deque[Canned] = collections.deque()
        self._seen = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._disconnects = 0
        self._stopping = False
        self._handlers: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- settings (validated, so a typo fails in the test, not as a puzzling answer later) -------------

    @property
    def status(self) -> int:
        return self._status

    @status.setter
    def status(self, value: int) -> None:
        self._status = _check_status(value, "status")

    @property
    def delay(self) -> float:
        return self._delay

    @delay.setter
    def delay(self, value: float) -> None:
        self._delay = _check_seconds(value, "delay")

    @property
    def chunks(self) -> int:
        return self._chunks

    @chunks.setter
    def chunks(self, value: int) -> None:
        self._chunks = _check_count(value, "chunks")

    @property
    def chunk_delay(self) -> float:
        return self._chunk_delay

    @chunk_delay.setter
    def chunk_delay(self, value: float) -> None:
        self._chunk_delay = _check_seconds(value, "chunk_delay")

    def answer_next(self, *answers: Canned) -> None:
        """Answer the next requests with these, in order (before any other setting applies)."""
        for answer in answers:
            _check_status(answer.status, "canned status")
        with self._lock:
            self._canned.extend(answers)

    def fail_next(self, n: int = 1, status: int = 503) -> None:
        """Answer the next ``n`` requests (that carry no ``x-mock-status``) with ``status``.

        Calls queue up: ``fail_next(1, 503); fail_next(1, 429)`` fails one request with each.
        """
        _check_count(n, "n")
        _check_status(status, "status")
        if status < 400:
            raise ValueError(f"fail_next needs an error status (400-599), got {status}")
        with self._lock:
            self._failures.extend([status] * n)

    # -- observations ------------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far (oldest first), control endpoints excluded."""
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        """Requests received so far; counted even when ``record`` is off."""
        with self._lock:
            return self._seen

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        with self._lock:
            return self._max_in_flight

    @property
    def disconnects(self) -> int:
        """Requests whose client went away before the response was complete."""
        with self._lock:
            return self._disconnects

    def clear(self) -> None:
        """Forget what was seen so far: recorded requests and counters (queued failures stay)."""
        with self._lock:
            self._requests.clear()
            self._seen = 0
            self._max_in_flight = self._in_flight
            self._disconnects = 0

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "name": self.name,
                "requests": self._seen,
                "in_flight": self._in_flight,
                "max_in_flight": self._max_in_flight,
                "disconnects": self._disconnects,
            }

    # -- lifecycle ---------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"mock upstream {self.name!r} is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> MockUpstream:
        """Serve from a background thread with its own event loop; returns self once accepting."""
        if self._thread is not None or self._runner is not None:
            raise RuntimeError(f"mock upstream {self.name!r} is already started")
        # Binding here, before the thread starts, means the port is known and listening on return.
        sock = socket.create_server((self.host, self._requested_port), backlog=1024)
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._open(sock))
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        thread = threading.Thread(target=run, name=f"mock-upstream-{self.name}", daemon=True)
        self._loop, self._thread = loop, thread
        thread.start()
        if not ready.wait(_START_TIMEOUT):
            raise RuntimeError(f"mock upstream {self.name!r} did not start within {_START_TIMEOUT}s")
        if failure:
            self._loop = self._thread = None
            sock.close()
            raise RuntimeError(f"mock upstream {self.name!r} failed to start") from failure[0]
        return self

    def stop(self) -> None:
        """Stop serving and join the thread. Safe to call twice."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout=_START_TIMEOUT)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_START_TIMEOUT)
            self._loop = self._thread = None

    def __enter__(self) -> MockUpstream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def serve_until(self, stop: asyncio.Event, on_ready: Callable[[], None] | None = None) -> None:
        """Serve on the running loop until ``stop`` is set (used by the stand-alone process).

        ``on_ready`` is called once the socket accepts connections and ``url`` is known.
        """
        sock = socket.create_server((self.host, self._requested_port), backlog=1024)
        await self._open(sock)
        if on_ready is not None:
            on_ready()
        try:
            await stop.wait()
        finally:
            await self._close()

    async def _open(self, sock: socket.socket) -> None:
        self._stopping = False
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that goes away cancels its handler, which is how a hang or a
        # delay notices the disconnect at all.
        runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=_SHUTDOWN_GRACE
        )
        await runner.setup()
        await web.SockSite(runner, sock, backlog=1024).start()
        self._runner = runner
        self._port = sock.getsockname()[1]

    async def _close(self) -> None:
        self._stopping = True
        # A hang or a long delay would otherwise hold stop() for the whole shutdown grace period.
        for task in list(self._handlers):
            task.cancel()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # -- request handling --------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return self._control(request)
        body = await request.read()
        headers: dict[str, str] = {}
        for key, value in request.headers.items():
            name = key.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        record = RecordedRequest(request.method, request.path_qs, headers, body, time.monotonic())
        task = asyncio.current_task()
        assert task is not None  # aiohttp always runs handlers inside a task
        self._handlers.add(task)
        with self._lock:
            self._seen += 1
            if self.record:
                self._requests.append(record)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            return await self._answer(request, record)
        except asyncio.CancelledError:
            # Outside a shutdown, aiohttp only cancels a handler because its client went away.
            if not self._stopping:
                self._note_disconnect(record)
            raise
        finally:
            self._handlers.discard(task)
            with self._lock:
                self._in_flight -= 1

    def _note_disconnect(self, record: RecordedRequest) -> None:
        with self._lock:
            if not record.disconnected:
                record.disconnected = True
                self._disconnects += 1

    def _plan(self, request: web.Request) -> _Plan:
        h = request.headers

        def number(name: str, parse: type, check: Any, default: Any) -> Any:
            raw = h.get(name)
            if raw is None:
                return default
            try:
                value = parse(raw.strip())
            except ValueError:
                kind = "an integer" if parse is int else "a number"
                raise _BadControl(f"header {name} must be {kind}, got {raw!r}") from None
            return check(value, f"header {name}")

        status = number(STATUS_HEADER, int, _check_status, None)
        delay = number(DELAY_HEADER, float, _check_seconds, self.delay)
        chunks = number(CHUNKS_HEADER, int, _check_count, self.chunks)
        chunk_delay = number(CHUNK_DELAY_HEADER, float, _check_seconds, self.chunk_delay)
        hang = h.get(HANG_HEADER, "").strip().lower()
        if hang not in _TRUE | _FALSE:
            raise _BadControl(f"header {HANG_HEADER} must be one of 1/0/true/false, got {hang!r}")
        # Only now, with every header valid, may a queued failure be used up.
        if status is None:
            with self._lock:
                status = self._failures.popleft() if self._failures else self.status
        return _Plan(status, delay, chunks, chunk_delay, hang in _TRUE)

    async def _answer(self, request: web.Request, record: RecordedRequest) -> web.StreamResponse:
        with self._lock:
            canned = self._canned.popleft() if self._canned else None
        if canned is not None:
            record.status = canned.status
            return await self._give_canned(request, record, canned)
        try:
            plan = self._plan(request)
        except _BadControl as exc:
            record.status = 400
            return self._error(400, str(exc), "invalid_request_error", "mock_bad_control")
        if plan.hang:
            await asyncio.get_running_loop().create_future()  # only a cancellation ends this
        record.status = plan.status
        if plan.delay:
            await asyncio.sleep(plan.delay)
        if plan.status >= 400:
            return self._failure(plan.status)

        route = request.path.rstrip("/")
        if request.method == "POST":
            for suffix, kind in _POST_ROUTES:
                if route.endswith(suffix):
                    return await self._generate(request, record, kind, plan)
        echo = self._echo(record)
        if request.method == "GET" and route.endswith("/models"):
            echo = {**self._models(), **echo}
        return self._json(plan.status, echo)

    async def _generate(
        self, request: web.Request, record: RecordedRequest, kind: str, plan: _Plan
    ) -> web.StreamResponse:
        try:
            payload = json.loads(record.body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            record.status = 400
            return self._error(400, "request body must be a JSON object", "invalid_request_error", None)
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            record.status = 400
            return self._error(400, "request body needs a string 'model'", "invalid_request_error", "model")
        reply = _Reply(self.name, kind, model, payload)
        if kind != "embeddings" and payload.get("stream") is True:
            return await self._stream(request, record, reply.events(plan.chunks), plan)
        return self._json(plan.status, reply.body())

    async def _stream(
        self, request: web.Request, record: RecordedRequest, events: list[bytes], plan: _Plan
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=plan.status,
            headers={
                "content-type": "text/event-stream",
                "cache-control": "no-cache",
                NAME_HEADER: self.name,
            },
        )
        await response.prepare(request)
        try:
            for index, event in enumerate(events):
                if index and plan.chunk_delay:
                    await asyncio.sleep(plan.chunk_delay)
                # Each write goes straight to the transport, so every event is its own HTTP chunk.
                await response.write(event)
            await response.write_eof()
        except ConnectionResetError:
            self._note_disconnect(record)
        return response

    async def _give_canned(
        self, request: web.Request, record: RecordedRequest, canned: Canned
    ) -> web.StreamResponse:
        headers = {"content-type": canned.content_type, NAME_HEADER: self.name}
        if isinstance(canned.body, bytes) and not canned.stall:
            return web.Response(status=canned.status, body=canned.body, headers=headers)
        response = web.StreamResponse(status=canned.status, headers=headers)
        await response.prepare(request)
        chunks = [canned.body] if isinstance(canned.body, bytes) else canned.body
        try:
            for chunk in chunks:
                await response.write(chunk)
            if canned.stall:
                await asyncio.get_running_loop().create_future()  # only a cancellation ends this
            await response.write_eof()
        except ConnectionResetError:
            self._note_disconnect(record)
        return response

    def _control(self, request: web.Request) -> web.StreamResponse:
        action = request.path[len(CONTROL_PREFIX) :]
        if action == "stats" and request.method == "GET":
            return self._json(200, self.stats())
        if action == "reset" and request.method == "POST":
            self.clear()
            with self._lock:
                self._failures.clear()
                self._canned.clear()
            return self._json(200, self.stats())
        return self._error(
            404, f"unknown mock control {request.method} {request.path}", "invalid_request_error", None
        )

    # -- bodies ------------------------------------------------------------------------------------------

    def _echo(self, record: RecordedRequest) -> dict[str, Any]:
        try:
            parsed = json.loads(record.body) if record.body else None
        except ValueError:
            parsed = None
        return {
            "mock": self.name,
            "method": record.method,
            "path": record.path,
            "headers": record.headers,
            "body": record.body.decode("utf-8", errors="replace"),
            "json": parsed,
        }

    def _models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": self.name, "object": "model", "created": 0, "owned_by": "mock"}],
        }

    def _failure(self, status: int) -> web.Response:
        kind = "server_error" if status >= 500 else "invalid_request_error"
        if status == 429:
            kind = "rate_limit_error"
        message = f"mock upstream {self.name} answered {status} as instructed"
        return self._error(status, message, kind, f"mock_{status}")

    def _error(self, status: int, message: str, kind: str, code: str | None) -> web.Response:
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return self._json(status, body)

    def _json(self, status: int, body: Any) -> web.Response:
        if status in (204, 304):  # these may not carry a body
            return web.Response(status=status, headers={NAME_HEADER: self.name})
        return web.Response(
            status=status,
            body=json.dumps(body).encode(),
            content_type="application/json",
            headers={NAME_HEADER: self.name},
        )


_POST_ROUTES = (
    ("/chat/completions", "chat"),
    ("/completions", "completion"),
    ("/embeddings", "embeddings"),
    ("/responses", "responses"),
)


def _words(value: Any) -> int:
    """A deterministic stand-in for a token count: words in every string found in ``value``."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, dict):
        return sum(_words(v) for v in value.values())
    if isinstance(value, list):
        return sum(_words(v) for v in value)
    return 0


def _split(text: str, parts: int) -> list[str]:
    """``text`` cut into ``parts`` consecutive pieces (some empty if parts > len(text))."""
    bounds = [round(i * len(text) / parts) for i in range(parts + 1)] if parts else [0]
    return [text[bounds[i] : bounds[i + 1]] for i in range(parts)]


def _sse(data: Any, event: str | None = None) -> bytes:
    prefix = f"event: {event}\n" if event else ""
    payload = data if isinstance(data, str) else json.dumps(data)
    return f"{prefix}data: {payload}\n\n".encode()


class _Reply:
    """The generated answer to one model request, as one JSON body or as SSE events."""

    def __init__(self, name: str, kind: str, model: str, payload: dict[str, Any]) -> None:
        self.kind = kind
        self.model = model
        self.payload = payload
        self.text = f"hello from {name}"
        self.created = int(time.time())
        prompt_field = {"chat": "messages", "completion": "prompt", "responses": "input"}.get(kind, "input")
        self.prompt_tokens = max(1, _words(payload.get(prompt_field)))
        self.completion_tokens = _words(self.text)
        prefix = {"chat": "chatcmpl", "completion": "cmpl", "responses": "resp", "embeddings": "emb"}[kind]
        self.id = f"{prefix}-{uuid.uuid4().hex[:24]}"

    def _usage(self) -> dict[str, int]:
        if self.kind == "responses":
            return {
                "input_tokens": self.prompt_tokens,
                "output_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
            }
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def body(self) -> dict[str, Any]:
        return getattr(self, f"_{self.kind}_body")()

    def events(self, chunks: int) -> list[bytes]:
        if self.kind == "responses":
            return self._responses_events(chunks)
        return self._chunk_events(chunks)

    def _chat_body(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.text},
                    "finish_reason": "stop",
                }
            ],
            "usage": self._usage(),
            EXTRA_FIELD: "x",
        }

    def _completion_body(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "text": self.text, "logprobs": None, "finish_reason": "stop"}],
            "usage": self._usage(),
            EXTRA_FIELD: "x",
        }

    def _embeddings_body(self) -> dict[str, Any]:
        raw = self.payload.get("input")
        inputs = raw if isinstance(raw, list) else [raw]
        return {
            "object": "list",
            "data": [
                # Distinct, deterministic vectors so a test can tell which input an embedding belongs to.
                {"object": "embedding", "index": i, "embedding": [float(i), 0.5, -0.5]}
                for i in range(len(inputs))
            ],
            "model": self.model,
            "usage": {"prompt_tokens": self.prompt_tokens, "total_tokens": self.prompt_tokens},
            EXTRA_FIELD: "x",
        }

    def _responses_body(self, status: str = "completed", text: str | None = None) -> dict[str, Any]:
        content = [{"type": "output_text", "text": self.text if text is None else text, "annotations": []}]
        done = status == "completed"
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "model": self.model,
            "output": [
                {
                    "type": "message",
                    "id": f"msg-{self.id}",
                    "status": status,
                    "role": "assistant",
                    "content": content,
                }
            ]
            if done
            else [],
            "usage": self._usage() if done else None,
            EXTRA_FIELD: "x",
        }

    def _chunk_events(self, chunks: int) -> list[bytes]:
        """``chunks`` chat/completion chunk events (contents add up to the full text), then [DONE]."""
        events: list[bytes] = []
        for index, piece in enumerate(_split(self.text, chunks)):
            finish = "stop" if index == chunks - 1 else None
            if self.kind == "chat":
                delta: dict[str, Any] = {"content": piece}
                if index == 0:
                    delta = {"role": "assistant", **delta}
                choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
                kind = "chat.completion.chunk"
            else:
                choice = {"index": 0, "text": piece, "logprobs": None, "finish_reason": finish}
                kind = "text_completion"
            events.append(_sse(self._chunk(kind, [choice])))
        options = self.payload.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage") is True:
            kind = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
            events.append(_sse({**self._chunk(kind, []), "usage": self._usage()}))
        events.append(_sse("[DONE]"))
        return events

    def _chunk(self, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "choices": choices,
            EXTRA_FIELD: "x",
        }

    def _responses_events(self, chunks: int) -> list[bytes]:
        """The Responses API stream: created, one text delta per chunk, completed (it has no [DONE])."""
        sequence = iter(range(chunks + 2))
        events = [
            _sse(
                {
                    "type": "response.created",
                    "sequence_number": next(sequence),
                    "response": self._responses_body("in_progress", ""),
                },
                "response.created",
            )
        ]
        for piece in _split(self.text, chunks):
            delta = {
                "type": "response.output_text.delta",
                "sequence_number": next(sequence),
                "item_id": f"msg-{self.id}",
                "output_index": 0,
                "content_index": 0,
                "delta": piece,
            }
            events.append(_sse(delta, "response.output_text.delta"))
        completed = {
            "type": "response.completed",
            "sequence_number": next(sequence),
            "response": self._responses_body(),
        }
        events.append(_sse(completed, "response.completed"))
        return events


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.mock_upstream",
        description="Run the OpenAI-compatible mock upstream as its own process.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="port to listen on (0 picks a free one)")
    parser.add_argument("--name", default="mock", help="returned in content and in the x-mock-name header")
    parser.add_argument("--status", type=int, default=200, help="default response status")
    parser.add_argument("--delay", type=float, default=0.0, help="default seconds before response headers")
    parser.add_argument("--chunks", type=int, default=3, help="default number of SSE chunk events")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="default seconds between SSE events")
    parser.add_argument(
        "--no-record", action="store_true", help="count requests but keep no bodies (long benchmarks)"
    )
    return parser.parse_args(argv)


async def _serve(mock: MockUpstream) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def announce() -> None:
        # A parent that passed --port 0 learns the real port from this line.
        print(f"mock upstream {mock.name} listening on {mock.url}", flush=True)

    await mock.serve_until(stop, announce)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        mock = MockUpstream(
            args.name,
            status=args.status,
            delay=args.delay,
            chunks=args.chunks,
            chunk_delay=args.chunk_delay,
            host=args.host,
            port=args.port,
            record=not args.no_record,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve(mock))
    return 0


if __name__ == "__main__":
    sys.exit(main())
