"""The front of every HTTP request, before routing: the path check and CORS.

Rule: a request whose path fails the check (onwards/edge/paths.py) is answered 400 here, logged
and counted, and goes no further; a good path is stored canonical in the scope, and the upstream
URL is built from it. Browser preflights are answered here (with the config's `cors`, or refused
with a JSON error without one); with a `cors` policy, responses to an allowed Origin get its
headers. Requests without an Origin header pay one method comparison for CORS.
"""

from __future__ import annotations

import logging

from starlette.types import Message, Scope, Send

from onwards import errors
from onwards.edge.cors import PREFLIGHT_WITHOUT_CORS, CorsPolicy, Headers
from onwards.edge.paths import PathRejected, normalise_path
from onwards.metrics import Metrics

log = logging.getLogger("onwards.edge")

# Where the canonical path travels from here to the upstream call.
PATH_KEY = "onwards.path"
_SHOWN_PATH = 200  # at most this much of a refused path goes to the log


async def send_json(send: Send, status: int, body: bytes, headers: Headers = ()) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def check_path(scope: Scope, send: Send, metrics: Metrics) -> bool:
    """Store the canonical path in the scope; False when the request was refused (and answered)."""
    raw = scope.get("raw_path") or scope["path"].encode("utf-8")
    try:
        scope[PATH_KEY] = normalise_path(raw)
        return True
    except PathRejected as exc:
        metrics.edge_refused("path")
        shown = raw[:_SHOWN_PATH].decode("latin-1")
        log.warning("refused %s %r: %s", scope["method"], shown, exc)
        await send_json(send, 400, errors.BAD_PATH)
        return False


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def is_preflight(scope: Scope) -> bool:
    return (
        scope["method"] == "OPTIONS"
        and _header(scope, b"origin") is not None
        and _header(scope, b"access-control-request-method") is not None
    )


async def answer_preflight(scope: Scope, send: Send, cors: CorsPolicy | None, metrics: Metrics) -> None:
    if cors is None:
        metrics.edge_refused("preflight")
        await send_json(send, 405, PREFLIGHT_WITHOUT_CORS, ((b"allow", b"GET, POST, HEAD"),))
        return
    origin = _header(scope, b"origin") or b""
    method = _header(scope, b"access-control-request-method") or b""
    answer = cors.preflight(origin, method, _header(scope, b"access-control-request-headers"))
    if answer.status != 204:
        metrics.edge_refused("preflight")
        log.info("refused CORS preflight from %r for %r", origin[:_SHOWN_PATH], method[:32])
        await send_json(send, answer.status, answer.body, answer.headers)
        return
    await send({"type": "http.response.start", "status": 204, "headers": list(answer.headers)})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def with_cors(scope: Scope, send: Send, cors: CorsPolicy) -> Send:
    """`send`, adding the policy's headers to the response when the request's Origin is allowed."""
    origin = _header(scope, b"origin")
    if origin is None:
        return send
    extra = cors.response_headers(origin)
    if not extra:
        return send

    async def send_with_cors(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *extra]}
        await send(message)

    return send_with_cors
