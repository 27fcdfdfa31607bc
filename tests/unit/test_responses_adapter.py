"""The adapter's request checks: which server-side tools a request enables, and what it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from onwards.responses.errors import ResponsesRequestError
from onwards.responses.gateway import _decode, enabled_server_tools
from onwards.responses.http import HttpTool
from onwards.responses.plan import ResponsesPlan
from onwards.responses.protocols import ToolSchema

PLAN = ResponsesPlan(
    max_steps=10,
    tools={n: HttpTool(ToolSchema(n), f"http://127.0.0.1:9/{n}") for n in ("lookup", "clock")},
    chat_tools={n: {"type": "function", "function": {"name": n}} for n in ("lookup", "clock")},
)
FN = {"type": "function", "name": "get_weather", "parameters": {}}


@pytest.mark.parametrize(
    ("tools", "enabled"),
    [
        (None, []),
        ([], []),
        ([FN], []),
        ([{"type": "hosted_tool", "name": "clock"}, FN], ["clock"]),
        ([{"type": "hosted_tool", "name": "clock"}, {"type": "hosted_tool", "name": "clock"}], ["clock"]),
        (
            [{"type": "hosted_tool", "name": "lookup"}, {"type": "hosted_tool", "name": "clock"}],
            ["lookup", "clock"],
        ),
    ],
)
def test_enabled_tools(tools: Any, enabled: list[str]) -> None:
    names, chat = enabled_server_tools(PLAN, tools)
    assert names == enabled
    assert [c["function"]["name"] for c in chat] == enabled


@pytest.mark.parametrize(
    ("tools", "code", "param"),
    [
        ([{"type": "hosted_tool", "name": "nope"}], "unknown_tool", "tools[0].name"),
        ([FN, {"type": "web_search_preview"}], "unknown_tool", "tools[1].type"),
        ([{"type": "hosted_tool", "name": "clock"}, {**FN, "name": "clock"}], "tool_name_collision", "tools"),
        ("clock", "invalid_request", "tools"),
    ],
)
def test_refused_tools(tools: Any, code: str, param: str) -> None:
    with pytest.raises(ResponsesRequestError) as caught:
        enabled_server_tools(PLAN, tools)
    assert (caught.value.code, caught.value.param, caught.value.status) == (code, param, 400)


def test_unknown_hosted_tool_lists_the_available_ones() -> None:
    with pytest.raises(ResponsesRequestError) as caught:
        enabled_server_tools(PLAN, [{"type": "hosted_tool", "name": "nope"}])
    assert caught.value.message == "Unknown hosted tool: 'nope'. Available tools: [clock, lookup]"


@pytest.mark.parametrize(
    ("body", "code"),
    [(b"{", "bad_request"), (b"[1]", "bad_request"), (b'{"background": true}', "unsupported_value")],
)
def test_bad_bodies(body: bytes, code: str) -> None:
    with pytest.raises(ResponsesRequestError) as caught:
        _decode(body)
    assert caught.value.code == code
