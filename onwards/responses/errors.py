"""The one error the Responses conversion raises for a request it cannot serve.

It carries everything an OpenAI-style 400 body needs, so the HTTP layer only encodes it.
"""

from __future__ import annotations

from onwards.errors import error_body


class ResponsesRequestError(ValueError):
    """A `/v1/responses` request the adapter refuses (bad shape or a feature it cannot map)."""

    def __init__(
        self, message: str, param: str | None = None, code: str = "invalid_request", status: int = 400
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status

    def body(self) -> bytes:
        return error_body(self.message, "invalid_request_error", self.code, self.param)
