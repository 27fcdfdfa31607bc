"""The one Redis URL parser and redaction: every form the gateway accepts, and the ones it refuses."""

from __future__ import annotations

import re

import pytest

from onwards.limits.redis.url import RedisURLError, parse_redis_url, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", {"nodes": (("127.0.0.1", 6379),), "db": 0, "password": None}),
        ("redis://:s%40cret@h:7000/3", {"nodes": (("h", 7000),), "db": 3, "password": "s@cret"}),
        ("redis://user:pw@h", {"nodes": (("h", 6379),), "db": 0, "username": "user", "password": "pw"}),
        ("redis://h/?db=5", {"db": 5}),
        ("redis://[::1]:6380", {"nodes": (("::1", 6380),)}),
        ("unix:///run/redis.sock?db=2", {"path": "/run/redis.sock", "db": 2}),
        ("rediss://h:6380", {"tls": True, "topology": "single"}),
        (
            "redis+sentinel://:pw@s1:26379,s2,[::1]:26380/mymaster/2",
            {
                "topology": "sentinel",
                "nodes": (("s1", 26379), ("s2", 26379), ("::1", 26380)),
                "service": "mymaster",
                "db": 2,
                "password": "pw",
            },
        ),
        ("rediss+sentinel://s1/m?sentinel_password=x", {"tls": True, "sentinel_password": "x"}),
        (
            "redis+cluster://u:p@n1:7000,n2:7001",
            {"topology": "cluster", "nodes": (("n1", 7000), ("n2", 7001)), "db": 0, "username": "u"},
        ),
        ("rediss+cluster://n1:7000/0", {"topology": "cluster", "tls": True}),
    ],
)
def test_accepted_forms(url: str, expected: dict) -> None:
    target = parse_redis_url(url)
    for key, value in expected.items():
        assert getattr(target, key) == value, key


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h", "unsupported Redis URL scheme 'http'"),
        ("localhost:6379", "not a Redis URL"),
        ("redis://a:1,b:2", "node list needs redis+sentinel:// or redis+cluster://"),
        ("redis+cluster://n1:7000/1", "Redis Cluster has only db 0"),
        ("redis+cluster://n1:7000,,n2:7001", "empty entry in the node list"),
        ("redis+sentinel://s1:26379", "needs the master's service name"),
        ("redis+sentinel://s1:26379/m/1/2", "/service_name[/db]"),
        ("redis://h:notaport", "bad port 'notaport'"),
        ("redis://h:70000", "bad port"),
        ("redis://h/x", "db in a Redis URL must be a number"),
        ("redis://::1:6379", "IPv6 addresses in [brackets]"),
        ("redis+cluster://:pw@n1:7000/4", "db 4"),
    ],
)
def test_refused_forms_name_the_problem_in_one_line(url: str, message: str) -> None:
    with pytest.raises(RedisURLError, match=re.escape(message)) as caught:
        parse_redis_url(url)
    assert "\n" not in str(caught.value)
    assert ":pw@" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:pw@10.0.0.1:6379", "redis://:***@10.0.0.1:6379"),
        ("rediss://user:pw@cache.internal/2", "rediss://user:***@cache.internal/2"),
        ("redis://user@h", "redis://user@h"),
        (
            "redis+sentinel://:pw@s1,s2/m?sentinel_password=x&a=1",
            "redis+sentinel://:***@s1,s2/m?sentinel_password=***&a=1",
        ),
        ("redis://h/?password=x", "redis://h/?password=***"),
        ("no url at all", "<unparseable Redis URL>"),
    ],
)
def test_redaction_hides_every_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown
