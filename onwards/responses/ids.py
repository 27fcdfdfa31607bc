"""Identifiers of responses, output items and steps.

Random, not counters: a response stored by one gateway process is continued through another
(previous_response_id), so ids must not repeat across processes or restarts.
"""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    """`prefix` + 24 random hex digits, e.g. `resp_3f2a...`."""
    return f"{prefix}_{secrets.token_hex(12)}"


def response_id() -> str:
    return new_id("resp")


def message_id() -> str:
    return new_id("msg")


def function_call_id() -> str:
    return new_id("fc")


def reasoning_id() -> str:
    return new_id("rs")


def step_request_id() -> str:
    return new_id("step")
