"""A target's Responses adapter, compiled once when a config becomes active.

The request path only looks things up here: whether the adapter is on, the step limit, and
the configured server-side tools as loop schemas, chat tool definitions and HTTP tools.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from onwards.config.model import Target
from onwards.responses.http import HttpTool
from onwards.responses.protocols import ToolSchema


@dataclass(frozen=True, slots=True)
class ResponsesPlan:
    max_steps: int
    tools: dict[str, HttpTool]  # by name
    chat_tools: dict[str, dict[str, Any]]  # by name, the definition sent to the model


def compile_responses(target: Target) -> ResponsesPlan | None:
    """None unless the target's first provider turns the adapter on (as in the Rust gateway)."""
    if not target.providers or not target.providers[0].open_responses_adapter:
        return None
    spec = target.open_responses
    tools = {
        t.name: HttpTool(ToolSchema(t.name, t.description, t.parameters), t.url, t.timeout_secs, t.headers)
        for t in spec.tools
    }
    return ResponsesPlan(
        max_steps=spec.max_steps,
        tools=tools,
        chat_tools={name: tool.schema.chat_tool() for name, tool in tools.items()},
    )
