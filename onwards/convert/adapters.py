"""The two cross-protocol pairings as ready-made adapters, chosen once per provider when a config loads.

An adapter says how a client of one protocol is served by a provider of the other: the upstream path,
and the request, reply, stream and error converters for that direction. A provider of the client's own
protocol has no adapter: its traffic passes through untouched.

``CLIENT_ANTHROPIC`` / ``CLIENT_OPENAI`` name the client side: a request to ``/v1/messages`` speaks
Anthropic, one to ``/v1/chat/completions`` speaks OpenAI; ``CLIENT_COUNT_TOKENS`` is
``/v1/messages/count_tokens``, which has no adapter: the proxy answers it with estimate_input_tokens unless
the provider speaks Anthropic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from onwards.convert.chat_request import chat_to_messages, wants_usage
from onwards.convert.errors import to_anthropic_error, to_openai_error
from onwards.convert.messages_request import messages_to_chat
from onwards.convert.replay import chat_completion_stream, message_stream
from onwards.convert.replies import chat_completion_to_message, message_to_chat_completion
from onwards.convert.stream_to_chat import MessagesToChatStream
from onwards.convert.stream_to_messages import ChatToMessagesStream

__all__ = [
    "ANTHROPIC_CLIENTS",
    "CHAT_OVER_MESSAGES",
    "CLIENT_ANTHROPIC",
    "CLIENT_COUNT_TOKENS",
    "CLIENT_OPENAI",
    "MESSAGES_OVER_CHAT",
    "Adapter",
    "StreamTranslator",
    "adapters_for",
    "client_protocol",
]

CLIENT_ANTHROPIC = "anthropic"
CLIENT_OPENAI = "openai"
CLIENT_COUNT_TOKENS = "count_tokens"
# Clients that expect Anthropic's error shape.
ANTHROPIC_CLIENTS = frozenset((CLIENT_ANTHROPIC, CLIENT_COUNT_TOKENS))


class StreamTranslator(Protocol):
    completed: bool  # the provider's stream ended whole (its usage is final)
    usage: dict[str, Any]  # the usage it reported, in the client's protocol

    def feed(self, chunk: bytes) -> bytes: ...
    def close(self) -> bytes: ...


def _forced(reply: Callable[[Any, str], dict[str, Any]]) -> Callable[[bytes, str, bool], bytes]:
    def convert(raw: bytes, model: str, force_model: bool) -> bytes:
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        out = reply(parsed, model)
        if force_model:
            out["model"] = model
        return orjson.dumps(out)

    return convert


@dataclass(frozen=True, slots=True)
class Adapter:
    name: str  # for logs: "messages->chat" is an Anthropic client over an OpenAI provider
    client: str  # the client's protocol, CLIENT_ANTHROPIC or CLIENT_OPENAI
    upstream_path: str
    # The client's decoded body as the provider's (raises ConversionError).
    request: Callable[[dict[str, Any]], dict[str, Any]]
    # A 2xx provider body as the client's (raw, model asked for, force that model; UpstreamFormatError).
    reply: Callable[[bytes, str, bool], bytes]
    # A translator of the provider's SSE (model asked for, client's decoded body, force that model).
    stream: Callable[[str, dict[str, Any], bool], StreamTranslator]
    # A provider error body (status, raw) in the client's error shape.
    error: Callable[[int, bytes], bytes]
    # A converted whole answer as the client's stream (answer, client's decoded body), for a provider
    # that answered a stream request with one JSON body.
    replay: Callable[[dict[str, Any], dict[str, Any]], bytes]


MESSAGES_OVER_CHAT = Adapter(
    name="messages->chat",
    client=CLIENT_ANTHROPIC,
    upstream_path="/v1/chat/completions",
    request=messages_to_chat,
    reply=_forced(chat_completion_to_message),
    stream=lambda model, body, force: ChatToMessagesStream(model, force_model=force),
    error=to_anthropic_error,
    replay=lambda message, body: message_stream(message),
)

CHAT_OVER_MESSAGES = Adapter(
    name="chat->messages",
    client=CLIENT_OPENAI,
    upstream_path="/v1/messages",
    request=chat_to_messages,
    reply=_forced(message_to_chat_completion),
    stream=lambda model, body, force: MessagesToChatStream(model, wants_usage(body), force_model=force),
    error=to_openai_error,
    replay=lambda completion, body: chat_completion_stream(completion, wants_usage(body)),
)


def adapters_for(provider_format: str) -> dict[str, Adapter]:
    """Client protocol -> adapter, for a provider of this format (absent: pass through)."""
    if provider_format == "anthropic":
        return {CLIENT_OPENAI: CHAT_OVER_MESSAGES}
    return {CLIENT_ANTHROPIC: MESSAGES_OVER_CHAT}


_CLIENT_PATHS = {
    "/v1/messages": CLIENT_ANTHROPIC,
    "/v1/messages/count_tokens": CLIENT_COUNT_TOKENS,
    "/v1/chat/completions": CLIENT_OPENAI,
    "/chat/completions": CLIENT_OPENAI,  # the proxy serves paths without /v1 too, as the Rust onwards
}


def client_protocol(method: str, path: str) -> str | None:
    """The protocol a request speaks, when it is one that can be converted."""
    if method != "POST":
        return None
    return _CLIENT_PATHS.get(path)
