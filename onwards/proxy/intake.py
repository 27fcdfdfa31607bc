"""Request intake: one scan of the headers, then the body (within its limit), the model, the
target and the key definition. Everything wrong with the request itself is raised here as a
GatewayError; a client that leaves while sending its body raises ClientGone.
"""

from __future__ import annotations

import asyncio
import os

from starlette.types import Receive, Scope

from onwards import errors
from onwards.config.model import KeyDefinition
from onwards.edge.slow import BodyWatch
from onwards.errors import GatewayError
from onwards.metrics import Metrics
from onwards.proxy.auth import authenticate, bearer_token
from onwards.proxy.exchange import ClientGone, Outcome
from onwards.proxy.headers import forwardable
from onwards.proxy.plan import ActiveConfig, TargetPlan
from onwards.proxy.routing import requested_model


class Intake:
    """What the client asked for. Built from the headers first (so even a refused request has
    its request id), then completed by `read`."""

    __slots__ = (
        "authorization",
        "body",
        "content_length",
        "decoded",
        "forward_headers",
        "keydef",
        "model",
        "override",
        "request_id",
        "rid_header",
        "tplan",
    )

    body: bytes
    # The body as parsed while looking for the model; a model rewrite reuses it instead of parsing again.
    decoded: object | None
    model: str
    tplan: TargetPlan
    keydef: KeyDefinition | None

    def __init__(self, scope: Scope) -> None:
        override = authorization = request_id_in = None
        content_length = -1
        forward_headers: list[tuple[str, str]] = []
        for name, value in scope["headers"]:
            if name == b"model-override":
                override = value
            elif name == b"authorization":
                authorization = value
            elif name == b"content-length":
                try:
                    content_length = int(value)
                except ValueError:
                    content_length = -1
            elif name == b"x-request-id":
                request_id_in = value
            if forwardable(name):
                forward_headers.append((name.decode("latin-1"), value.decode("latin-1")))
        self.override: bytes | None = override
        self.authorization: bytes | None = authorization
        self.content_length = content_length
        self.forward_headers = forward_headers
        self.request_id = request_id(request_id_in)
        self.rid_header = (b"x-request-id", self.request_id.encode())

    async def read(
        self,
        receive: Receive,
        active: ActiveConfig,
        metrics: Metrics,
        outcome: Outcome,
        body_watch: BodyWatch,
    ) -> None:
        """Read the body and resolve model, target and key, or raise the client's error."""
        snapshot = active.snapshot
        # A client that trickles its body would hold a connection and a task for as long as it
        # likes; past --body-timeout-secs the worker's sweeper cancels the read: 408, and the
        # connection closes (its unread body cannot be skipped).
        task = asyncio.current_task()
        assert task is not None
        body_watch.begin(task)
        try:
            self.body = await read_body(receive, self.content_length, snapshot.max_body_bytes)
        except asyncio.CancelledError:
            if not body_watch.end(task):
                raise
            task.uncancel()
            metrics.edge_refused("body_timeout")
            raise GatewayError(
                408,
                errors.BODY_TIMEOUT,
                log=f"request body not received within {body_watch.timeout_secs:g} s",
            ) from None
        body_watch.end(task)
        model, self.decoded = requested_model(self.override, self.body)
        tplan = active.targets.get(model)
        if tplan is None:
            raise GatewayError(404, errors.model_not_found(model), log=f"unknown model {model!r}")
        self.model = model
        self.tplan = tplan
        target = tplan.target
        outcome.target = target.alias
        token = bearer_token(self.authorization)
        try:
            keydef = authenticate(snapshot, target, token)
        except GatewayError:
            metrics.auth_failure("missing" if token is None else "invalid")
            raise
        if keydef is not None:
            outcome.key = keydef.name
        self.keydef = keydef
        self.forward_headers.append(("x-request-id", self.request_id))


async def read_body(receive: Receive, content_length: int, limit: int) -> bytes:
    if content_length > limit:
        raise GatewayError(
            413, errors.payload_too_large(limit), log=f"content-length {content_length} over limit"
        )
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise GatewayError(413, errors.payload_too_large(limit), log="body over limit")
        return body
    parts = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise GatewayError(413, errors.payload_too_large(limit), log="body over limit")
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def request_id(given: bytes | None) -> str:
    """The caller's x-request-id when it is a sane token, else a fresh one."""
    if given is not None and 0 < len(given) <= 128 and all(0x21 <= b <= 0x7E for b in given):
        return given.decode("ascii")
    return os.urandom(16).hex()  # as unique as a uuid4, at a fraction of its cost
