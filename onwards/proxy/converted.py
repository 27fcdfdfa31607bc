"""Requests served across protocols: the proxy side of onwards/convert (docs/protocols.md).

The attempt loop takes the adapter that the plan compiled for this provider and the client's protocol
(none: the request passes through). Here the client's body becomes the provider's, the provider's answer
(whole, streamed, an error, or a whole answer to a stream request, replayed as a stream) becomes the
client's, ``/v1/messages/count_tokens`` is answered locally for providers that do not speak Anthropic,
and the gateway's own errors take the client's error shape.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from onwards import errors
from onwards.convert import ConversionError, UpstreamFormatError, estimate_input_tokens, to_anthropic_error
from onwards.convert.adapters import ANTHROPIC_CLIENTS, CLIENT_ANTHROPIC, Adapter, StreamTranslator
from onwards.errors import GatewayError
from onwards.proxy import sanitize
from onwards.proxy.exchange import Exchange
from onwards.proxy.intake import Intake
from onwards.proxy.plan import ProviderPlan
from onwards.proxy.respond import Headers, body, count_usage, passthrough_headers, send_whole, start
from onwards.proxy.upstream import UpstreamResponse
from onwards.tokens.usage import usage_from_json, usage_of

_JSON_CT = (b"content-type", b"application/json")
_SSE_CT = (b"content-type", b"text/event-stream")
# Headers that described the provider's body, not the converted one.
_BODY_HEADERS = frozenset((b"content-type", b"content-encoding", b"content-length"))


def client_error(exc: GatewayError, protocol: str | None) -> GatewayError:
    """The gateway's own (OpenAI-shaped) error in the client's shape; status and headers kept."""
    if protocol not in ANTHROPIC_CLIENTS:
        return exc
    return GatewayError(exc.status, to_anthropic_error(exc.status, exc.body), exc.headers, log=str(exc))


def _decoded(request: Intake) -> dict[str, Any]:
    decoded = request.decoded
    if decoded is None:  # the model came from the model-override header
        try:
            decoded = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            raise GatewayError(400, errors.INVALID_JSON, log="body is not JSON, cannot convert") from None
        request.decoded = decoded
    if not isinstance(decoded, dict):
        raise GatewayError(400, errors.INVALID_JSON, log="body is not a JSON object, cannot convert")
    return decoded


def _refused(exc: ConversionError, adapter: str) -> GatewayError:
    body = errors.error_body(exc.message, "invalid_request_error", "unsupported_by_provider", exc.param)
    return GatewayError(400, body, log=f"cannot convert ({adapter}): {exc.message}")


def request_body(request: Intake, pplan: ProviderPlan, adapter: Adapter) -> bytes:
    """The provider's body. Converted once per request and direction, however many providers are tried."""
    converted = request.converted
    if converted is None:
        try:
            converted = adapter.request(_decoded(request))
        except ConversionError as exc:
            raise _refused(exc, adapter.name) from None
        request.converted = converted
    onwards_model = pplan.provider.onwards_model
    if onwards_model is not None:
        converted = {**converted, "model": onwards_model}
    return orjson.dumps(converted)


async def count_tokens(ex: Exchange) -> int:
    """count_tokens for a provider that has no such endpoint: the estimate, answered here."""
    try:
        tokens = estimate_input_tokens(_decoded(ex.request))
    except ConversionError as exc:
        raise _refused(exc, "count_tokens") from None
    content = orjson.dumps({"input_tokens": tokens})
    return await send_whole(ex, 200, [_JSON_CT, ex.request.rid_header], content)


async def respond(ex: Exchange, pplan: ProviderPlan, response: UpstreamResponse, adapter: Adapter) -> int:
    """Answer the client in its own protocol from the provider's ``response``."""
    status = response.status
    # passthrough_headers already carries the x-ratelimit-* headers of the gateway's own limits.
    kept = [h for h in passthrough_headers(ex, pplan, response) if h[0] not in _BODY_HEADERS]
    model = ex.request.model
    if not 200 <= status < 300:
        raw = await response.read()
        if pplan.sanitize:
            # The upstream's own headers could name the provider; a sanitized error carries none.
            generic = sanitize.sanitized_error_body(status)
            content = to_anthropic_error(status, generic) if adapter.client == CLIENT_ANTHROPIC else generic
            kept = [ex.request.rid_header, *ex.meter.headers()]
        else:
            content = adapter.error(status, raw)
        kept.append(_JSON_CT)
        return await send_whole(ex, status, kept, content)
    if response.headers.get("Content-Type", "").startswith("text/event-stream"):
        translator = adapter.stream(model, _decoded(ex.request), pplan.sanitize)
        kept.append(_SSE_CT)
        return await _stream(ex, pplan, response, status, kept, translator)
    raw = await response.read()
    count_usage(ex, pplan, usage_from_json(raw))
    try:
        content = adapter.reply(raw, model, pplan.sanitize)
    except UpstreamFormatError as exc:
        raise GatewayError(
            502, errors.UPSTREAM_UNREACHABLE, log=f"cannot convert {pplan.label} answer: {exc.message}"
        ) from None
    decoded = _decoded(ex.request)
    if decoded.get("stream") is True:
        # The provider ignored stream: the client still gets the stream it asked for.
        kept.append(_SSE_CT)
        return await send_whole(ex, status, kept, adapter.replay(orjson.loads(content), decoded))
    kept.append(_JSON_CT)
    return await send_whole(ex, status, kept, content)


async def _stream(
    ex: Exchange,
    pplan: ProviderPlan,
    response: UpstreamResponse,
    status: int,
    headers: Headers,
    translator: StreamTranslator,
) -> int:
    # A stream can last minutes: watch for a client that leaves from the first byte on.
    ex.watch.start()
    send = ex.send
    await start(send, status, headers)
    content = response.content
    sent = events = 0
    tail = b""
    try:
        while True:
            chunk = await content.readany()
            if not chunk:
                break
            out = translator.feed(chunk)
            if out:
                events += out.count(b"\n\n")
                sent += len(out)
                await body(send, out, True)
    except (aiohttp.ClientError, OSError) as exc:
        ex.gw.metrics.upstream_error(pplan.label, "reset")
        ex.outcome.error = f"upstream stream broke: {type(exc).__name__}"
    finally:
        # After a break the translator ends the client's stream with an error event of its protocol.
        tail = translator.close()
        if translator.completed:  # a stream cut short reports no usage: its reservation stays spent
            count_usage(ex, pplan, usage_of({"usage": translator.usage}))
        events += tail.count(b"\n\n")
        sent += len(tail)
        ex.gw.metrics.streamed(pplan.label, sent, events)
        ex.outcome.bytes_out = sent
    await ex.permits.release_before_end()
    await body(send, tail, False)
    return status
