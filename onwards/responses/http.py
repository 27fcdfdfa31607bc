"""HTTP implementations of the loop's interfaces: server-side tools and a plain model client.

`HttpToolExecutor` runs the HTTP tools configured on a target: the call's arguments are
POSTed as the JSON body to the tool's URL with its configured headers (secrets come in
through `${ENV}` references in the config), within its timeout; a 2xx body is the tool's
output, anything else is a ToolError the model gets to read.

`HttpModelClient` is a `ModelClient` for host applications that call one Chat Completions
URL directly. The gateway itself does not use it: its model calls go through admission,
provider choice and failover like any other request (see onwards/responses/gateway.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from onwards.responses.protocols import STEP_REQUEST_ID_HEADER, ModelCallError, ToolError, ToolSchema

TOOL_CALL_ID_HEADER = "x-onwards-tool-call-id"
_ERROR_SNIPPET = 300  # characters of a failed tool's body shown to the model


@dataclass(frozen=True, slots=True)
class HttpTool:
    schema: ToolSchema
    url: str
    timeout_secs: float = 30.0
    headers: tuple[tuple[str, str], ...] = field(default=())


class HttpToolExecutor:
    """Runs `tools` over `session` (the worker's pooled aiohttp session)."""

    def __init__(self, tools: Sequence[HttpTool], session: aiohttp.ClientSession) -> None:
        self._tools = {t.schema.name: t for t in tools}
        self._schemas = tuple(t.schema for t in tools)
        self._session = session

    def tools(self) -> Sequence[ToolSchema]:
        return self._schemas

    async def execute(self, name: str, call_id: str, arguments: dict[str, Any]) -> Any:
        tool = self._tools.get(name)
        if tool is None:
            raise ToolError(f"no server-side tool named {name!r}")
        headers = {"content-type": "application/json", TOOL_CALL_ID_HEADER: call_id, **dict(tool.headers)}
        try:
            async with self._session.post(
                tool.url,
                data=orjson.dumps(arguments),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=tool.timeout_secs),
            ) as response:
                body = await response.read()
                if response.status // 100 != 2:
                    snippet = body[:_ERROR_SNIPPET].decode(errors="replace")
                    raise ToolError(f"tool {name} answered HTTP {response.status}: {snippet}")
                if response.content_type == "application/json":
                    try:
                        return orjson.loads(body)
                    except orjson.JSONDecodeError:
                        pass
                return body.decode(errors="replace")
        except TimeoutError:
            raise ToolError(f"tool {name} did not answer within {tool.timeout_secs:g}s") from None
        except aiohttp.ClientError as error:
            raise ToolError(f"tool {name} could not be reached: {type(error).__name__}") from None


class HttpModelClient:
    """POSTs each model step to one Chat Completions URL, with the step's request id header."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        api_key: str | None = None,
        headers: Mapping[str, str] = {},
    ) -> None:
        self._session = session
        self._url = url
        self._headers = {"content-type": "application/json", **headers}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"

    def _step_headers(self, step_request_id: str) -> dict[str, str]:
        return {**self._headers, STEP_REQUEST_ID_HEADER: step_request_id}

    async def complete(self, body: dict[str, Any], step_request_id: str) -> dict[str, Any]:
        try:
            async with self._session.post(
                self._url, data=orjson.dumps(body), headers=self._step_headers(step_request_id)
            ) as response:
                raw = await response.read()
        except (TimeoutError, aiohttp.ClientError) as error:
            raise ModelCallError(f"the model could not be reached: {type(error).__name__}") from None
        if response.status // 100 != 2:
            raise ModelCallError(f"the model answered HTTP {response.status}", response.status, raw)
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ModelCallError("the model's answer is not JSON") from None
        if not isinstance(value, dict):
            raise ModelCallError("the model's answer is not a JSON object")
        return value

    async def stream(self, body: dict[str, Any], step_request_id: str) -> AsyncIterator[bytes]:
        try:
            async with self._session.post(
                self._url, data=orjson.dumps(body), headers=self._step_headers(step_request_id)
            ) as response:
                if response.status // 100 != 2:
                    raw = await response.read()
                    raise ModelCallError(f"the model answered HTTP {response.status}", response.status, raw)
                async for chunk in response.content.iter_any():
                    yield chunk
        except (TimeoutError, aiohttp.ClientError) as error:
            raise ModelCallError(f"the model stream broke off: {type(error).__name__}") from None
