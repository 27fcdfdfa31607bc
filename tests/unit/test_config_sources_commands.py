"""`onwards config check|push|show`: exit codes and what lands on stdout and stderr."""

from __future__ import annotations

import asyncio
import io
import json
import re
from pathlib import Path

import fakeredis
import pytest
from fakeredis import aioredis as fake_aioredis

from onwards.config.commands import run_config_command
from onwards.config.parse import content_version
from onwards.config.sources import redis as redis_source
from onwards.config.sources.redis import config_key, read_stored

URL = "redis://fake:6379/0"  # never dialled: connect_redis is replaced by fakeredis
DEAD_URL = "redis://127.0.0.1:1/0"  # a real client, a port nothing listens on


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> fakeredis.FakeServer:
    server = fakeredis.FakeServer()

    def connect(redis_url: str, *, client_name: str | None = None) -> fake_aioredis.FakeRedis:
        return fake_aioredis.FakeRedis(server=server)

    monkeypatch.setattr(redis_source, "connect_redis", connect)
    return server


@pytest.fixture(autouse=True)
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ONWARDS_REDIS_URL", raising=False)
    monkeypatch.delenv("ONWARDS_REDIS_PREFIX", raising=False)


def write(tmp_path: Path, config: object, name: str = "config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(config))
    return path


GOOD = {"targets": {"m": {"url": "http://a.example"}}}
BAD_FIELD = {"targets": {"m": {"url": "http://a.example", "rate_limit": {"requests_per_second": 0}}}}


def stored(prefix: str = "onwards"):
    return asyncio.run(read_stored(URL, prefix))


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    assert "Traceback" not in err
    return lines[0]


def test_push_stores_the_file_and_prints_the_version(tmp_path, server, capsys) -> None:
    path = write(tmp_path, GOOD)
    assert run_config_command(["push", "-f", str(path), "--redis-url", URL]) == 0
    out, err = capsys.readouterr()
    version = f"v1-{content_version(path.read_bytes())}"
    assert f"version {version}" in out
    assert config_key("onwards") in out
    assert err == ""

    record = stored()
    assert record.version == version
    assert record.body == path.read_bytes()
    assert record.source == str(path)

    assert run_config_command(["push", "-f", str(path), "--redis-url", URL]) == 0
    assert re.search(r"version v2-[0-9a-f]{12}\b", capsys.readouterr().out)


def test_push_of_an_invalid_file_stores_nothing(tmp_path, server, capsys) -> None:
    path = write(tmp_path, BAD_FIELD)
    assert run_config_command(["push", "-f", str(path), "--redis-url", URL]) == 1
    out, err = capsys.readouterr()
    line = one_error_line(err)
    # The same message a gateway starting from this file prints.
    assert f"{path}: targets.m.rate_limit.requests_per_second:" in line
    assert out == ""
    assert run_config_command(["show", "--redis-url", URL]) == 1
    assert "no config stored under onwards:{onwards}:config" in capsys.readouterr().err


def test_push_of_broken_json(tmp_path, server, capsys) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"targets": {')
    assert run_config_command(["push", "-f", str(path), "--redis-url", URL]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert str(path) in line and "invalid JSON" in line


def test_push_of_a_missing_file(tmp_path, server, capsys) -> None:
    missing = tmp_path / "nope.json"
    assert run_config_command(["push", "-f", str(missing), "--redis-url", URL]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"Config file '{missing}' does not exist" in line


def test_push_to_unreachable_redis(tmp_path, capsys) -> None:
    path = write(tmp_path, GOOD)
    url = "redis://admin:hunter2@127.0.0.1:1/0"
    assert run_config_command(["push", "-f", str(path), "--redis-url", url]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "cannot reach Redis at redis://admin:***@127.0.0.1:1/0" in line
    assert "hunter2" not in line


def test_show_on_unreachable_redis(capsys) -> None:
    assert run_config_command(["show", "--redis-url", DEAD_URL]) == 1
    assert "cannot reach Redis" in one_error_line(capsys.readouterr().err)


def test_push_validates_before_it_connects(tmp_path, capsys) -> None:
    # An invalid file is reported as such even when Redis is down: the file is the problem to fix.
    path = write(tmp_path, BAD_FIELD)
    assert run_config_command(["push", "-f", str(path), "--redis-url", DEAD_URL]) == 1
    assert "requests_per_second" in one_error_line(capsys.readouterr().err)


def test_show_prints_the_metadata(tmp_path, server, capsys) -> None:
    path = write(tmp_path, GOOD)
    run_config_command(["push", "-f", str(path), "--redis-url", URL])
    capsys.readouterr()
    assert run_config_command(["show", "--redis-url", URL]) == 0
    out = capsys.readouterr().out
    assert f"version:   v1-{content_version(path.read_bytes())}" in out
    assert f"source:    {path}" in out
    assert f"size:      {len(path.read_bytes())} bytes" in out
    assert "status:    valid (1 target, 0 key definitions)" in out
    assert re.search(r"pushed_at: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", out)


def test_show_body_prints_the_stored_bytes(tmp_path, server, capsys) -> None:
    path = tmp_path / "config.json"
    raw = b'{"targets":  {"m": {"url": "http://a.example"}}}\n'  # odd spacing survives byte for byte
    path.write_bytes(raw)
    run_config_command(["push", "-f", str(path), "--redis-url", URL])
    capsys.readouterr()
    buffer = io.BytesIO()

    class Stdout:
        def __init__(self) -> None:
            self.buffer = buffer

        def flush(self) -> None:
            pass

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdout", Stdout())
        assert run_config_command(["show", "--body", "--redis-url", URL]) == 0
    assert buffer.getvalue() == raw


def test_show_flags_a_stored_body_that_is_not_valid(server, capsys) -> None:
    client = fake_aioredis.FakeRedis(server=server)
    asyncio.run(client.hset(config_key("onwards"), mapping={"version": 4, "body": b"{not json"}))
    assert run_config_command(["show", "--redis-url", URL]) == 0
    out = capsys.readouterr().out
    assert "status:    INVALID: onwards:{onwards}:config: invalid JSON" in out


def test_prefix_flag_and_environment(tmp_path, server, capsys, monkeypatch) -> None:
    path = write(tmp_path, GOOD)
    assert run_config_command(["push", "-f", str(path), "--redis-url", URL, "--prefix", "team-a"]) == 0
    assert "team-a:{team-a}:config" in capsys.readouterr().out
    assert stored("team-a").number == 1

    monkeypatch.setenv("ONWARDS_REDIS_URL", URL)
    monkeypatch.setenv("ONWARDS_REDIS_PREFIX", "team-b")
    assert run_config_command(["push", "-f", str(path)]) == 0
    assert "team-b:{team-b}:config" in capsys.readouterr().out
    assert stored("team-b").number == 1
    assert stored("team-a").number == 1

    # A flag wins over the environment.
    assert run_config_command(["show", "--prefix", "team-a"]) == 0
    assert "key:       team-a:{team-a}:config" in capsys.readouterr().out


def test_stdin(tmp_path, server, capsys, monkeypatch) -> None:
    raw = json.dumps(GOOD).encode()

    class Stdin:
        buffer = io.BytesIO(raw)

    monkeypatch.setattr("sys.stdin", Stdin())
    assert run_config_command(["push", "-f", "-", "--redis-url", URL]) == 0
    assert "pushed <stdin> as version v1-" in capsys.readouterr().out
    assert stored().body == raw


def test_missing_redis_url(tmp_path, capsys) -> None:
    path = write(tmp_path, GOOD)
    assert run_config_command(["push", "-f", str(path)]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "no Redis URL: pass --redis-url or set ONWARDS_REDIS_URL" in line


def test_bad_prefix(tmp_path, capsys) -> None:
    path = write(tmp_path, GOOD)
    assert run_config_command(["push", "-f", str(path), "--redis-url", URL, "--prefix", "a{b}"]) == 1
    assert "prefix" in one_error_line(capsys.readouterr().err)


def test_check(tmp_path, capsys) -> None:
    good = write(tmp_path, GOOD)
    assert run_config_command(["check", "-f", str(good)]) == 0
    assert f"{good}: valid (1 target, 0 key definitions, version {content_version(good.read_bytes())})" in (
        capsys.readouterr().out
    )
    bad = write(tmp_path, BAD_FIELD, "bad.json")
    assert run_config_command(["check", "-f", str(bad)]) == 2
    assert "requests_per_second" in one_error_line(capsys.readouterr().err)


def test_usage_errors_and_help(capsys) -> None:
    assert run_config_command([]) == 2
    assert run_config_command(["frobnicate"]) == 2
    assert run_config_command(["push"]) == 2  # -f is required
    capsys.readouterr()
    assert run_config_command(["--help"]) == 0
    assert "push" in capsys.readouterr().out


def test_leading_config_word_is_accepted(tmp_path, capsys) -> None:
    good = write(tmp_path, GOOD)
    assert run_config_command(["config", "check", "-f", str(good)]) == 0
