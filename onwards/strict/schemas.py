"""The OpenAI request and response schemas strict mode reads, as the Rust onwards types them.

Requests are only checked (the original bytes are forwarded), so unknown fields anywhere
are allowed in them. Responses are rebuilt through these schemas: unknown fields are
dropped except inside a chat `message` (the Rust types keep those), and absent optional
fields are left out. Where the Rust types are narrower than the OpenAI API, the OpenAI
shape is accepted as well (listed in docs/configuration.md): chat content parts
`input_audio` and `file`, an embeddings `input` of one token list, and Responses tools of
types the Rust enum does not list.
"""

from __future__ import annotations

from onwards.strict.schema import Anything, Bool, Int, ListOf, Num, Obj, OneOf, Schema, Str, Tagged

ANY = Anything()
STR = Str()
BOOL = Bool()
UINT = Int()
U64 = Int(0, 2**64 - 1)
I64 = Int(-(2**63), 2**63 - 1)
NUM = Num()
STOP = OneOf(STR, ListOf(STR), expected="a string or a list of strings")

# --- chat completions --------------------------------------------------------------------------

_CONTENT_PART = Tagged(
    "type",
    {
        "text": Obj({"text": STR}),
        "image_url": Obj({"image_url": Obj({"url": STR}, {"detail": STR})}),
        "input_audio": Obj({"input_audio": ANY}),
        "file": Obj({"file": ANY}),
    },
    expected="a content part ('text', 'image_url', 'input_audio' or 'file')",
)
_MESSAGE_CONTENT = OneOf(STR, ListOf(_CONTENT_PART), expected="a string or a list of content parts")
_TOOL_CALL = Obj({"id": STR, "type": STR, "function": Obj({"name": STR, "arguments": STR})})

CHAT_MESSAGE = Obj(
    {"role": STR},
    {
        "content": _MESSAGE_CONTENT,
        "name": STR,
        "tool_calls": ListOf(_TOOL_CALL),
        "tool_call_id": STR,
        "reasoning": STR,
        "reasoning_content": STR,
        "reasoning_details": ListOf(ANY),
    },
    extra=True,
    expected="a message object",
)
_CHAT_TOOL = Obj(
    {"type": STR, "function": Obj({"name": STR}, {"description": STR, "parameters": ANY, "strict": BOOL})}
)

CHAT_REQUEST = Obj(
    {"model": STR, "messages": ListOf(CHAT_MESSAGE)},
    {
        "temperature": NUM,
        "top_p": NUM,
        "n": UINT,
        "stream": BOOL,
        "stream_options": Obj(optional={"include_usage": BOOL}, extra=True),
        "stop": STOP,
        "max_tokens": UINT,
        "max_completion_tokens": UINT,
        "reasoning_effort": ANY,  # checked by the reasoning contract, which names the values
        "presence_penalty": NUM,
        "frequency_penalty": NUM,
        "logit_bias": ANY,
        "logprobs": BOOL,
        "top_logprobs": UINT,
        "user": STR,
        "seed": I64,
        "tools": ListOf(_CHAT_TOOL),
        "tool_choice": OneOf(
            STR,
            Obj({"type": STR, "function": Obj({"name": STR})}),
            expected="'none', 'auto', 'required' or a function choice",
        ),
        "parallel_tool_calls": BOOL,
        "response_format": Obj({"type": STR}, {"json_schema": ANY}, extra=True),
        "service_tier": STR,
    },
    extra=True,
    expected="a chat completion request object",
)

USAGE = Obj(
    {"prompt_tokens": UINT, "completion_tokens": UINT, "total_tokens": UINT},
    {"prompt_tokens_details": ANY, "completion_tokens_details": ANY},
)

CHAT_RESPONSE = Obj(
    {
        "id": STR,
        "object": STR,
        "created": U64,
        "model": STR,
        "choices": ListOf(
            Obj({"index": UINT, "message": CHAT_MESSAGE}, {"finish_reason": STR, "logprobs": ANY})
        ),
    },
    {"usage": USAGE, "system_fingerprint": STR, "service_tier": STR},
)

_CHUNK_TOOL_CALL = Obj(
    {"index": UINT},
    {"id": STR, "type": STR, "function": Obj(optional={"name": STR, "arguments": STR})},
)
_CHUNK_DELTA = Obj(
    optional={
        "role": STR,
        "content": STR,
        "tool_calls": ListOf(_CHUNK_TOOL_CALL),
        "reasoning": STR,
        "reasoning_content": STR,
        "reasoning_details": ListOf(ANY),
    }
)
CHAT_CHUNK = Obj(
    {
        "id": STR,
        "object": STR,
        "created": U64,
        "model": STR,
        "choices": ListOf(
            Obj({"index": UINT, "delta": _CHUNK_DELTA}, {"finish_reason": STR, "logprobs": ANY})
        ),
    },
    {"usage": USAGE, "system_fingerprint": STR, "service_tier": STR},
)

# --- legacy completions ----------------------------------------------------------------------

_TOKENS = ListOf(UINT)
COMPLETIONS_REQUEST = Obj(
    {"model": STR},
    {
        "prompt": OneOf(
            STR,
            ListOf(STR),
            _TOKENS,
            ListOf(_TOKENS),
            expected="a string, a list of strings, a token list or a list of token lists",
        ),
        "suffix": STR,
        "max_tokens": UINT,
        "temperature": NUM,
        "top_p": NUM,
        "n": UINT,
        "stream": BOOL,
        "logprobs": UINT,
        "echo": BOOL,
        "stop": STOP,
        "presence_penalty": NUM,
        "frequency_penalty": NUM,
        "best_of": UINT,
        "logit_bias": ANY,
        "user": STR,
        "seed": I64,
    },
    extra=True,
    expected="a completion request object",
)
_COMPLETION_CHOICE = Obj({"text": STR, "index": UINT}, {"logprobs": ANY, "finish_reason": STR})
COMPLETION_RESPONSE = Obj(
    {"id": STR, "object": STR, "created": U64, "model": STR, "choices": ListOf(_COMPLETION_CHOICE)},
    {"usage": USAGE, "system_fingerprint": STR},
)
COMPLETION_CHUNK = Obj(
    {"id": STR, "object": STR, "created": U64, "model": STR, "choices": ListOf(_COMPLETION_CHOICE)},
    {"usage": USAGE},
)

# --- embeddings ---------------------------------------------------------------------------------

EMBEDDINGS_REQUEST = Obj(
    {
        "model": STR,
        "input": OneOf(
            STR,
            ListOf(STR),
            _TOKENS,
            ListOf(_TOKENS),
            expected="a string, a list of strings, a token list or a list of token lists",
        ),
    },
    {"encoding_format": STR, "dimensions": UINT, "user": STR},
    extra=True,
    expected="an embeddings request object",
)
EMBEDDINGS_RESPONSE = Obj(
    {
        "object": STR,
        "data": ListOf(
            Obj(
                {
                    "object": STR,
                    "embedding": OneOf(ListOf(NUM), STR, expected="a list of numbers or a base64 string"),
                    "index": UINT,
                }
            )
        ),
        "model": STR,
        "usage": Obj({"prompt_tokens": UINT, "total_tokens": UINT}),
    }
)

# --- responses ----------------------------------------------------------------------------------

_RESPONSES_TOOL = Tagged(
    "type",
    # A function tool is flat here; the nested chat shape ({"function": {...}}) lacks `name`.
    {"function": Obj({"name": STR, "description": STR, "parameters": ANY}, {"strict": BOOL}, extra=True)},
    expected="a tool object",
    other=Obj({"type": STR}, extra=True),
)
RESPONSES_REQUEST = Obj(
    {
        "model": STR,
        "input": OneOf(
            STR,
            ListOf(Obj(extra=True, expected="an input item object")),
            expected="a string or a list of input items",
        ),
    },
    {
        "instructions": STR,
        "previous_response_id": STR,
        "store": BOOL,
        "metadata": ANY,
        "temperature": NUM,
        "top_p": NUM,
        "max_output_tokens": UINT,
        "stop": STOP,
        "stream": BOOL,
        "tools": ListOf(_RESPONSES_TOOL),
        "tool_choice": ANY,
        "parallel_tool_calls": BOOL,
        "truncation": STR,
        "user": STR,
        "reasoning": ANY,  # checked by the reasoning contract
        "text": ANY,
        "background": BOOL,
        "service_tier": STR,
    },
    extra=True,
    expected="a responses request object",
)

_RESPONSE_USAGE = Obj(
    {
        "input_tokens": UINT,
        "output_tokens": UINT,
        "total_tokens": UINT,
        "input_tokens_details": Obj({"cached_tokens": UINT}),
        "output_tokens_details": Obj({"reasoning_tokens": UINT}),
    }
)
RESPONSES_RESPONSE = Obj(
    {
        "id": STR,
        "object": STR,
        "created_at": U64,
        "status": STR,
        "model": STR,
        "output": ListOf(ANY),
        "tools": ListOf(ANY),
        "tool_choice": ANY,
        "truncation": STR,
        "parallel_tool_calls": BOOL,
        "text": ANY,
        "top_p": NUM,
        "presence_penalty": NUM,
        "frequency_penalty": NUM,
        "top_logprobs": UINT,
        "temperature": NUM,
        "reasoning": ANY,
        "store": BOOL,
        "background": BOOL,
        "service_tier": STR,
    },
    {
        "completed_at": U64,
        "incomplete_details": Obj({"reason": STR}),
        "previous_response_id": STR,
        "instructions": ANY,
        "error": Obj({"type": STR, "message": STR}, {"code": STR, "param": STR}),
        "usage": _RESPONSE_USAGE,
        "max_output_tokens": UINT,
        "max_tool_calls": UINT,
        "metadata": ANY,
        "safety_identifier": STR,
        "prompt_cache_key": STR,
    },
)
RESPONSES_EVENT = Obj({"type": STR, "sequence_number": U64}, {"response": RESPONSES_RESPONSE}, extra=True)

REQUEST_SCHEMAS: dict[str, Schema] = {
    "chat": CHAT_REQUEST,
    "completions": COMPLETIONS_REQUEST,
    "embeddings": EMBEDDINGS_REQUEST,
    "responses": RESPONSES_REQUEST,
}
