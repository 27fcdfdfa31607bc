"""Who is calling: the bearer token, checked against the target's key set."""

from __future__ import annotations

from onwards import errors
from onwards.config.model import KeyDefinition, Snapshot, Target
from onwards.errors import GatewayError

_BEARER = b"bearer "


def bearer_token(authorization: bytes | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (scheme case-insensitive, per RFC 7235)."""
    if authorization is None or len(authorization) <= 7 or authorization[:7].lower() != _BEARER:
        return None
    token = authorization[7:].strip()
    if not token:
        return None
    try:
        return token.decode("ascii")
    except UnicodeDecodeError:
        return None


def api_key_token(value: bytes) -> str | None:
    """The token of an `x-api-key` header (Anthropic's way of sending it)."""
    token = value.strip()
    if not token:
        return None
    try:
        return token.decode("ascii")
    except UnicodeDecodeError:
        return None


def authenticate(snapshot: Snapshot, target: Target, token: str | None) -> KeyDefinition | None:
    """Check access to `target`; return the caller's key definition when it has one.

    Key sets are frozensets of tokens built at load, so the check is one hash lookup. A hash
    lookup is not constant-time, but it reveals nothing useful: timing depends on the hash of
    the guess, not on how many leading characters of a real key it shares.
    """
    if target.keys is not None:
        if token is None:
            raise GatewayError(401, errors.UNAUTHENTICATED, log="missing bearer token")
        if token not in target.keys:
            raise GatewayError(401, errors.INVALID_KEY, log="invalid bearer token")
    if token is None:
        return None
    return snapshot.keys_by_token.get(token)


def visible_models(snapshot: Snapshot, token: str | None) -> list[str]:
    return [
        alias
        for alias, target in snapshot.targets.items()
        if target.keys is None or (token is not None and token in target.keys)
    ]
