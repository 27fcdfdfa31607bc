"""The CORS policy compiler: preflight answers and response headers, computed at config load."""

from __future__ import annotations

from typing import NoReturn

import orjson
import pytest

from onwards.edge.cors import parse_cors


class Bad(Exception):
    pass


def fail(path: str, detail: str) -> NoReturn:
    raise Bad(f"{path}: {detail}")


def policy(**spec: object):
    return parse_cors(spec, "cors", fail)


def test_listed_origin_preflight_is_answered():
    p = policy(allowed_origins=["https://app.example.com"], max_age_secs=120, allow_credentials=True)
    answer = p.preflight(b"https://app.example.com", b"POST", b"Authorization, Content-Type")
    assert answer.status == 204
    h = dict(answer.headers)
    assert h[b"access-control-allow-origin"] == b"https://app.example.com"
    assert h[b"access-control-allow-credentials"] == b"true"
    assert h[b"access-control-allow-methods"] == b"GET, POST, OPTIONS"
    assert b"authorization" in h[b"access-control-allow-headers"]
    assert h[b"access-control-max-age"] == b"120"
    assert (b"vary", b"origin") in answer.headers


def test_refusals_are_403_json_naming_the_reason():
    p = policy(allowed_origins=["https://app.example.com"], allowed_methods=["POST"])
    for origin, method, headers, words in (
        (b"https://evil.example", b"POST", None, "the origin"),
        (b"https://app.example.com", b"DELETE", None, "the requested method"),
        (b"https://app.example.com", b"POST", b"x-secret", "x-secret"),
    ):
        answer = p.preflight(origin, method, headers)
        assert answer.status == 403
        assert words in orjson.loads(answer.body)["error"]["message"]


def test_any_origin_uses_static_headers():
    p = policy(allowed_origins=["*"], allowed_headers=["*"])
    assert p.response_headers(b"https://anything") == (
        (b"access-control-allow-origin", b"*"),
        (b"access-control-expose-headers", b"x-request-id"),
    )
    answer = p.preflight(b"https://anything", b"GET", b"x-custom")
    assert answer.status == 204
    assert dict(answer.headers)[b"access-control-allow-headers"] == b"x-custom"


def test_response_headers_only_for_allowed_origins():
    p = policy(allowed_origins=["https://App.Example.com"])
    assert dict(p.response_headers(b"https://app.example.com"))[b"access-control-allow-origin"]
    assert p.response_headers(b"https://other.example") == ()


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({}, "allowed_origins: required"),
        ({"allowed_origins": []}, "at least one"),
        ({"allowed_origins": "*"}, "list of non-empty strings"),
        ({"allowed_origins": ["*"], "allow_credentials": True}, "cannot be true"),
        ({"allowed_origins": ["*"], "max_age_secs": -1}, "max_age_secs"),
        ({"allowed_origins": ["*"], "allowed_headers": ["a,b"]}, "without commas"),
        ({"allowed_origins": ["*"], "origins": ["x"]}, "cors.origins: unknown field"),
    ],
)
def test_bad_config_names_the_field(spec, words):
    with pytest.raises(Bad, match=words):
        parse_cors(spec, "cors", fail)
