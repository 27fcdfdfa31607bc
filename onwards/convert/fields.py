"""Typed reads of request fields: a field of the wrong type is the client's error, named by its path."""

from __future__ import annotations

from typing import Any

from onwards.convert.errors import ConversionError

__all__ = ["need"]

_KIND_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer"}


def need(value: Any, kind: type, where: str) -> Any:
    # bool is an int to Python, never to JSON schemas: true is not a max_tokens.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ConversionError(f"{where}: expected {_KIND_NAMES.get(kind, kind.__name__)}", where)
    return value
