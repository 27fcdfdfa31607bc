"""The reasoning contract (as the Rust onwards 0.35+): one way to ask for reasoning, checked
before any upstream call, and each provider's translation of it.

Clients ask with `reasoning_effort` (chat completions) or `reasoning.effort` (responses),
one of none, minimal, low, medium, high, xhigh, max. Provider-specific spellings
(`chat_template_kwargs.thinking`, `thinking`, `thinking_token_budget`, ...) are refused with
400 `unsupported_parameter` naming the canonical one, so a request means the same whichever
provider serves it; the legacy completions surface takes no reasoning parameter at all. This
applies to every request on those paths (`.../chat/completions`, `.../responses`,
`.../completions`) with a body, with or without any `reasoning_translation`.

A provider's `reasoning_translation` (onwards/config/reasoning.py) then says how it wants the
effort written. Before the first attempt, the effort must be supported by every provider of
the pool (any of them may serve it) and fit each one's token budget. Per attempt,
`translated_body` writes the provider's fields and drops the canonical one it does not take.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from onwards import errors
from onwards.config.model import Provider, ReasoningWrite, SurfaceTranslation
from onwards.config.reasoning import EFFORTS
from onwards.errors import GatewayError

Surface = Literal["chat", "responses", "completions"]

_CHAT_REFUSED = (
    (("chat_template_kwargs", "thinking"), "chat_template_kwargs.thinking"),
    (("chat_template_kwargs", "enable_thinking"), "chat_template_kwargs.enable_thinking"),
    (("chat_template_kwargs",), "chat_template_kwargs"),
    (("thinking",), "thinking"),
    (("thinking_token_budget",), "thinking_token_budget"),
)
_REFUSED: dict[Surface, tuple[tuple[tuple[str, ...], str], ...]] = {
    "chat": (*_CHAT_REFUSED, (("reasoning",), "reasoning")),
    "responses": (*_CHAT_REFUSED, (("reasoning_effort",), "reasoning_effort")),
    "completions": tuple(
        ((name,), name)
        for name in (
            "reasoning_effort",
            "reasoning",
            "thinking",
            "thinking_token_budget",
            "chat_template_kwargs",
        )
    ),
}
_CANONICAL: dict[Surface, tuple[tuple[str, ...], str]] = {
    "chat": (("reasoning_effort",), "reasoning_effort"),
    "responses": (("reasoning", "effort"), "reasoning.effort"),
}
_OUTPUT_LIMITS: dict[Surface, tuple[str, ...]] = {
    "chat": ("max_completion_tokens", "max_tokens"),
    "responses": ("max_output_tokens",),
}


def surface_of(path: str) -> Surface | None:
    """Which reasoning surface a request path is, by its ending (query string excluded)."""
    path = path.rstrip("/")
    if path.endswith("/chat/completions"):
        return "chat"
    if path.endswith("/responses"):
        return "responses"
    if path.endswith("/completions"):
        return "completions"
    return None


_STRICT_SURFACES: dict[str, Surface] = {
    "chat": "chat",
    "responses": "responses",
    "completions": "completions",
}


def reasoning_surface(strict: Any, path: str) -> Surface | None:
    """The surface of a request: its strict route's, else its path's (None: no contract)."""
    if strict is not None:
        return _STRICT_SURFACES.get(strict.surface)
    return surface_of(path)


@dataclass(frozen=True, slots=True)
class ReasoningRequest:
    """The canonical effort a request asked for, and its output limit (for budgets)."""

    surface: Surface
    effort: str
    param: str  # reasoning_effort | reasoning.effort
    limit_param: str  # the output-limit field named in messages
    limit: Any  # its value, None when not set


def _error(status: int, message: str, code: str, param: str | None) -> GatewayError:
    return GatewayError(
        status, errors.error_body(message, "invalid_request_error", code, param), log=f"reasoning: {code}"
    )


def _lookup(body: dict[str, Any], segments: tuple[str, ...]) -> tuple[bool, Any]:
    current: Any = body
    for segment in segments:
        if type(current) is not dict or segment not in current:
            return False, None
        current = current[segment]
    return True, current


def check_contract(surface: Surface, body: dict[str, Any]) -> ReasoningRequest | None:
    """Refuse non-canonical reasoning parameters; return the canonical request, if any."""
    for segments, name in _REFUSED[surface]:
        if _lookup(body, segments)[0]:
            if surface == "completions":
                message = (
                    f"Parameter '{name}' is not supported by /v1/completions. "
                    "Use /v1/chat/completions or /v1/responses."
                )
            else:
                message = f"Unsupported parameter '{name}'; use '{_CANONICAL[surface][1]}'."
            raise _error(400, message, "unsupported_parameter", name)
    if surface == "completions":
        return None
    if surface == "responses":
        reasoning = body.get("reasoning")
        if reasoning is not None and type(reasoning) is not dict:
            raise _error(
                400, "Invalid type for 'reasoning'. Expected an object.", "invalid_type", "reasoning"
            )
    segments, param = _CANONICAL[surface]
    found, value = _lookup(body, segments)
    if not found or value is None:
        return None
    if type(value) is not str:
        raise _error(400, f"Invalid type for '{param}'. Expected a string.", "invalid_type", param)
    if value not in EFFORTS:
        raise _error(
            400,
            f"Invalid value '{value}' for '{param}'. Expected one of: {', '.join(EFFORTS)}.",
            "invalid_value",
            param,
        )
    limit_param, limit = _OUTPUT_LIMITS[surface][0], None
    for name in _OUTPUT_LIMITS[surface]:
        if body.get(name) is not None:
            limit_param, limit = name, body[name]
            break
    return ReasoningRequest(surface, value, param, limit_param, limit)


def translation_for(provider: Provider, surface: Surface) -> SurfaceTranslation | None:
    translation = provider.reasoning_translation
    if translation is None or surface == "completions":
        return None
    return translation.chat_completions if surface == "chat" else translation.responses


def check_providers(providers: tuple[Provider, ...], request: ReasoningRequest) -> None:
    """Every provider that may serve the request can honour its effort and budget."""
    for provider in providers:
        translation = translation_for(provider, request.surface)
        if translation is not None:
            _check_one(translation, request)


def _check_one(translation: SurfaceTranslation, request: ReasoningRequest) -> None:
    effort = request.effort
    if effort not in translation.supported:
        raise _error(
            400,
            f"Reasoning effort '{effort}' is not supported by this provider. "
            f"Supported values: {', '.join(translation.supported)}.",
            "unsupported_value",
            request.param,
        )
    write = translation.budget_write
    if write is None:
        return
    budget = orjson.loads(write.value_for(effort) or b"0")
    limit_param, limit = request.limit_param, request.limit
    if limit is None:
        raise _error(
            422,
            f"{request.param} '{effort}' maps to an {budget}-token reasoning budget for this model, but "
            f"{limit_param} is not set. Set {limit_param} above {budget} or select a lower {request.param}.",
            "reasoning_budget_requires_max_tokens",
            limit_param,
        )
    if type(limit) is not int or limit < 0:
        raise _error(
            400,
            f"Invalid type for '{limit_param}'. Expected a non-negative integer.",
            "invalid_type",
            limit_param,
        )
    if budget >= limit:
        raise _error(
            400,
            f"{request.param} '{effort}' maps to an {budget}-token reasoning budget for this model, but "
            f"{limit_param} is {limit}. Increase {limit_param} above {budget} "
            f"or select a lower {request.param}.",
            "reasoning_budget_exceeds_max_tokens",
            limit_param,
        )


def translated_body(
    translation: SurfaceTranslation, request: ReasoningRequest, body: dict[str, Any]
) -> dict[str, Any]:
    """A copy of `body` with the provider's reasoning fields written for the requested effort."""
    out = copy.deepcopy(body)
    canonical = _CANONICAL[request.surface][0]
    if not any(w.segments == canonical for w in translation.writes):
        _remove(out, canonical)
    for write in translation.writes:
        _set(out, write, orjson.loads(write.value_for(request.effort) or b"null"))
    return out


def _set(body: dict[str, Any], write: ReasoningWrite, value: Any) -> None:
    current = body
    for segment in write.segments[:-1]:
        child = current.get(segment)
        if type(child) is not dict:
            if child is not None:
                # The client put something else there; the write cannot go through it.
                raise _error(
                    400,
                    f"Field '{segment}' must be an object to carry the provider's reasoning setting.",
                    "invalid_type",
                    segment,
                )
            child = current[segment] = {}
        current = child
    current[write.segments[-1]] = value


def _remove(body: dict[str, Any], segments: tuple[str, ...]) -> bool:
    """Remove the field; a parent object left empty goes too. True when `body` is now empty."""
    if len(segments) == 1:
        if segments[0] not in body:
            return False
        del body[segments[0]]
        return not body
    child = body.get(segments[0])
    if type(child) is dict and _remove(child, segments[1:]):
        del body[segments[0]]
        return not body
    return False
