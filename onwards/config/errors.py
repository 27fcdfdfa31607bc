"""The one exception a bad config raises.

Operators read these messages in a terminal or a log line, so each one is a single line
that says where the problem is (file, then field path) and what would be accepted instead.
Messages never quote secret values (keys, tokens); they name fields and variables only.
"""

from __future__ import annotations


class ConfigError(Exception):
    """A config that cannot be loaded. `str(error)` is the full readable message.

    `origin` is the file name (or Redis key) the config came from, `path` the dotted field
    path inside it (`targets.gpt-4.providers[1].url`), `detail` what is wrong there.
    """

    def __init__(self, detail: str, *, origin: str | None = None, path: str | None = None) -> None:
        # Keep the message on one line even when a detail comes from a library error.
        self.detail = " ".join(detail.splitlines())
        self.origin = origin
        self.path = path
        super().__init__(self.message)

    @property
    def message(self) -> str:
        parts = [part for part in (self.origin, self.path) if part]
        parts.append(self.detail)
        return ": ".join(parts)

    def __str__(self) -> str:
        return self.message
