"""The `open_responses` config objects: the Responses adapter switch and its server-side tools.

On a provider, `{"adapter": true}` (as in the Rust gateway; the target's first provider
decides) makes `/v1/responses` requests to the target go through the Chat Completions
adapter. On the target (or, in the single-provider form, the same object) `max_steps` bounds
the model calls of one response and `tools` lists the server-side HTTP tools a request may
enable with `{"type": "hosted_tool", "name": ...}`:

    {"name": "lookup", "description": "...", "parameters": {JSON schema},
     "url": "https://tools.internal/lookup", "timeout_secs": 30,
     "headers": {"Authorization": "Bearer ${LOOKUP_TOKEN}"}}

A pool-level `adapter` is accepted and ignored, as the Rust gateway does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from onwards.config.parse import _Fields, _Loader

DEFAULT_MAX_STEPS = 10
DEFAULT_TOOL_TIMEOUT_SECS = 30.0
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what Chat Completions accepts as a function name


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]
    url: str
    timeout_secs: float
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class OpenResponsesSpec:
    max_steps: int = DEFAULT_MAX_STEPS
    tools: tuple[ToolSpec, ...] = ()


def read_adapter(loader: _Loader, f: _Fields, *, owns_spec: bool) -> tuple[bool, OpenResponsesSpec | None]:
    """A provider's `open_responses`: its adapter flag, and (single-provider form, where the
    provider is the target) the target's spec too."""
    obj = f.optional_object("open_responses")
    if obj is None:
        return False, None
    adapter = obj.optional_bool("adapter", False)
    spec = _spec(loader, obj) if owns_spec else None
    if not owns_spec:
        for name in ("max_steps", "tools"):
            if obj.has(name):
                loader.fail(
                    obj.at(name),
                    "belongs in the target's own 'open_responses' (pool or single-provider form), "
                    "not a provider's",
                )
    obj.finish()
    return adapter, spec


def read_target(loader: _Loader, f: _Fields) -> OpenResponsesSpec:
    """A pool's `open_responses`."""
    obj = f.optional_object("open_responses")
    if obj is None:
        return OpenResponsesSpec()
    obj.ignore("adapter", bool)  # the Rust gateway reads the adapter flag from providers only
    spec = _spec(loader, obj)
    obj.finish()
    return spec


def _spec(loader: _Loader, obj: _Fields) -> OpenResponsesSpec:
    max_steps = obj.optional_int("max_steps", DEFAULT_MAX_STEPS, minimum=1)
    tools: list[ToolSpec] = []
    raw = obj.raw("tools")
    if raw is not None:
        path = obj.at("tools")
        seen: set[str] = set()
        for index, item in enumerate(loader.array(raw, path)):
            tool = _tool(loader, loader.fields(item, f"{path}[{index}]"))
            if tool.name in seen:
                loader.fail(f"{path}[{index}].name", f"tool '{tool.name}' is listed twice")
            seen.add(tool.name)
            tools.append(tool)
    return OpenResponsesSpec(max_steps=max_steps, tools=tuple(tools))


def _tool(loader: _Loader, t: _Fields) -> ToolSpec:
    name = loader.string(t.required("name"), t.at("name"))
    if not _TOOL_NAME.fullmatch(name):
        loader.fail(t.at("name"), "must be 1-64 letters, digits, '_' or '-'")
    url = loader.string(t.required("url"), t.at("url"))
    if not url.startswith(("http://", "https://")):
        loader.fail(t.at("url"), "must be an http:// or https:// URL")
    parameters = t.raw("parameters")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    elif not isinstance(parameters, dict):
        loader.fail(t.at("parameters"), "must be a JSON schema object")
    spec = ToolSpec(
        name=name,
        description=t.optional_string("description", ""),
        parameters=parameters,
        url=url,
        timeout_secs=t.optional_positive("timeout_secs", DEFAULT_TOOL_TIMEOUT_SECS),
        headers=loader.headers(t, "headers"),
    )
    t.finish()
    return spec
