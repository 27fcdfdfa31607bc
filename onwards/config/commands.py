"""`onwards config ...`: check a config file, push it to Redis, show what is stored.

    onwards config check -f config.json
    onwards config push  -f config.json [--redis-url URL] [--prefix onwards]
    onwards config show  [--redis-url URL] [--prefix onwards] [--body]

A push is validated with the same parser, and gets the same messages, as a gateway
starting from that file; nothing is stored unless the whole file is valid. Every failure
is one line on stderr and exit status 1 (2 for a command line that makes no sense);
never a traceback. `check` is meant for CI, so its status tells three cases apart: 0 for a
valid file, 1 for a valid file with unknown fields (each listed: a misspelt `rate_limt`
would silently mean "no limit"), 2 for an invalid file. `push` stores a file with unknown
fields but lists them on stderr first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from onwards.config.errors import ConfigError
from onwards.config.model import Snapshot
from onwards.config.parse import (
    UNKNOWN_FIELDS,
    content_version,
    list_paths,
    load_config_file,
    parse_config_bytes,
)
from onwards.config.sources.redis import check_prefix, push_config, read_stored
from onwards.limits.keys import DEFAULT_PREFIX, config_key
from onwards.limits.redis.url import SCHEMES_TEXT, RedisURLError, parse_redis_url, redact_url

# `check`'s exit statuses.
CHECK_CLEAN, CHECK_UNKNOWN_FIELDS, CHECK_INVALID = 0, 1, 2

ENV_REDIS_URL = "ONWARDS_REDIS_URL"
ENV_REDIS_PREFIX = "ONWARDS_REDIS_PREFIX"
STDIN = "-"


def run_config_command(argv: list[str]) -> int:
    """Run `onwards config <argv>` and return the exit status.

    `argv` holds the arguments after `onwards config`; a leading "config" is accepted too,
    so the whole command line minus the program name also works.
    """
    if argv and argv[0] == "config":
        argv = argv[1:]
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2), already printed
        return int(exit_.code or 0)
    try:
        return args.handler(args)
    except ConfigError as error:
        _error(str(error))
        return 1
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onwards config",
        description="Validate a config file, store it in Redis for every gateway to follow, or show it.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{check,push,show}")

    check = commands.add_parser("check", help="validate a config file and exit")
    check.add_argument("-f", "--file", required=True, help="the config file ('-' reads stdin)")
    check.set_defaults(handler=_check)

    push = commands.add_parser("push", help="validate a config file, store it in Redis, notify the gateways")
    push.add_argument("-f", "--file", required=True, help="the config file ('-' reads stdin)")
    _redis_arguments(push)
    push.set_defaults(handler=_push)

    show = commands.add_parser("show", help="show the config stored in Redis")
    _redis_arguments(show)
    show.add_argument("--body", action="store_true", help="print only the stored JSON, byte for byte")
    show.set_defaults(handler=_show)
    return parser


def _redis_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis-url",
        default=os.environ.get(ENV_REDIS_URL),
        help=f"Redis URL: {SCHEMES_TEXT} (default: ${ENV_REDIS_URL})",
    )
    parser.add_argument(
        "--prefix",
        "--redis-prefix",
        dest="prefix",
        default=os.environ.get(ENV_REDIS_PREFIX) or DEFAULT_PREFIX,
        help=f"key prefix the gateways use (default: ${ENV_REDIS_PREFIX} or '{DEFAULT_PREFIX}')",
    )


def _redis_url(args: argparse.Namespace) -> str:
    if not args.redis_url:
        raise ConfigError(f"no Redis URL: pass --redis-url or set {ENV_REDIS_URL}")
    check_prefix(args.prefix)
    try:
        parse_redis_url(args.redis_url)
    except RedisURLError as error:
        raise ConfigError(f"invalid Redis URL {redact_url(args.redis_url)}: {error}") from None
    return args.redis_url


def _read_valid(path: str) -> tuple[bytes, Snapshot]:
    """The file's bytes and the Snapshot they make; ConfigError if they are not valid."""
    if path == STDIN:
        raw = sys.stdin.buffer.read()
        return raw, parse_config_bytes(raw, "<stdin>", warn_unknown=False)
    # load_config_file gives the exact messages a starting gateway gives for this file.
    snapshot = load_config_file(path, warn_unknown=False)
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"Config file '{path}' cannot be read: {error.strerror or error}") from None
    if content_version(raw) != snapshot.version:
        raise ConfigError(f"Config file '{path}' changed while it was being read; run the command again")
    return raw, snapshot


def _summary(snapshot: Snapshot) -> str:
    targets = len(snapshot.targets)
    keys = len(snapshot.keys_by_token)
    return f"{targets} target{'s' if targets != 1 else ''}, {keys} key definition{'s' if keys != 1 else ''}"


def _check(args: argparse.Namespace) -> int:
    try:
        _, snapshot = _read_valid(args.file)
    except ConfigError as error:
        _error(str(error))
        return CHECK_INVALID
    unknown = snapshot.unknown_fields
    if unknown:
        for path in unknown:
            print(f"{args.file}: unknown field: {path}")
        count = f"{len(unknown)} unknown field{'s' if len(unknown) != 1 else ''}"
        print(f"{args.file}: valid but {count}, ignored ({_summary(snapshot)}, version {snapshot.version})")
        return CHECK_UNKNOWN_FIELDS
    print(f"{args.file}: valid ({_summary(snapshot)}, version {snapshot.version})")
    return CHECK_CLEAN


def _push(args: argparse.Namespace) -> int:
    redis_url = _redis_url(args)
    raw, snapshot = _read_valid(args.file)
    source = "<stdin>" if args.file == STDIN else args.file
    if snapshot.unknown_fields:
        print(
            f"onwards config: warning: {source}: {UNKNOWN_FIELDS}: {list_paths(snapshot.unknown_fields)}",
            file=sys.stderr,
        )
    result = asyncio.run(push_config(redis_url, args.prefix, raw, source))
    workers = f"{result.receivers} subscribed worker{'s' if result.receivers != 1 else ''}"
    print(
        f"pushed {source} as version {result.version} to {result.key} "
        f"({_summary(snapshot)}, digest {content_version(raw)}, notified {workers})"
    )
    return 0


def _show(args: argparse.Namespace) -> int:
    redis_url = _redis_url(args)
    stored = asyncio.run(read_stored(redis_url, args.prefix))
    if args.body:
        sys.stdout.buffer.write(stored.body)
        sys.stdout.flush()
        return 0
    key = config_key(args.prefix)
    try:
        stored_snapshot = parse_config_bytes(stored.body, key, stored.version, warn_unknown=False)
        status = f"valid ({_summary(stored_snapshot)})"
        if stored_snapshot.unknown_fields:
            status += f"; {UNKNOWN_FIELDS}: {list_paths(stored_snapshot.unknown_fields)}"
    except ConfigError as error:
        # Stored by an older or newer gateway, or written around `push`: say so, still show it.
        status = f"INVALID: {error}"
    pushed_at = (
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stored.pushed_at)) if stored.pushed_at else "unknown"
    )
    print(f"key:       {key}")
    print(f"version:   {stored.version}")
    print(f"pushed_at: {pushed_at}")
    print(f"source:    {stored.source or 'unknown'}")
    print(f"digest:    {stored.digest}")
    print(f"size:      {len(stored.body)} bytes")
    print(f"status:    {status}")
    return 0


def _error(message: str) -> None:
    print(f"onwards config: error: {' '.join(message.splitlines())}", file=sys.stderr)
