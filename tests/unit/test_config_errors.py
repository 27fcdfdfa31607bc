"""Every way a config can be refused, with the exact one-line message an operator sees."""

from __future__ import annotations

import pytest

from onwards.config import ConfigError, parse_config

PROVIDER = {"url": "http://h"}


def error_of(doc: object) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(doc, "config.json")
    message = str(info.value)
    assert "\n" not in message
    return message


def target(spec: object, alias: str = "x", **top: object) -> dict:
    return {"targets": {alias: spec}, **top}


def pool(**fields: object) -> dict:
    return target({"providers": [PROVIDER], **fields})


def provider(**fields: object) -> dict:
    return target({"providers": [PROVIDER, {**PROVIDER, **fields}]}, alias="pool-a")


def keydef(**fields: object) -> dict:
    return {"auth": {"key_definitions": {"basic": fields}}, "targets": {}}


P1 = "targets.pool-a.providers[1]."  # the second provider of provider(...) docs

# (config, message after the "config.json: " origin prefix)
CASES = [
    # --- top level
    ([], "the config must be a JSON object, got list"),
    ("x", "the config must be a JSON object, got string"),
    ({}, "targets: required"),
    ({"targets": None}, "targets: required"),
    ({"targets": []}, "targets: must be an object, got list"),
    ({"targets": {"": PROVIDER}}, "targets: an alias must be a non-empty string"),
    ({"targets": {}, "strict_mode": "no"}, "strict_mode: must be true or false, got string"),
    ({"targets": {}, "max_body_bytes": 0}, "max_body_bytes: must be an integer >= 1"),
    (
        {"targets": {}, "max_body_bytes": 1.5},
        "max_body_bytes: must be an integer >= 1, got number",
    ),
    ({"targets": {}, "http_pool": []}, "http_pool: must be an object, got list"),
    (
        {"targets": {}, "http_pool": {"max_idle_per_host": 0}},
        "http_pool.max_idle_per_host: must be an integer >= 1",
    ),
    (
        {"targets": {}, "http_pool": {"idle_timeout_secs": 0}},
        "http_pool.idle_timeout_secs: must be a positive number",
    ),
    (
        {"targets": {}, "http_pool": {"idle_timeout_secs": "90"}},
        "http_pool.idle_timeout_secs: must be a positive number, got string",
    ),
    ({"targets": {}, "limits": 5}, "limits: must be an object, got integer"),
    (
        {"targets": {}, "limits": {"on_redis_error": "retry"}},
        "limits.on_redis_error: must be 'allow' or 'deny'",
    ),
    (
        {"targets": {}, "limits": {"redis_timeout_ms": 0}},
        "limits.redis_timeout_ms: must be an integer >= 1",
    ),
    (
        {"targets": {}, "limits": {"lease_ttl_ms": -5}},
        "limits.lease_ttl_ms: must be an integer >= 1",
    ),
    (
        {"targets": {}, "limits": {"renew_interval_ms": True}},
        "limits.renew_interval_ms: must be an integer >= 1, got boolean",
    ),
    (
        {"targets": {}, "limits": {"lease_ttl_ms": 1000, "renew_interval_ms": 1000}},
        "limits.renew_interval_ms: must be less than lease_ttl_ms (1000)",
    ),
    (
        {"targets": {}, "limits": {"lease_ttl_ms": 5000}},
        "limits.lease_ttl_ms: must be greater than renew_interval_ms (10000, the default); set both",
    ),
    # --- target shapes
    (
        target({"onwards_key": "k"}),
        "targets.x: must have 'url' or 'providers', or be a list of providers",
    ),
    (target("http://h"), "targets.x: must have 'url' or 'providers', or be a list of providers"),
    (target(None), "targets.x: must have 'url' or 'providers', or be a list of providers"),
    (
        target({}, alias="gpt 4"),
        "targets[\"gpt 4\"]: must have 'url' or 'providers', or be a list of providers",
    ),
    (target([PROVIDER, "http://b"]), "targets.x[1]: must be an object, got string"),
    (target([PROVIDER, {"onwards_key": "k"}]), "targets.x[1].url: required"),
    (target({"providers": {"a": PROVIDER}}), "targets.x.providers: must be a list, got object"),
    (target({"providers": [PROVIDER, None]}), "targets.x.providers[1]: must be an object, got null"),
    # --- pool fields
    (pool(strategy="round_robin"), "targets.x.strategy: must be 'weighted_random' or 'priority'"),
    (pool(strategy=1), "targets.x.strategy: must be a string, got integer"),
    (pool(keys="k"), "targets.x.keys: must be a list, got string"),
    (pool(keys=["a", "b", 3]), "targets.x.keys[2]: must be a string, got integer"),
    (pool(keys=["a", ""]), "targets.x.keys[1]: must be a non-empty string"),
    (pool(sanitize_response="yes"), "targets.x.sanitize_response: must be true or false, got string"),
    (
        pool(routing_rules=[{"match_labels": {}, "action": {"type": "allow"}}]),
        "targets.x.routing_rules[0].action.type: must be 'deny' or 'redirect'",
    ),
    (
        pool(routing_rules=[{"match_labels": {}, "action": {"type": "redirect", "target": "nope"}}]),
        "targets.x.routing_rules[0].action.target: 'nope' is not a configured alias",
    ),
    (pool(routing_rules=[{"action": {"type": "deny"}}]), "targets.x.routing_rules[0].match_labels: required"),
    (pool(routing_rules={}), "targets.x.routing_rules: must be a list, got object"),
    (pool(trusted="yes"), "targets.x.trusted: must be true or false, got string"),
    (pool(open_responses=True), "targets.x.open_responses: must be an object, got boolean"),
    (pool(fallback=True), "targets.x.fallback: must be an object, got boolean"),
    (pool(fallback={"enabled": 1}), "targets.x.fallback.enabled: must be true or false, got integer"),
    (pool(fallback={"on_status": 5}), "targets.x.fallback.on_status: must be a list, got integer"),
    (
        pool(fallback={"on_status": [5, 0]}),
        "targets.x.fallback.on_status[1]: must be an integer from 1 to 599 (5 means 5xx, 50 means 500-509)",
    ),
    (
        pool(fallback={"on_status": [600]}),
        "targets.x.fallback.on_status[0]: must be an integer from 1 to 599 (5 means 5xx, 50 means 500-509)",
    ),
    (
        pool(fallback={"on_status": ["5xx"]}),
        "targets.x.fallback.on_status[0]: must be an integer from 1 to 599 (5 means 5xx, 50 means 500-509)",
    ),
    (
        pool(fallback={"on_status": [True]}),
        "targets.x.fallback.on_status[0]: must be an integer from 1 to 599 (5 means 5xx, 50 means 500-509)",
    ),
    (
        pool(fallback={"on_rate_limit": "true"}),
        "targets.x.fallback.on_rate_limit: must be true or false, got string",
    ),
    (
        pool(fallback={"with_replacement": None, "max_attempts": 0}),
        "targets.x.fallback.max_attempts: must be an integer >= 1",
    ),
    (
        pool(fallback={"with_replacement": 0}),
        "targets.x.fallback.with_replacement: must be true or false, got integer",
    ),
    (pool(fallback={"backoff": 100}), "targets.x.fallback.backoff: must be an object, got integer"),
    (
        pool(fallback={"max_total_backoff_ms": -1}),
        "targets.x.fallback.max_total_backoff_ms: must be an integer >= 0",
    ),
    # --- rate and concurrency limits
    (
        target({"url": "http://h", "rate_limit": {"requests_per_second": 0}}, alias="gpt-4"),
        "targets.gpt-4.rate_limit.requests_per_second: must be a positive number",
    ),
    (
        target({"url": "http://h", "rate_limit": {"requests_per_second": -2.5}}, alias="gpt-4"),
        "targets.gpt-4.rate_limit.requests_per_second: must be a positive number",
    ),
    (
        target({"url": "http://h", "rate_limit": {"requests_per_second": True}}, alias="gpt-4"),
        "targets.gpt-4.rate_limit.requests_per_second: must be a positive number, got boolean",
    ),
    (
        target({"url": "http://h", "rate_limit": {"requests_per_second": "5"}}, alias="gpt-4"),
        "targets.gpt-4.rate_limit.requests_per_second: must be a positive number, got string",
    ),
    (
        target({"url": "http://h", "rate_limit": {"requests_per_second": float("inf")}}, alias="gpt-4"),
        "targets.gpt-4.rate_limit.requests_per_second: must be a positive number, got number",
    ),
    (
        target({"url": "http://h", "rate_limit": {"burst_size": 5}}),
        "targets.x.rate_limit.requests_per_second: required",
    ),
    (
        target({"url": "http://h", "rate_limit": {"requests_per_second": 1, "burst_size": 0}}),
        "targets.x.rate_limit.burst_size: must be an integer >= 1",
    ),
    (
        target({"url": "http://h", "rate_limit": {"requests_per_second": 1, "burst_size": 2.5}}),
        "targets.x.rate_limit.burst_size: must be an integer >= 1, got number",
    ),
    (target({"url": "http://h", "rate_limit": 5}), "targets.x.rate_limit: must be an object, got integer"),
    (
        target({"url": "http://h", "concurrency_limit": {}}),
        "targets.x.concurrency_limit.max_concurrent_requests: required",
    ),
    (
        target({"url": "http://h", "concurrency_limit": {"max_concurrent_requests": -1}}),
        "targets.x.concurrency_limit.max_concurrent_requests: must be an integer >= 0",
    ),
    (
        pool(rate_limit={"requests_per_second": 0}),
        "targets.x.rate_limit.requests_per_second: must be a positive number",
    ),
    (
        provider(concurrency_limit={"max_concurrent_requests": 1.5}),
        P1 + "concurrency_limit.max_concurrent_requests: must be an integer >= 0, got number",
    ),
    (
        target([PROVIDER, {**PROVIDER, "rate_limit": {"requests_per_second": None}}]),
        "targets.x[1].rate_limit.requests_per_second: required",
    ),
    # --- provider URL
    (provider(url="api.openai.com/v1"), P1 + "url: must be an absolute http(s) URL"),
    (provider(url="/v1"), P1 + "url: must be an absolute http(s) URL"),
    (provider(url="ftp://h/"), P1 + "url: must be an absolute http(s) URL"),
    (provider(url="http://"), P1 + "url: must be an absolute http(s) URL"),
    (provider(url=""), P1 + "url: must be an absolute http(s) URL"),
    (
        provider(url="http://h :80/"),
        P1 + "url: must be an absolute http(s) URL without spaces",
    ),
    (
        provider(url="http://h:99999/"),
        P1 + "url: must be an absolute http(s) URL with a valid host and port",
    ),
    (
        provider(url="http://[::1/"),
        P1 + "url: must be an absolute http(s) URL with a valid host and port",
    ),
    (
        provider(url="https://h/v1?api-version=1"),
        P1 + "url: must be an absolute http(s) URL without a query string or fragment",
    ),
    (
        provider(url="https://h/v1#x"),
        P1 + "url: must be an absolute http(s) URL without a query string or fragment",
    ),
    (provider(url=None), P1 + "url: required"),
    (provider(url=5), P1 + "url: must be a string, got integer"),
    (target({"url": ["http://h"]}), "targets.x.url: must be a string, got list"),
    # --- other provider fields
    (
        provider(onwards_key=""),
        P1 + "onwards_key: must be a non-empty string (leave the field out to send no upstream credential)",
    ),
    (provider(onwards_key=123), P1 + "onwards_key: must be a string, got integer"),
    (provider(onwards_model=""), P1 + "onwards_model: must be a non-empty string"),
    (provider(weight=-1), P1 + "weight: must be an integer >= 0"),
    (provider(weight=1.5), P1 + "weight: must be an integer >= 0, got number"),
    (provider(weight=True), P1 + "weight: must be an integer >= 0, got boolean"),
    (
        provider(upstream_auth_header_name="X API Key"),
        P1 + "upstream_auth_header_name: must be a valid HTTP header name",
    ),
    (
        provider(upstream_auth_header_name=""),
        P1 + "upstream_auth_header_name: must be a valid HTTP header name",
    ),
    (
        provider(upstream_auth_header_name="Host"),
        P1 + "upstream_auth_header_name: 'Host' is managed by the gateway",
    ),
    (
        provider(upstream_auth_header_name="Content-Length"),
        P1 + "upstream_auth_header_name: 'Content-Length' is managed by the gateway",
    ),
    (
        provider(onwards_key="k", upstream_auth_header_prefix="Bearer\r\nX-Evil: 1 "),
        P1 + "upstream_auth_header_prefix: must not contain control characters such as CR or LF",
    ),
    (
        provider(onwards_key="sk-abc\n"),
        P1 + "onwards_key: must not contain control characters such as CR or LF",
    ),
    (
        provider(onwards_key="sk-\u2603"),
        P1 + "onwards_key: must only contain Latin-1 characters (HTTP header values cannot carry other text)",
    ),
    (
        provider(upstream_auth_header_prefix=None, upstream_auth_header_name=7),
        P1 + "upstream_auth_header_name: must be a string, got integer",
    ),
    (
        provider(request_timeout_secs=0),
        P1 + "request_timeout_secs: must be a positive number",
    ),
    (
        provider(request_timeout_secs="30s"),
        P1 + "request_timeout_secs: must be a positive number, got string",
    ),
    (
        provider(sanitize_response="true"),
        P1 + "sanitize_response: must be true or false, got string",
    ),
    (provider(trusted=1), P1 + "trusted: must be true or false, got integer"),
    (
        provider(propagate_trace_context="no"),
        P1 + "propagate_trace_context: must be true or false, got string",
    ),
    (
        provider(reasoning_translation=[]),
        P1 + "reasoning_translation: must be an object, got list",
    ),
    (
        provider(open_responses="adapter"),
        P1 + "open_responses: must be an object, got string",
    ),
    # --- response headers (provider and pool)
    (
        provider(response_headers=["X-A"]),
        P1 + "response_headers: must be an object, got list",
    ),
    (
        provider(response_headers={"X A": "1"}),
        P1 + 'response_headers: "X A" is not a valid HTTP header name',
    ),
    (
        provider(response_headers={"": "1"}),
        P1 + 'response_headers: "" is not a valid HTTP header name',
    ),
    (
        provider(response_headers={"Content-Length": "1"}),
        P1 + "response_headers: 'Content-Length' is managed by the gateway and cannot be configured",
    ),
    (
        provider(response_headers={"X-Price": "1", "x-price": "2"}),
        P1 + "response_headers: 'x-price' is given more than once (header names ignore case)",
    ),
    (
        provider(response_headers={"X-Price": 0.0001}),
        P1 + "response_headers.X-Price: must be a string, got number",
    ),
    (
        provider(response_headers={"X-Price": "1\r\nSet-Cookie: a=b"}),
        P1 + "response_headers.X-Price: must not contain control characters such as CR or LF",
    ),
    (
        pool(response_headers={"X-Note": "a\x7fb"}),
        "targets.x.response_headers.X-Note: must not contain control characters such as CR or LF",
    ),
    (
        pool(response_headers={"X-Note": "caf\u00e9 \u2615"}),
        "targets.x.response_headers.X-Note: must only contain Latin-1 characters (HTTP header "
        "values cannot carry other text)",
    ),
    (
        pool(response_headers={"Transfer-Encoding": "chunked"}),
        "targets.x.response_headers: 'Transfer-Encoding' is managed by the gateway and cannot be configured",
    ),
    # --- auth
    ({"targets": {}, "auth": []}, "auth: must be an object, got list"),
    ({"targets": {}, "auth": {"global_keys": "k"}}, "auth.global_keys: must be a list, got string"),
    (
        {"targets": {}, "auth": {"global_keys": ["a", None]}},
        "auth.global_keys[1]: must be a string, got null",
    ),
    ({"targets": {}, "auth": {"global_keys": [""]}}, "auth.global_keys[0]: must be a non-empty string"),
    (
        {"targets": {}, "auth": {"key_definitions": []}},
        "auth.key_definitions: must be an object, got list",
    ),
    (
        {"targets": {}, "auth": {"key_definitions": {"": {"key": "k"}}}},
        "auth.key_definitions: a key definition name must be a non-empty string",
    ),
    (
        {"targets": {}, "auth": {"key_definitions": {"basic": "sk-1"}}},
        "auth.key_definitions.basic: must be an object, got string",
    ),
    (keydef(rate_limit={"requests_per_second": 1}), "auth.key_definitions.basic.key: required"),
    (keydef(key=""), "auth.key_definitions.basic.key: must be a non-empty string"),
    (keydef(key=42), "auth.key_definitions.basic.key: must be a string, got integer"),
    (
        keydef(key="sk-basic\n"),
        "auth.key_definitions.basic.key: must be printable ASCII without leading or trailing spaces "
        "(no bearer token could match it)",
    ),
    (
        keydef(key=" sk-basic"),
        "auth.key_definitions.basic.key: must be printable ASCII without leading or trailing spaces "
        "(no bearer token could match it)",
    ),
    (
        pool(keys=["ok", "cl\u00e9"]),
        "targets.x.keys[1]: must be printable ASCII without leading or trailing spaces "
        "(no bearer token could match it)",
    ),
    (
        {"targets": {}, "auth": {"global_keys": ["tab\tkey"]}},
        "auth.global_keys[0]: must be printable ASCII without leading or trailing spaces "
        "(no bearer token could match it)",
    ),
    (
        keydef(key="k", rate_limit={"requests_per_second": 0}),
        "auth.key_definitions.basic.rate_limit.requests_per_second: must be a positive number",
    ),
    (
        keydef(key="k", concurrency_limit={"max_concurrent_requests": "2"}),
        "auth.key_definitions.basic.concurrency_limit.max_concurrent_requests: must be an integer "
        ">= 0, got string",
    ),
    (keydef(key="k", labels=["a"]), "auth.key_definitions.basic.labels: must be an object, got list"),
    (
        keydef(key="k", labels={"tier": 1}),
        "auth.key_definitions.basic.labels.tier: must be a string, got integer",
    ),
    (
        {"targets": {}, "auth": {"key_definitions": {"a": {"key": "sk-1"}, "b": {"key": "sk-1"}}}},
        "auth.key_definitions.b.key: same token as key definition 'a'; a token can belong to one definition",
    ),
    (
        {
            "auth": {"key_definitions": {"alice": {"key": "bob"}, "bob": {"key": "sk-bob"}}},
            "targets": {"x": {"url": "http://h", "keys": ["ok", "bob"]}},
        },
        "targets.x.keys[1]: is both the name of a key definition and the token of key definition "
        "'alice'; rename one of them",
    ),
    (
        {
            "auth": {
                "global_keys": ["bob"],
                "key_definitions": {"alice": {"key": "bob"}, "bob": {"key": "sk-bob"}},
            },
            "targets": {},
        },
        "auth.global_keys[0]: is both the name of a key definition and the token of key definition "
        "'alice'; rename one of them",
    ),
    (
        target([{"url": "http://h", "keys": [1]}]),
        "targets.x[0].keys[0]: must be a string, got integer",
    ),
    (target([PROVIDER, {"url": "http://h", "keys": "k"}]), "targets.x[1].keys: must be a list, got string"),
]


@pytest.mark.parametrize(("doc", "message"), CASES)
def test_error_message(doc, message):
    assert error_of(doc) == "config.json: " + message


def test_brief_examples_verbatim():
    assert (
        error_of(target({"url": "http://h", "rate_limit": {"requests_per_second": 0}}, alias="gpt-4"))
        == "config.json: targets.gpt-4.rate_limit.requests_per_second: must be a positive number"
    )
    assert (
        error_of(provider(url="not a url"))
        == "config.json: targets.pool-a.providers[1].url: must be an absolute http(s) URL without spaces"
    )
    assert (
        error_of(provider(url="mailto:x@y"))
        == "config.json: targets.pool-a.providers[1].url: must be an absolute http(s) URL"
    )
    assert error_of(keydef()) == "config.json: auth.key_definitions.basic.key: required"


def test_messages_never_quote_secrets():
    secret = "sk-very-secret-123"
    docs = [
        provider(onwards_key=secret + "\n"),
        {"targets": {}, "auth": {"key_definitions": {"a": {"key": secret}, "b": {"key": secret}}}},
        {
            "auth": {"key_definitions": {"alice": {"key": secret}, secret: {"key": "other"}}},
            "targets": {"x": {"url": "http://h", "keys": [secret]}},
        },
    ]
    for doc in docs:
        assert secret not in error_of(doc)


def test_config_error_parts():
    with pytest.raises(ConfigError) as info:
        parse_config(provider(weight=-1), "cfg.json")
    error = info.value
    assert error.origin == "cfg.json"
    assert error.path == "targets.pool-a.providers[1].weight"
    assert error.detail == "must be an integer >= 0"
    assert (
        str(error) == error.message == "cfg.json: targets.pool-a.providers[1].weight: must be an integer >= 0"
    )


def test_config_error_without_origin_or_path_and_multiline_detail():
    assert str(ConfigError("plain")) == "plain"
    assert str(ConfigError("a\nb", origin="o")) == "o: a b"
    assert str(ConfigError("bad", path="p")) == "p: bad"


def test_first_problem_in_file_order_wins():
    # Both targets are wrong; the message is about the first one only.
    doc = {"targets": {"a": {"url": "nope"}, "b": {"url": "http://h", "weight": -1}}}
    assert error_of(doc) == "config.json: targets.a.url: must be an absolute http(s) URL"
