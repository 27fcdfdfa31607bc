"""Conversion between the Anthropic Messages and OpenAI Chat Completions protocols.

Pure functions over parsed JSON for requests and whole responses, and incremental stream translators
(bytes in, bytes out, never holding more than one unfinished event). Nothing here does I/O or knows about
the proxy: the request path picks a direction per attempt and calls these at its seams.

Client speaks Anthropic, provider OpenAI: messages_to_chat, chat_completion_to_message, ChatToMessagesStream,
to_anthropic_error. Client speaks OpenAI, provider Anthropic: chat_to_messages, message_to_chat_completion,
MessagesToChatStream, to_openai_error. estimate_input_tokens answers count_tokens locally. replay turns a
whole answer into the stream a client asked for; adapters bundles each direction for the proxy.
"""

from onwards.convert.chat_request import DEFAULT_MAX_TOKENS, chat_to_messages, wants_usage
from onwards.convert.count_tokens import estimate_input_tokens
from onwards.convert.errors import (
    ConversionError,
    UpstreamFormatError,
    anthropic_error,
    anthropic_error_type,
    error_message,
    openai_error,
    to_anthropic_error,
    to_openai_error,
)
from onwards.convert.messages_request import messages_to_chat
from onwards.convert.replies import chat_completion_to_message, message_to_chat_completion
from onwards.convert.stream_to_chat import MessagesToChatStream
from onwards.convert.stream_to_messages import ChatToMessagesStream

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "ChatToMessagesStream",
    "ConversionError",
    "MessagesToChatStream",
    "UpstreamFormatError",
    "anthropic_error",
    "anthropic_error_type",
    "chat_completion_to_message",
    "chat_to_messages",
    "error_message",
    "estimate_input_tokens",
    "message_to_chat_completion",
    "messages_to_chat",
    "openai_error",
    "to_anthropic_error",
    "to_openai_error",
    "wants_usage",
]
