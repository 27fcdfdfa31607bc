"""The strict router's table: which paths exist, which surface each is, where it goes upstream.

Only these paths are served in strict mode; any other path is 404 with nothing forwarded,
and another method on a known path is 405. Upstream paths have no `/v1` (the Rust gateway
forwards them that way), so a strict provider's `url` must include its `/v1`.
`/v1/messages` is an alias of chat completions for traffic an edge already translated from
the Anthropic shape: its body must be a chat completion request.
"""

from __future__ import annotations

from dataclasses import dataclass

from onwards.strict.success import Surface


@dataclass(frozen=True, slots=True)
class StrictRoute:
    surface: Surface
    upstream_path: str


STRICT_ROUTES: dict[str, StrictRoute] = {
    "/v1/chat/completions": StrictRoute("chat", "/chat/completions"),
    "/v1/messages": StrictRoute("chat", "/chat/completions"),
    "/v1/completions": StrictRoute("completions", "/completions"),
    "/v1/embeddings": StrictRoute("embeddings", "/embeddings"),
    "/v1/responses": StrictRoute("responses", "/responses"),
}
# Answered by the gateway itself (GET only), as in non-strict mode.
STRICT_LOCAL_PATHS = frozenset({"/models", "/v1/models"})
