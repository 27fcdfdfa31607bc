"""`${VAR}` references inside config strings, filled from the environment at load.

Secrets such as provider keys should not have to live in the config file, so any string
value may say `"onwards_key": "${OPENAI_API_KEY}"`. The rules are deliberately small:

* `${NAME}` is replaced by the variable's value; NAME is letters, digits and `_`, not
  starting with a digit. A variable that is set to "" is used as "".
* `$${` stands for a literal `${` (so a value can contain `${` without a lookup).
* Any other `$` is literal.
* Replaced text is not scanned again, so a value containing `${...}` stays as it is.

A reference to an unset variable, a `${` with no closing `}`, or a malformed name is an
error rather than an empty string: a missing credential should stop the load, not turn
into an unauthenticated upstream call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class EnvReferenceError(ValueError):
    """A `${...}` reference that cannot be filled; the caller adds the field path."""


def expand_env(text: str, environ: Mapping[str, str]) -> str:
    """Return `text` with every `${NAME}` replaced from `environ` and `$${` unescaped."""
    if "$" not in text:  # the common case: nothing to do, no copy
        return text
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        j = text.find("$", i)
        if j < 0:
            out.append(text[i:])
            break
        out.append(text[i:j])
        if text.startswith("$${", j):
            out.append("${")
            i = j + 3
        elif text.startswith("${", j):
            end = text.find("}", j + 2)
            if end < 0:
                raise EnvReferenceError("'${' without a closing '}' (write '$${' for a literal '${')")
            name = text[j + 2 : end]
            if not _NAME.fullmatch(name):
                # The text is not quoted back: it may be part of a secret that happens to contain "${".
                raise EnvReferenceError(
                    "'${...}' does not hold a valid environment variable name "
                    "(letters, digits and '_'; write '$${' for a literal '${')"
                )
            value = environ.get(name)
            if value is None:
                raise EnvReferenceError(f"environment variable '{name}' is not set")
            out.append(value)
            i = end + 1
        else:
            out.append("$")
            i = j + 1
    return "".join(out)
