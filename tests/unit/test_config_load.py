"""Reading config bytes and files: JSON errors, file errors and versions."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from onwards.config import ConfigError, content_version, load_config_file, parse_config, parse_config_bytes

GOOD = b'{"targets": {"gpt-4": {"url": "https://api.openai.com", "onwards_key": "sk-x"}}}'


def test_content_version_is_twelve_hex_of_sha256():
    assert content_version(GOOD) == hashlib.sha256(GOOD).hexdigest()[:12]
    assert len(content_version(b"")) == 12
    assert content_version(GOOD) != content_version(GOOD + b" ")


def test_parse_config_bytes_versions_by_content_unless_told():
    snap = parse_config_bytes(GOOD, "config.json")
    assert snap.version == content_version(GOOD)
    assert snap.origin == "config.json"
    assert snap.targets["gpt-4"].providers[0].url == "https://api.openai.com/"
    assert parse_config_bytes(GOOD, "redis:onwards:config", version="v42").version == "v42"


def test_parse_config_versions_decoded_data_by_content_ignoring_key_order():
    a = parse_config({"targets": {"a": {"url": "http://h", "weight": 2}}, "max_body_bytes": 10}, "x")
    b = parse_config({"max_body_bytes": 10, "targets": {"a": {"weight": 2, "url": "http://h"}}}, "x")
    c = parse_config({"targets": {"a": {"url": "http://h", "weight": 3}}, "max_body_bytes": 10}, "x")
    assert a.version == b.version
    assert a.version != c.version
    assert len(a.version) == 12
    assert parse_config({"targets": {}}, "x", version="given").version == "given"


def test_utf8_byte_order_mark_is_accepted():
    snap = parse_config_bytes(b"\xef\xbb\xbf" + GOOD, "config.json")
    assert "gpt-4" in snap.targets
    # The version still fingerprints the bytes as they are.
    assert snap.version == content_version(b"\xef\xbb\xbf" + GOOD)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "config.json: invalid JSON at line 1 column 1: Input is a zero-length, empty document"),
        (b'{"targets": {}', "config.json: invalid JSON at line 1 column 15: unexpected end of data"),
        (
            b'{\n  "targets": {\n    "a": {"url": "http://h",}\n  }\n}',
            "config.json: invalid JSON at line 3 column 28: trailing comma is not allowed",
        ),
        (
            b'{"targets": {}} x',
            "config.json: invalid JSON at line 1 column 17: unexpected content after document",
        ),
        (
            b"\xff\xfe{}",
            "config.json: invalid JSON at line 1 column 1: str is not valid UTF-8: surrogates not allowed",
        ),
    ],
)
def test_broken_json(raw, message):
    with pytest.raises(ConfigError) as info:
        parse_config_bytes(raw, "config.json")
    assert str(info.value) == message


def test_valid_json_with_bad_content_names_the_field():
    with pytest.raises(ConfigError) as info:
        parse_config_bytes(b'{"targets": {"a": {"url": "x"}}}', "config.json")
    assert str(info.value) == "config.json: targets.a.url: must be an absolute http(s) URL"


def test_load_config_file(tmp_path: Path):
    path = tmp_path / "config.json"
    path.write_bytes(GOOD)
    snap = load_config_file(path)
    assert snap.origin == str(path)
    assert snap.version == content_version(GOOD)
    assert list(snap.targets) == ["gpt-4"]
    assert load_config_file(str(path)).version == snap.version


def test_load_config_file_names_the_file_in_content_errors(tmp_path: Path):
    path = tmp_path / "bad.json"
    path.write_text('{"targets": {"a": {"providers": [{"url": "http://h", "weight": -1}]}}}')
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert str(info.value) == f"{path}: targets.a.providers[0].weight: must be an integer >= 0"


def test_missing_file(tmp_path: Path):
    path = tmp_path / "nope.json"
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert str(info.value) == f"Config file '{path}' does not exist"


def test_directory_instead_of_file(tmp_path: Path):
    with pytest.raises(ConfigError) as info:
        load_config_file(tmp_path)
    assert str(info.value) == f"Config file '{tmp_path}' is a directory, not a file"


def test_unreadable_file(tmp_path: Path, monkeypatch):
    path = tmp_path / "secret.json"
    path.write_bytes(GOOD)
    if os.geteuid() != 0:
        path.chmod(0)
    else:  # root reads anything; make the read fail the way it would for anyone else

        def deny(self: Path) -> bytes:
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert str(info.value) == f"Config file '{path}' cannot be read: permission denied"


def test_other_read_failures_are_reported_plainly(tmp_path: Path, monkeypatch):
    def broken(self: Path) -> bytes:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(Path, "read_bytes", broken)
    with pytest.raises(ConfigError) as info:
        load_config_file(tmp_path / "c.json")
    assert str(info.value) == f"Config file '{tmp_path / 'c.json'}' cannot be read: Input/output error"


def test_errors_carry_no_exception_chain(tmp_path: Path):
    with pytest.raises(ConfigError) as info:
        load_config_file(tmp_path / "nope.json")
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ is True
