"""Request intake: one scan of the headers, then the body (within its limit), the model, the
target and the key definition. Everything wrong with the request itself is raised here as a
GatewayError; a client that leaves while sending its body raises ClientGone.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import orjson
from starlette.types import Receive, Scope

from onwards import errors
from onwards.config.model import KeyDefinition
from onwards.config.rules import first_match
from onwards.convert.adapters import ANTHROPIC_CLIENTS, client_protocol
from onwards.edge.slow import BodyWatch
from onwards.errors import GatewayError
from onwards.metrics import Metrics
from onwards.proxy.auth import api_key_token, authenticate, bearer_token
from onwards.proxy.exchange import ClientGone, Outcome
from onwards.proxy.headers import forwardable
from onwards.proxy.plan import ActiveConfig, TargetPlan
from onwards.proxy.routing import requested_model
from onwards.reasoning import ReasoningRequest, Surface, check_contract, check_providers, reasoning_surface
from onwards.strict.routes import STRICT_ROUTES, StrictRoute
from onwards.strict.validate import validate_request


class Intake:
    """What the client asked for. Built from the headers first (so even a refused request has
    its request id), then completed by `read`."""

    __slots__ = (
        "anthropic_version",
        "api_key",
        "authorization",
        "body",
        "content_length",
        "converted",
        "decoded",
        "forward_headers",
        "has_trace",
        "keydef",
        "model",
        "override",
        "path",
        "protocol",
        "reasoning",
        "request_id",
        "rid_header",
        "strict",
        "tplan",
        "upstream_path",
    )

    body: bytes
    # The body as parsed while looking for the model; a model rewrite reuses it instead of parsing again.
    decoded: object | None
    model: str
    tplan: TargetPlan
    keydef: KeyDefinition | None

    def __init__(self, scope: Scope) -> None:
        override = authorization = request_id_in = forwarded_for = api_key = None
        has_trace = anthropic_version = False
        content_length = -1
        forward_headers: list[tuple[str, str]] = []
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                forwarded_for = value if forwarded_for is None else forwarded_for + b", " + value
                continue
            if name == b"x-forwarded-proto":
                continue
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
            elif name == b"traceparent" or name == b"tracestate":
                has_trace = True
            elif name == b"x-api-key":
                api_key = value
            elif name == b"anthropic-version":
                anthropic_version = True
            if forwardable(name):
                forward_headers.append((name.decode("latin-1"), value.decode("latin-1")))
        # As the Rust gateway: the proto is always "https" (it sits behind TLS termination), and
        # the caller's address joins the chain of any proxies before us.
        client = scope.get("client")
        if client:
            hop = client[0].encode("latin-1")
            forwarded_for = hop if forwarded_for is None else forwarded_for + b", " + hop
        if forwarded_for is not None:
            forward_headers.append(("x-forwarded-for", forwarded_for.decode("latin-1")))
        forward_headers.append(("x-forwarded-proto", "https"))
        self.has_trace = has_trace  # a traceparent/tracestate to withhold from untrusted providers
        self.override: bytes | None = override
        self.authorization: bytes | None = authorization
        self.api_key: bytes | None = api_key
        self.anthropic_version = anthropic_version
        self.content_length = content_length
        self.forward_headers = forward_headers
        self.request_id = request_id(request_id_in)
        self.rid_header = (b"x-request-id", self.request_id.encode())
        # Strict mode's typed route, and the path it forwards to. The app's dispatch marks strict
        # requests; the route is looked up from the path itself, so a request the gateway makes
        # to itself from a marked one (a Responses adapter step) gets the route of its own path.
        self.strict: StrictRoute | None = (
            STRICT_ROUTES.get(scope["path"]) if scope.get("onwards.strict") is not None else None
        )
        self.upstream_path: str | None = None
        self.path: str = scope["path"]
        # The protocol the client speaks when it is one that can be converted (docs/protocols.md).
        # Strict mode keeps its own typed routes (its /v1/messages takes a Chat Completions body).
        self.protocol = client_protocol(scope["method"], self.path) if self.strict is None else None
        # The body converted for a provider of the other protocol, kept for the next such provider.
        self.converted: dict[str, Any] | None = None
        # The canonical reasoning effort asked for, when the reasoning contract found one.
        self.reasoning: ReasoningRequest | None = None

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
        if self.strict is None:
            model, self.decoded = requested_model(self.override, self.body)
        else:
            model = self._read_strict(self.strict)
        tplan = active.targets.get(model)
        if tplan is None:
            raise GatewayError(404, errors.model_not_found(model), log=f"unknown model {model!r}")
        self.model = model
        self.tplan = tplan
        target = tplan.target
        outcome.target = target.alias
        outcome.model = target.alias
        metrics.model_started(target.alias)
        token = bearer_token(self.authorization)
        if token is None and self.api_key is not None and self.protocol in ANTHROPIC_CLIENTS:
            token = api_key_token(self.api_key)  # what Anthropic's SDKs and Claude Code send
        try:
            keydef = authenticate(snapshot, target, token)
        except GatewayError:
            metrics.auth_failure("missing" if token is None else "invalid")
            raise
        if keydef is not None:
            outcome.key = keydef.name
        self.keydef = keydef
        if target.routing_rules and token is not None:
            self._apply_rules(active, outcome)
        surface = reasoning_surface(self.strict, self.path)
        if surface is not None and self.body:
            self._check_reasoning(surface)
        self.forward_headers.append(("x-request-id", self.request_id))

    def _apply_rules(self, active: ActiveConfig, outcome: Outcome) -> None:
        """The target's routing rules, on the caller's key labels (after auth, before admission,
        so the limits that apply are those of the alias actually served)."""
        labels = self.keydef.label_set if self.keydef is not None else frozenset()
        rule = first_match(self.tplan.target.routing_rules, labels)
        if rule is None:
            return
        if rule.action == "deny":
            raise GatewayError(403, errors.FORBIDDEN, log=f"routing rule denies {self.tplan.target.alias}")
        assert rule.target is not None  # a redirect always names a configured alias (checked at load)
        # As in the Rust gateway: the redirected alias's own keys and rules are not applied again.
        self.tplan = active.targets[rule.target]
        outcome.target = rule.target

    def _check_reasoning(self, surface: Surface) -> None:
        """The reasoning contract, before any upstream call: canonical parameters only, and an
        effort every provider of the (possibly redirected) target can honour."""
        decoded = self.decoded
        if decoded is None:
            try:
                decoded = self.decoded = orjson.loads(self.body)
            except orjson.JSONDecodeError:
                raise GatewayError(400, errors.INVALID_JSON, log="reasoning path, body is not JSON") from None
        if not isinstance(decoded, dict):
            return
        request = check_contract(surface, decoded)
        if request is not None:
            check_providers(self.tplan.target.providers, request)
            self.reasoning = request

    def _read_strict(self, route: StrictRoute) -> str:
        """Check the body against its route's schema; the model (the header still wins)."""
        decoded = validate_request(route.surface, self.body)
        self.decoded = decoded
        self.upstream_path = route.upstream_path
        # The checked body goes on as JSON, and uncompressed answers are needed to rebuild them.
        self.forward_headers = [
            h for h in self.forward_headers if h[0] not in ("content-type", "accept-encoding")
        ]
        self.forward_headers.append(("content-type", "application/json"))
        if self.override is not None:
            return requested_model(self.override, b"")[0]
        model: str = decoded["model"]
        return model


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
