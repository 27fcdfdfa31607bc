"""Config hygiene: unknown fields are warned about (load, reload, `config check`), a key given
twice in one JSON object is refused with its path, and a weighted pool whose weights are all 0
is refused. The Rust onwards ignores unknown fields silently, keeps the last duplicate and
panics on all-zero weights; these are the places where it lets a typo change behaviour."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from onwards.config import ConfigError, parse_config, parse_config_bytes
from onwards.config.commands import run_config_command
from onwards.config.duplicates import first_duplicate_key
from onwards.config.parse import content_version
from onwards.config.sources.file import FileFollower
from tests.support.config_recorder import Recorder

TYPO = {"targets": {"m": {"url": "http://a.example", "rate_limt": {"requests_per_second": 1}}}}


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "onwards.config" and r.levelno == logging.WARNING
    ]


# --- unknown fields ---------------------------------------------------------------------------


def test_unknown_field_is_a_warning_naming_its_path_with_a_spelling_hint(caplog):
    snapshot = parse_config(TYPO, "config.json")
    assert snapshot.unknown_fields == ("targets.m.rate_limt (did you mean 'rate_limit'?)",)
    assert warnings(caplog) == [
        "config.json: unknown fields, ignored (check their spelling): "
        "targets.m.rate_limt (did you mean 'rate_limit'?)"
    ]


def test_unknown_fields_everywhere_are_found_with_their_paths():
    doc = {
        "strict_mod": True,
        "auth": {"global_keys": [], "key_definitons": {}},
        "targets": {
            "pool": {
                "providers": [{"url": "http://a", "wieght": 2}],
                "fallback": {"enabled": True, "on_stauts": [5]},
            },
            "legacy": [{"url": "http://a", "x": 1}],
        },
        "http_pool": {"idle": 1},
    }
    unknown = parse_config(doc, "c.json", warn_unknown=False).unknown_fields
    assert unknown == (
        "auth.key_definitons (did you mean 'key_definitions'?)",
        "targets.pool.fallback.on_stauts (did you mean 'on_status'?)",
        "targets.pool.providers[0].wieght (did you mean 'weight'?)",
        "targets.legacy[0].x",
        "http_pool.idle",
        "strict_mod (did you mean 'strict_mode'?)",
    )


def test_a_clean_config_warns_nothing(caplog):
    assert parse_config({"targets": {"m": {"url": "http://a"}}}, "c.json").unknown_fields == ()
    assert warnings(caplog) == []


def test_warn_unknown_false_keeps_the_list_but_logs_nothing(caplog):
    snapshot = parse_config(TYPO, "config.json", warn_unknown=False)
    assert snapshot.unknown_fields
    assert warnings(caplog) == []


async def test_unknown_field_is_warned_again_on_reload(tmp_path: Path, caplog):
    path = tmp_path / "config.json"
    clean = json.dumps({"targets": {"m": {"url": "http://a.example"}}}).encode()
    path.write_bytes(clean)
    recorder = Recorder()
    follower = FileFollower(str(path), content_version(clean), watch=False, recheck_secs=None)
    task = asyncio.create_task(follower.run(recorder.apply, recorder.refuse))
    try:
        path.write_text(json.dumps(TYPO))
        follower.trigger()
        await recorder.wait_for(lambda: recorder.applied, "the reload")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert recorder.applied[0].unknown_fields == ("targets.m.rate_limt (did you mean 'rate_limit'?)",)
    assert any("targets.m.rate_limt" in line for line in warnings(caplog))


# --- onwards config check / push -------------------------------------------------------------


def write(tmp_path: Path, config: object, name: str = "config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(config) if not isinstance(config, str) else config)
    return path


def test_config_check_exits_0_when_clean(tmp_path, capsys):
    path = write(tmp_path, {"targets": {"m": {"url": "http://a"}}})
    assert run_config_command(["check", "-f", str(path)]) == 0
    assert ": valid (" in capsys.readouterr().out


def test_config_check_lists_unknown_fields_and_exits_1(tmp_path, capsys, caplog):
    path = write(tmp_path, TYPO)
    assert run_config_command(["check", "-f", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"{path}: unknown field: targets.m.rate_limt (did you mean 'rate_limit'?)",
        f"{path}: valid but 1 unknown field, ignored (1 target, 0 key definitions, "
        f"version {content_version(path.read_bytes())})",
    ]
    assert err == ""
    assert warnings(caplog) == []  # listed once, on stdout, not logged as well


def test_config_check_exits_2_when_invalid(tmp_path, capsys):
    path = write(tmp_path, '{"targets": {"m": {"url": "http://a", "url": "http://b"}}}')
    assert run_config_command(["check", "-f", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip() == (
        f"onwards config: error: {path}: targets.m.url: given more than once in one JSON object "
        "(JSON would silently keep the last); remove one"
    )


def test_config_check_reads_stdin(monkeypatch, capsys):
    import io
    import sys

    buffer = io.BytesIO(json.dumps(TYPO).encode())
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(buffer))
    assert run_config_command(["check", "-f", "-"]) == 1
    assert "unknown field: targets.m.rate_limt" in capsys.readouterr().out


# --- duplicate keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ('{"targets": {}, "targets": {}}', "targets"),
        ('{"targets": {"a": {"url": "http://a"}, "a": {"url": "http://b"}}}', "targets.a"),
        (
            '{"targets": {"a": {"providers": [{"url": "http://a"}, {"url": "http://b", "weight": 1, '
            '"weight": 2}]}}}',
            "targets.a.providers[1].weight",
        ),
        ('{"targets": {"gpt 4": {"url": "http://a", "keys": [], "keys": []}}}', 'targets["gpt 4"].keys'),
        (
            '{"auth": {"key_definitions": {"u": {"key": "k", "labels": {"t": "a", "t": "b"}}}}, '
            '"targets": {}}',
            "auth.key_definitions.u.labels.t",
        ),
    ],
)
def test_duplicate_key_in_a_json_object_is_refused_with_its_path(body, path):
    with pytest.raises(ConfigError) as caught:
        parse_config_bytes(body.encode(), "c.json")
    assert caught.value.path == path
    assert "given more than once" in str(caught.value)


def test_the_same_name_in_different_objects_is_not_a_duplicate():
    body = b'{"targets": {"a": {"url": "http://a", "keys": ["x"]}, "b": {"url": "http://b", "keys": ["x"]}}}'
    assert set(parse_config_bytes(body, "c.json").targets) == {"a", "b"}
    assert first_duplicate_key(body) is None


def test_a_duplicate_in_an_unknown_field_is_refused_too():
    body = b'{"targets": {}, "notes": {"a": 1, "a": 2}}'
    with pytest.raises(ConfigError, match=r"notes\.a: given more than once"):
        parse_config_bytes(body, "c.json")


def test_broken_json_still_gets_the_orjson_position_message():
    with pytest.raises(ConfigError, match="invalid JSON at line 1 column"):
        parse_config_bytes(b'{"targets": {}, "targets": ', "c.json")


# --- all-zero weights ---------------------------------------------------------------------------


def test_weighted_pool_with_all_weights_zero_is_refused():
    doc = {
        "targets": {"m": {"providers": [{"url": "http://a", "weight": 0}, {"url": "http://b", "weight": 0}]}}
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(doc, "c.json")
    assert caught.value.path == "targets.m.providers"
    assert "every provider has weight 0" in caught.value.detail


def test_single_provider_and_legacy_list_with_weight_zero_are_refused():
    with pytest.raises(ConfigError, match=r"targets\.m\.weight: every provider has weight 0"):
        parse_config({"targets": {"m": {"url": "http://a", "weight": 0}}}, "c.json")
    with pytest.raises(ConfigError, match=r"targets\.m: every provider has weight 0"):
        parse_config({"targets": {"m": [{"url": "http://a", "weight": 0}]}}, "c.json")


def test_some_zero_weights_priority_pools_and_empty_pools_are_accepted():
    ok = {
        "some": {"providers": [{"url": "http://a", "weight": 0}, {"url": "http://b"}]},
        "prio": {"strategy": "priority", "providers": [{"url": "http://a", "weight": 0}]},
        "empty": {"providers": []},
    }
    assert set(parse_config({"targets": ok}, "c.json").targets) == set(ok)


def test_config_push_stores_a_config_with_unknown_fields_but_lists_them(tmp_path, capsys, monkeypatch):
    import fakeredis
    from fakeredis import aioredis as fake_aioredis

    from onwards.config.sources import redis as redis_source

    server = fakeredis.FakeServer()
    monkeypatch.setattr(
        redis_source, "connect_redis", lambda url, *, client_name=None: fake_aioredis.FakeRedis(server=server)
    )
    monkeypatch.delenv("ONWARDS_REDIS_PREFIX", raising=False)
    path = write(tmp_path, TYPO)
    assert run_config_command(["push", "-f", str(path), "--redis-url", "redis://fake:6379/0"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"pushed {path} as version v1-")
    assert err.strip() == (
        f"onwards config: warning: {path}: unknown fields, ignored (check their spelling): "
        "targets.m.rate_limt (did you mean 'rate_limit'?)"
    )
    assert run_config_command(["show", "--redis-url", "redis://fake:6379/0"]) == 0
    assert "unknown fields, ignored (check their spelling): targets.m.rate_limt" in capsys.readouterr().out
