"""A provider's `reasoning_translation`, checked at load as the Rust onwards (0.35+) checks it.

    "reasoning_translation": {
      "chat_completions": {
        "unsupported_efforts": ["xhigh", "max"],
        "writes": [{"target_path": "/chat_template_kwargs/thinking",
                    "values": {"none": false, "minimal": true, "low": true, "medium": true, "high": true}}]
      }
    }

Each surface (`chat_completions`, `responses`; at least one) maps the canonical reasoning
efforts onto provider request fields. Rules: at least one write; target paths unique and not
nested in each other; every write maps the same efforts; mapped and unsupported efforts are
disjoint and together are all seven; a path is `/reasoning_effort`,
`/thinking_token_budget`, `/reasoning/...`, `/thinking/...`,
`/chat_template_kwargs/thinking` or `/chat_template_kwargs/enable_thinking`, with segments
of letters, digits, `_` and `-`, at most 8 of them; values at most 8192 bytes of JSON and 8
levels deep; `/thinking_token_budget` values are non-negative integers and need a
`/reasoning_effort` write beside them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import orjson

from onwards.config.model import ReasoningTranslation, ReasoningWrite, SurfaceTranslation

if TYPE_CHECKING:
    from onwards.config.parse import _Fields, _Loader

EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_MAX_SEGMENTS = 8
_MAX_VALUE_BYTES = 8 * 1024
_MAX_VALUE_DEPTH = 8


def read_translation(loader: _Loader, provider: _Fields) -> ReasoningTranslation | None:
    f = provider.optional_object("reasoning_translation")
    if f is None:
        return None
    chat = _surface(loader, f, "chat_completions")
    responses = _surface(loader, f, "responses")
    if chat is None and responses is None:
        loader.fail(f.path, "at least one API surface must be configured ('chat_completions' or 'responses')")
    f.finish()
    return ReasoningTranslation(chat_completions=chat, responses=responses)


def _surface(loader: _Loader, parent: _Fields, name: str) -> SurfaceTranslation | None:
    f = parent.optional_object(name)
    if f is None:
        return None
    unsupported: set[str] = set()
    raw_unsupported = f.raw("unsupported_efforts")
    if raw_unsupported is not None:
        path = f.at("unsupported_efforts")
        for index, effort in enumerate(loader.array(raw_unsupported, path)):
            unsupported.add(_effort(loader, effort, f"{path}[{index}]"))
    writes_path = f.at("writes")
    raw_writes = loader.array(f.required("writes"), writes_path)
    if not raw_writes:
        loader.fail(writes_path, "must contain at least one write")
    writes: list[ReasoningWrite] = []
    mapped: set[str] | None = None
    for index, raw in enumerate(raw_writes):
        path = f"{writes_path}[{index}]"
        write = _write(loader, loader.fields(raw, path), path)
        for earlier in writes:
            if earlier.target_path == write.target_path:
                loader.fail(f"{path}.target_path", "target paths must be unique")
            if _overlap(earlier.segments, write.segments):
                loader.fail(f"{path}.target_path", "target paths must not overlap")
        efforts = {effort for effort, _ in write.values}
        if mapped is not None and efforts != mapped:
            loader.fail(f"{path}.values", "every write must map exactly the same reasoning efforts")
        mapped = efforts
        writes.append(write)
    assert mapped is not None
    paths = {w.target_path for w in writes}
    if "/thinking_token_budget" in paths and "/reasoning_effort" not in paths:
        loader.fail(writes_path, "thinking_token_budget requires a reasoning_effort write")
    if mapped & unsupported:
        loader.fail(f.path, "mapped and unsupported reasoning efforts must not overlap")
    if mapped | unsupported != set(EFFORTS):
        loader.fail(
            f.path, "mapped and unsupported reasoning efforts must account for every OpenAI reasoning effort"
        )
    f.finish()
    budget = next((w for w in writes if w.target_path == "/thinking_token_budget"), None)
    return SurfaceTranslation(
        supported=tuple(e for e in EFFORTS if e in mapped), writes=tuple(writes), budget_write=budget
    )


def _effort(loader: _Loader, value: object, path: str) -> str:
    if not isinstance(value, str) or value not in EFFORTS:
        loader.fail(path, f"must be one of: {', '.join(EFFORTS)}")
    return value


def _write(loader: _Loader, f: _Fields, path: str) -> ReasoningWrite:
    target_path = loader.string(f.required("target_path"), f.at("target_path"))
    segments = _segments(loader, target_path, f.at("target_path"))
    values_fields = loader.fields(f.required("values"), f.at("values"))
    values: list[tuple[str, bytes]] = []
    for effort, value in values_fields.items():
        value_path = values_fields.at(effort)
        _effort(loader, effort, value_path)
        if target_path == "/thinking_token_budget" and not (type(value) is int and value >= 0):
            loader.fail(value_path, "thinking_token_budget values must be non-negative integers")
        encoded = orjson.dumps(value)
        if len(encoded) > _MAX_VALUE_BYTES:
            loader.fail(value_path, "mapped values must not exceed 8192 bytes")
        if _depth(value) > _MAX_VALUE_DEPTH:
            loader.fail(value_path, "mapped values must not exceed 8 levels")
        values.append((effort, encoded))
    if not values:
        loader.fail(f.at("values"), "values must contain at least one effort mapping")
    f.finish()
    return ReasoningWrite(target_path=target_path, segments=segments, values=tuple(values))


def _segments(loader: _Loader, target_path: str, path: str) -> tuple[str, ...]:
    if not target_path.startswith("/") or target_path == "/":
        loader.fail(path, "target_path must be an absolute JSON pointer")
    segments = tuple(target_path[1:].split("/"))
    if not all(_SEGMENT.fullmatch(s) for s in segments):
        loader.fail(path, "target_path segments may only contain letters, numbers, underscores, and hyphens")
    if len(segments) > _MAX_SEGMENTS:
        loader.fail(path, "target_path must not exceed 8 path segments")
    root = segments[0]
    allowed = (
        (root in ("reasoning_effort", "thinking_token_budget") and len(segments) == 1)
        or root in ("reasoning", "thinking")
        or (
            root == "chat_template_kwargs"
            and len(segments) == 2
            and segments[1] in ("thinking", "enable_thinking")
        )
    )
    if not allowed:
        loader.fail(path, "target_path must address a reasoning-related request field")
    return segments


def _overlap(left: tuple[str, ...], right: tuple[str, ...]) -> bool:
    shorter = min(len(left), len(right))
    return len(left) != len(right) and left[:shorter] == right[:shorter]


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 1
