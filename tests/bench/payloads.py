"""The bytes every benchmark process agrees on: the request body, the key and the canned answers."""

from __future__ import annotations

import json

MODEL = "bench"
KEY = "k1"
CHAT_PATH = "/v1/chat/completions"

REQUEST_BODY = json.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "Say hello in one short sentence."}]},
    separators=(",", ":"),
)
STREAM_REQUEST_BODY = json.dumps(
    {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "Count to twenty."}]},
    separators=(",", ":"),
)

# A realistic non-streaming answer of about 600 bytes, like the one the reference figures used.
# No `$` and no single quote: nginx's `return` would read `$` as a variable and `'` ends its string.
CHAT_COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench0000000000000000000000000",
        "object": "chat.completion",
        "created": 1735689600,
        "model": "bench-model-2025-01-01",
        "system_fingerprint": "fp_bench0000",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello! This is the fixed answer of the benchmark upstream, about as long "
                    "as a real short completion. It has no words to spare.",
                    "refusal": None,
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 14,
            "completion_tokens": 48,
            "total_tokens": 62,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        },
    },
    separators=(",", ":"),
).encode()


def sse_chunk(index: int) -> bytes:
    """One `chat.completion.chunk` event of a stream."""
    event = {
        "id": "chatcmpl-bench-stream",
        "object": "chat.completion.chunk",
        "created": 1735689600,
        "model": "bench-model-2025-01-01",
        "choices": [{"index": 0, "delta": {"content": f"token{index} "}, "finish_reason": None}],
    }
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"
