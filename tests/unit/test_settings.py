"""Settings are declared once (onwards/settings.py): the CLI parser and the README table come from there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from onwards.cli import build_parser, settings_from_args
from onwards.settings import Settings, env_name, flag_table, options

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_table() -> str:
    text = README.read_text()
    match = re.search(r"<!-- flags:[^\n]*-->\n(.*?)\n<!-- /flags -->", text, re.S)
    assert match, "README.md has no generated flag table between <!-- flags --> markers"
    return match.group(1)


def test_readme_flag_table_is_the_generated_one():
    # Regenerate with: python -m onwards.settings
    assert _readme_table() == flag_table()


def test_every_setting_with_a_flag_has_its_env_variable_in_the_help(monkeypatch):
    for f, _ in options():
        monkeypatch.delenv(env_name(f.name), raising=False)
    help_text = build_parser().format_help()
    for f, option in options():
        assert option.long in help_text
        assert env_name(f.name) in help_text.replace("\n", " ").replace("  ", "")


def test_defaults_are_the_declared_ones(monkeypatch):
    for f, _ in options():
        monkeypatch.delenv(env_name(f.name), raising=False)
    parser = build_parser()
    settings = settings_from_args(parser.parse_args(["-f", "config.json"]), parser)
    assert settings.port == 3000 and settings.workers == 1 and settings.log_format == "pretty"
    assert settings.gc_tuning is True  # the CLI's default, unlike an embedded Settings()
    assert Settings().gc_tuning is False
    assert settings.targets is not None and Path(settings.targets).is_absolute()


def test_environment_sets_and_flag_wins(monkeypatch):
    monkeypatch.setenv("ONWARDS_PORT", "4100")
    monkeypatch.setenv("ONWARDS_LOG_FORMAT", "json")
    parser = build_parser()
    settings = settings_from_args(parser.parse_args(["-f", "c.json", "-p", "4200"]), parser)
    assert (settings.port, settings.log_format) == (4200, "json")


@pytest.mark.parametrize(
    ("env", "value", "words"),
    [
        ("ONWARDS_LOG_LEVEL", "loud", "expected one of debug"),
        ("ONWARDS_PORT", "eighty", "expected a number"),
        ("ONWARDS_WORKERS", "0", "must be at least 1"),
        ("ONWARDS_METRICS", "maybe", "expected true or false"),
    ],
)
def test_a_bad_environment_value_is_one_line_and_exit_2(env, value, words, monkeypatch, capsys):
    monkeypatch.setenv(env, value)
    with pytest.raises(SystemExit) as stopped:
        build_parser()
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert env in err and words in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--log-level", "loud"], "expected one of"),
        (["--workers", "0"], "must be at least 1"),
        (["--port", "-1"], "must be at least 0"),
        (["-p", "70000"], "must be at most 65535"),
        (["--pool-idle-timeout-secs", "soon"], "expected a number"),
    ],
)
def test_a_bad_flag_is_one_line_and_exit_2(args, words, capsys):
    parser = build_parser()
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args(["-f", "c.json", *args])
    assert stopped.value.code == 2
    assert words in capsys.readouterr().err
