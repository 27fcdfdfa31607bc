"""A ToolExecutor wrapper that gives each server-side tool call a trace span.

Only used when trace export is on. The span (`onwards.responses_tool`, kind INTERNAL) is a child
of the `/v1/responses` request's span, beside the spans of the model steps, and records the
tool's name, the call id and, when the call failed, why. The wrapped executor runs unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from onwards.responses.protocols import ToolExecutor, ToolSchema
from onwards.trace import Tracing


class TracedTools:
    def __init__(self, inner: ToolExecutor, tracing: Tracing, parent: Any) -> None:
        self._inner = inner
        self._tracing = tracing
        self._parent = parent

    def tools(self) -> Sequence[ToolSchema]:
        return self._inner.tools()

    async def execute(self, name: str, call_id: str, arguments: dict[str, Any]) -> Any:
        span = self._tracing.start_tool(self._parent, name, call_id)
        try:
            result = await self._inner.execute(name, call_id, arguments)
        except BaseException as exc:
            self._tracing.finish_tool(span, f"{type(exc).__name__}: {exc}")
            raise
        self._tracing.finish_tool(span, "")
        return result
