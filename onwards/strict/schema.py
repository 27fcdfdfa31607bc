"""A small declarative JSON schema: one description per API object, read two ways.

Strict mode checks requests against the OpenAI schemas (the request is then forwarded as
the client sent it) and rebuilds upstream success bodies through the same kind of
description (unknown fields dropped, optional nulls omitted). Each schema node's `read`
checks a decoded JSON value and returns its sanitized copy, or raises Invalid with the
path of the first problem. The rules follow the Rust onwards' serde types: an optional
field may be absent or null (both omitted on output), a required field must be present and
of its type, integers are JSON integers (not `1.0`, not `true`), numbers accept integers,
and an untagged union takes the first alternative that reads.

Schemas are built once at import; reading allocates only the output.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


class Invalid(Exception):
    """`path` (`messages[0].content`, "" for the whole body) and what is wrong there."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


def child(path: str, name: str) -> str:
    if name and all(ch in _PLAIN for ch in name):
        return f"{path}.{name}" if path else name
    return f"{path}[{orjson.dumps(name).decode()}]"


def item(path: str, index: int) -> str:
    return f"{path}[{index}]"


def type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


class Schema:
    """One node. `expected` names what it accepts, for messages ("a string")."""

    expected = "a value"

    def read(self, value: Any, path: str) -> Any:
        raise NotImplementedError

    def fail(self, value: Any, path: str) -> Invalid:
        return Invalid(path, f"expected {self.expected}, got {type_name(value)}")


class Anything(Schema):
    """Any JSON value, kept as is (serde's `Value`)."""

    expected = "any value"

    def read(self, value: Any, path: str) -> Any:
        return value


class Str(Schema):
    expected = "a string"

    def read(self, value: Any, path: str) -> Any:
        if type(value) is not str:
            raise self.fail(value, path)
        return value


class Bool(Schema):
    expected = "true or false"

    def read(self, value: Any, path: str) -> Any:
        if type(value) is not bool:
            raise self.fail(value, path)
        return value


class Int(Schema):
    """A JSON integer within [low, high] (u32 by default, as the Rust types mostly are)."""

    def __init__(self, low: int = 0, high: int = 2**32 - 1) -> None:
        self.low = low
        self.high = high
        self.expected = "a non-negative integer" if low == 0 else "an integer"

    def read(self, value: Any, path: str) -> Any:
        if type(value) is not int:
            raise self.fail(value, path)
        if not self.low <= value <= self.high:
            raise Invalid(path, f"expected an integer from {self.low} to {self.high}")
        return value


class Num(Schema):
    expected = "a number"

    def read(self, value: Any, path: str) -> Any:
        if type(value) not in (int, float):
            raise self.fail(value, path)
        return value


class ListOf(Schema):
    def __init__(self, element: Schema) -> None:
        self.element = element
        self.expected = f"a list of {_plural(element.expected)}"

    def read(self, value: Any, path: str) -> Any:
        if type(value) is not list:
            raise self.fail(value, path)
        element = self.element
        return [element.read(entry, item(path, index)) for index, entry in enumerate(value)]


class OneOf(Schema):
    """An untagged union: the first alternative that reads the value wins."""

    def __init__(self, *alternatives: Schema, expected: str) -> None:
        self.alternatives = alternatives
        self.expected = expected

    def read(self, value: Any, path: str) -> Any:
        for alternative in self.alternatives:
            try:
                return alternative.read(value, path)
            except Invalid:
                continue
        raise self.fail(value, path)


class Obj(Schema):
    """A JSON object with known fields; `extra` says what happens to the others.

    `required` fields must be present (null only where their schema is Anything);
    `optional` ones may be absent or null and are then left out of the output. With
    `extra=True` unknown fields are copied as they are (serde `flatten`), otherwise dropped.
    """

    def __init__(
        self,
        required: Mapping[str, Schema] | None = None,
        optional: Mapping[str, Schema] | None = None,
        *,
        extra: bool = False,
        expected: str = "an object",
    ) -> None:
        self.required = dict(required or {})
        self.optional = dict(optional or {})
        self.extra = extra
        self.expected = expected

    def read(self, value: Any, path: str) -> Any:
        if type(value) is not dict:
            raise self.fail(value, path)
        out: dict[str, Any] = {}
        for name, schema in self.required.items():
            if name not in value:
                raise Invalid(child(path, name), "required")
            field = value[name]
            if field is None and not isinstance(schema, Anything):
                raise Invalid(child(path, name), f"expected {schema.expected}, got null")
            out[name] = schema.read(field, child(path, name))
        for name, schema in self.optional.items():
            field = value.get(name)
            if field is not None:
                out[name] = schema.read(field, child(path, name))
        if self.extra:
            known = self.required.keys() | self.optional.keys()
            for name, field in value.items():
                if name not in known:
                    out[name] = field
        return out


class Tagged(Schema):
    """An object whose `tag` field picks its shape (serde's internally tagged enum).

    The tag is kept on output. An unknown tag is refused unless `other` is given, which
    then reads it (e.g. Anything, to pass unknown item types through).
    """

    def __init__(
        self, tag: str, variants: Mapping[str, Obj], *, expected: str, other: Schema | None = None
    ) -> None:
        self.tag = tag
        self.variants = dict(variants)
        self.other = other
        self.expected = expected

    def read(self, value: Any, path: str) -> Any:
        if type(value) is not dict:
            raise self.fail(value, path)
        kind = value.get(self.tag)
        variant = self.variants.get(kind) if type(kind) is str else None
        if variant is None:
            if self.other is not None:
                return self.other.read(value, path)
            if kind is None:
                raise Invalid(child(path, self.tag), "required")
            raise Invalid(child(path, self.tag), f"must be one of {', '.join(self.variants)}")
        out = variant.read(value, path)
        return {self.tag: kind, **out}


def _plural(expected: str) -> str:
    for article in ("a ", "an "):
        if expected.startswith(article):
            return expected[len(article) :] + "s"
    return expected
