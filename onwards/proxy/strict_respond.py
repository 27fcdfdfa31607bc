"""The strict-mode responder: an upstream answer rebuilt before it reaches the client.

- 2xx: always sanitized, trusted provider or not (strict/success.py, strict/stream.py): a
  stream when the client asked for one or the upstream sends `text/event-stream`, else the
  whole body (already read and checked by strict/inspect.py). A body that does not fit its
  schema is a 502, never passed through.
- non-2xx from an untrusted provider: the standard body for its masked status
  (strict/errors.py), with none of the upstream's headers.
- non-2xx from a trusted provider (`trusted` on the provider, else on its pool): as sent.

Errors the gateway makes itself (limits, auth, timeouts, exhausted fallback) never come here.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from onwards.errors import GatewayError
from onwards.proxy.exchange import Exchange
from onwards.proxy.plan import ProviderPlan
from onwards.proxy.respond import count_usage, passthrough_headers, respond, send_whole, stream
from onwards.proxy.upstream import UpstreamResponse
from onwards.strict.errors import BAD_GATEWAY, standard_error
from onwards.strict.inspect import inspect_stream, inspect_unary
from onwards.strict.stream import StrictStream
from onwards.strict.success import SuccessBodyError, sanitize_success
from onwards.tokens.usage import usage_from_json

log = logging.getLogger("onwards.proxy")


async def serve_strict(ex: Exchange, pplan: ProviderPlan, response: UpstreamResponse) -> int:
    """Inspect a 2xx for a hidden failure (raises inspect.Retry to try the next provider), then
    answer the client."""
    body: bytes | None = None
    if 200 <= response.status < 300:
        fallback = ex.request.tplan.target.fallback
        if response.headers.get("Content-Type", "").startswith("text/event-stream"):
            response = await inspect_stream(response, fallback, pplan.label)
        else:
            body = await inspect_unary(response, fallback, pplan.label)
    return await respond_strict(ex, pplan, response, body)


async def respond_strict(
    ex: Exchange, pplan: ProviderPlan, response: UpstreamResponse, body: bytes | None
) -> int:
    """Answer from `response`; `body` is its 2xx body when it was read whole by the inspection."""
    request = ex.request
    route = request.strict
    assert route is not None
    status = response.status
    trusted = pplan.provider.trusted
    if not 200 <= status < 300:
        if trusted:
            # As sent: strict mode ignores the non-strict sanitize_response flag.
            return await respond(ex, replace(pplan, sanitize=False) if pplan.sanitize else pplan, response)
        # The body may carry provider internals or echo the prompt: only its size is logged.
        drained = await response.content.readany()
        log.info(
            "%s answered %d; replaced by the standard error (%d bytes dropped)",
            pplan.label,
            status,
            len(drained),
        )
        masked, error_body = standard_error(status)
        return await send_whole(ex, masked, [request.rid_header], error_body, replace_ct=True)
    headers = passthrough_headers(ex, pplan, response)
    if body is None:
        # A 2xx stream: its usage (when it carries one) is counted and settles the token
        # reservations, as for any stream. A 2xx read without its body is an event stream
        # (serve_strict).
        rewriter = StrictStream(route.surface, request.model, trusted=trusted)
        return await stream(ex, pplan, response, status, headers, rewriter, True, sse_usage=True)
    count_usage(ex, pplan, usage_from_json(body))
    try:
        clean = sanitize_success(route.surface, body, request.model)
    except SuccessBodyError as exc:
        raise GatewayError(502, BAD_GATEWAY, log=f"cannot sanitize {pplan.label} response: {exc}") from None
    return await send_whole(ex, status, headers, clean, replace_ct=True)
