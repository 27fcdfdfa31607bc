"""JSON config in the Rust onwards format -> the immutable Snapshot the request path reads.

Everything is checked here, once, so that a request never meets a config surprise: types,
ranges, URLs, header names and values, key references and `${VAR}` references. The first
problem found stops the load with a ConfigError whose message names the file and the field
path (`config.json: targets.gpt-4.rate_limit.requests_per_second: must be a positive number`).
Values are never quoted back in messages, because many of them are credentials.

Fields nobody knows are accepted (a config written for the Rust gateway must load
unchanged) but listed in one WARNING per load on the "onwards.config" logger, with a
spelling hint where one is close, because a typo such as `rate_limt` would otherwise
silently mean "no limit"; `onwards config check` lists them and exits 1. Fields the Rust
gateway knows but this one does not act on are listed at debug level. A key given twice in
one JSON object, and a weighted pool whose weights are all 0, are refused.

The reference for every field is docs/configuration.md.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Literal, NoReturn
from urllib.parse import urlsplit, urlunsplit

import orjson

from onwards.config import open_responses
from onwards.config.duplicates import first_duplicate_key
from onwards.config.env import EnvReferenceError, expand_env
from onwards.config.errors import ConfigError
from onwards.config.model import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_STREAM_IDLE_TIMEOUT_SECS,
    Backoff,
    Check,
    ConcurrencyCheck,
    FallbackSpec,
    HttpPool,
    KeyDefinition,
    LimitsSettings,
    MockSpec,
    Provider,
    ProviderFormat,
    RateCheck,
    RoutingRule,
    Scope,
    Snapshot,
    Strategy,
    Target,
    TokenCheck,
)
from onwards.config.open_responses import OpenResponsesSpec
from onwards.config.reasoning import read_translation
from onwards.config.rules import check_redirects, read_rules
from onwards.edge.cors import parse_cors
from onwards.edge.egress import check_proxy_url
from onwards.limits.keys import settings_problems

log = logging.getLogger("onwards.config")

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
STRATEGIES: tuple[Strategy, ...] = ("weighted_random", "priority")
# The fields that give a scope its own limiter.
_LIMIT_FIELDS = ("rate_limit", "concurrency_limit", "token_limit")

# RFC 9110 token characters: what a header name may be made of.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Headers that describe the message framing; setting them from config would corrupt responses.
_FRAMING_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer"}
)
# Names that print unquoted in field paths; anything else is shown as ["..."] so the path stays readable.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_\-.:/@+]+")
# How many field paths one log line lists before summarising.
_MAX_LISTED = 50
UNKNOWN_FIELDS = "unknown fields, ignored (check their spelling)"


def list_paths(paths: list[str] | tuple[str, ...]) -> str:
    """Field paths for one log line: the first _MAX_LISTED, then a count."""
    listed = ", ".join(paths[:_MAX_LISTED])
    more = f" and {len(paths) - _MAX_LISTED} more" if len(paths) > _MAX_LISTED else ""
    return listed + more


def content_version(raw: bytes) -> str:
    """A short, stable fingerprint of a config's bytes (12 hex characters of sha256)."""
    return hashlib.sha256(raw).hexdigest()[:12]


def load_config_file(path: str | os.PathLike[str], *, warn_unknown: bool = True) -> Snapshot:
    """Read, decode and validate a config file; its name is the origin in messages."""
    name = os.fspath(path)
    try:
        raw = Path(name).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"Config file '{name}' does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"Config file '{name}' is a directory, not a file") from None
    except PermissionError:
        raise ConfigError(f"Config file '{name}' cannot be read: permission denied") from None
    except OSError as exc:
        raise ConfigError(f"Config file '{name}' cannot be read: {exc.strerror or exc}") from None
    return parse_config_bytes(raw, name, warn_unknown=warn_unknown)


def parse_config_bytes(
    raw: bytes, origin: str, version: str | None = None, *, warn_unknown: bool = True
) -> Snapshot:
    """Decode JSON bytes and validate them; the version defaults to content_version(raw)."""
    # Some editors save JSON with a UTF-8 byte order mark; it carries no meaning, so skip it.
    body = raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", origin=origin
        ) from None
    repeated = first_duplicate_key(body)
    if repeated is not None:
        path = ""
        for part in repeated:
            path = _item(path, part) if isinstance(part, int) else _child(path, part)
        raise ConfigError(
            "given more than once in one JSON object (JSON would silently keep the last); remove one",
            origin=origin,
            path=path,
        )
    snapshot = parse_config(
        data, origin, content_version(raw) if version is None else version, warn_unknown=warn_unknown
    )
    return replace(snapshot, raw=raw)


def parse_config(
    data: object, origin: str, version: str | None = None, *, warn_unknown: bool = True
) -> Snapshot:
    """Validate already-decoded JSON and build the Snapshot.

    `${VAR}` references are filled from os.environ as they are read. Without a version,
    the version is a fingerprint of the data itself (sorted keys, so order does not matter).
    Unknown fields are logged as one WARNING unless `warn_unknown` is False (a caller that
    reports `Snapshot.unknown_fields` itself); they are in the Snapshot either way.
    """
    loader = _Loader(origin, os.environ)
    snapshot = loader.load(data)
    if version is None:
        canonical = orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=repr)
        version = content_version(canonical)
    loader.log_unused(warn_unknown)
    return replace(snapshot, version=version, origin=origin, unknown_fields=tuple(loader.unknown))


# --------------------------------------------------------------------------------------------
# Paths and value checks


def _child(path: str, name: str) -> str:
    name = str(name)  # JSON keys are strings; a Python caller's data might not be
    if not _PLAIN_NAME.fullmatch(name):
        return f"{path}[{orjson.dumps(name).decode()}]"
    return f"{path}.{name}" if path else name


def _item(path: str, index: int) -> str:
    return f"{path}[{index}]"


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_int(value: object) -> bool:
    # JSON booleans decode to Python bools, which are ints; a config's `true` is never a count.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _header_value_problem(value: str) -> str | None:
    for ch in value:
        code = ord(ch)
        if (code < 0x20 and ch != "\t") or code == 0x7F:
            return "must not contain control characters such as CR or LF"
        if code > 0xFF:
            return "must only contain Latin-1 characters (HTTP header values cannot carry other text)"
    return None


def _token_problem(token: str) -> str | None:
    # The request path reads the bearer token as trimmed ASCII; any other token could never match.
    if token != token.strip() or any(not 0x20 <= ord(ch) <= 0x7E for ch in token):
        return "must be printable ASCII without leading or trailing spaces (no bearer token could match it)"
    return None


class _Loader:
    """One load: the origin for messages, the environment for `${VAR}`, and the unused fields seen."""

    def __init__(self, origin: str, environ: Mapping[str, str]) -> None:
        self.origin = origin
        self.environ = environ
        self.unknown: list[str] = []
        self.ignored: list[str] = []

    def fail(self, path: str, detail: str) -> NoReturn:
        raise ConfigError(detail, origin=self.origin, path=path or None)

    def log_unused(self, warn_unknown: bool) -> None:
        for paths, what, level in (
            (self.unknown if warn_unknown else [], UNKNOWN_FIELDS, logging.WARNING),
            (self.ignored, "fields this gateway accepts but does not use", logging.DEBUG),
        ):
            if paths and log.isEnabledFor(level):
                log.log(level, "%s: %s: %s", self.origin, what, list_paths(paths))

    # -- typed values ------------------------------------------------------------------------

    def string(self, value: object, path: str, *, non_empty: bool = False, hint: str = "") -> str:
        if not isinstance(value, str):
            self.fail(path, f"must be a string, got {_type_name(value)}")
        try:
            text = expand_env(value, self.environ)
        except EnvReferenceError as exc:
            self.fail(path, str(exc))
        if non_empty and not text:
            self.fail(path, f"must be a non-empty string{hint}")
        return text

    def boolean(self, value: object, path: str) -> bool:
        if not isinstance(value, bool):
            self.fail(path, f"must be true or false, got {_type_name(value)}")
        return value

    def integer(self, value: object, path: str, *, minimum: int) -> int:
        if not _is_int(value):
            self.fail(path, f"must be an integer >= {minimum}, got {_type_name(value)}")
        if value < minimum:  # type: ignore[operator]
            self.fail(path, f"must be an integer >= {minimum}")
        return value  # type: ignore[return-value]

    def positive_number(self, value: object, path: str) -> float:
        if not _is_number(value):
            self.fail(path, f"must be a positive number, got {_type_name(value)}")
        if value <= 0:  # type: ignore[operator]
            self.fail(path, "must be a positive number")
        return float(value)  # type: ignore[arg-type]

    def fields(self, value: object, path: str) -> _Fields:
        if not isinstance(value, dict):
            self.fail(path, f"must be an object, got {_type_name(value)}")
        return _Fields(self, value, path)

    def array(self, value: object, path: str) -> list[object]:
        if not isinstance(value, list | tuple):
            self.fail(path, f"must be a list, got {_type_name(value)}")
        return list(value)

    # -- the schema --------------------------------------------------------------------------

    def load(self, data: object) -> Snapshot:
        if not isinstance(data, dict):
            self.fail("", f"the config must be a JSON object, got {_type_name(data)}")
        top = _Fields(self, data, "")

        strict_mode = top.optional_bool("strict_mode", False)

        keys = _KeyBook(self)
        auth = top.optional_object("auth")
        if auth is not None:
            keys.read(auth)

        targets_path = top.at("targets")
        targets_data = top.raw("targets")
        if targets_data is None:
            self.fail(targets_path, "required")
        if not isinstance(targets_data, dict):
            self.fail(targets_path, f"must be an object, got {_type_name(targets_data)}")
        targets: dict[str, Target] = {}
        for alias, spec in targets_data.items():
            if not isinstance(alias, str) or not alias:
                self.fail(targets_path, "an alias must be a non-empty string")
            targets[alias] = _TargetReader(self, keys, alias, _child(targets_path, alias)).read(spec)
        check_redirects(self, targets, targets_path)
        if strict_mode:
            for alias, target in targets.items():
                for provider in target.providers:
                    if provider.format == "anthropic":
                        # The strict router forwards typed Chat Completions routes as they are.
                        self.fail(
                            _child(targets_path, alias),
                            f"provider {provider.index} has format 'anthropic', which strict_mode does not "
                            "support (its /v1/messages takes a Chat Completions body); use format 'openai' "
                            "or turn strict_mode off",
                        )

        http_pool = HttpPool()
        pool = top.optional_object("http_pool")
        if pool is not None:
            http_pool = HttpPool(
                max_idle_per_host=pool.optional_int("max_idle_per_host", 100, minimum=1),
                idle_timeout_secs=pool.optional_positive("idle_timeout_secs", 90.0),
            )
            pool.finish()

        limits = LimitsSettings()
        lim = top.optional_object("limits")
        if lim is not None:
            limits = self.limits(lim)

        cors_value = top.raw("cors")
        cors = None if cors_value is None else parse_cors(cors_value, top.at("cors"), self.fail)

        max_body = top.raw("max_body_bytes")
        max_body_bytes = (
            DEFAULT_MAX_BODY_BYTES
            if max_body is None
            else self.integer(max_body, top.at("max_body_bytes"), minimum=1)
        )
        top.finish()

        return Snapshot(
            targets=targets,
            keys_by_token=keys.by_token,
            http_pool=http_pool,
            limits=limits,
            max_body_bytes=max_body_bytes,
            strict_mode=strict_mode,
            cors=cors,
        )

    def limits(self, f: _Fields) -> LimitsSettings:
        default = LimitsSettings()
        policy = f.optional_string("on_redis_error", default.on_redis_error)
        timeout = f.optional_int("redis_timeout_ms", default.redis_timeout_ms, minimum=1)
        ttl = f.optional_int("lease_ttl_ms", default.lease_ttl_ms, minimum=1)
        renew = f.optional_int("renew_interval_ms", default.renew_interval_ms, minimum=1)
        # The rules live once, with the limiter (onwards/limits/keys.py); here they get field paths.
        for field, message in settings_problems(policy, timeout, ttl, renew):
            if field == "renew_interval_ms" and not f.has("renew_interval_ms"):
                field, message = (
                    "lease_ttl_ms",
                    f"must be greater than renew_interval_ms ({renew}, the default); set both",
                )
            self.fail(f.at(field), message)
        f.finish()
        return LimitsSettings(
            on_redis_error=policy,  # type: ignore[arg-type]
            redis_timeout_ms=timeout,
            lease_ttl_ms=ttl,
            renew_interval_ms=renew,
        )

    def checks(self, f: _Fields, scope: Scope, limiter_id: str) -> tuple[Check, ...]:
        """The `rate_limit` / `concurrency_limit` / `token_limit` of one scope, in that order."""
        out: list[Check] = []
        rate = f.optional_object("rate_limit")
        if rate is not None:
            rps = self.positive_number(rate.required("requests_per_second"), rate.at("requests_per_second"))
            burst_value = rate.raw("burst_size")
            burst = (
                math.ceil(rps)
                if burst_value is None
                else self.integer(burst_value, rate.at("burst_size"), minimum=1)
            )
            rate.finish()
            out.append(RateCheck(scope=scope, limiter_id=limiter_id, rate=rps, burst=burst))
        conc = f.optional_object("concurrency_limit")
        if conc is not None:
            limit = self.integer(
                conc.required("max_concurrent_requests"), conc.at("max_concurrent_requests"), minimum=0
            )
            conc.finish()
            out.append(ConcurrencyCheck(scope=scope, limiter_id=limiter_id, limit=limit))
        tokens = f.optional_object("token_limit")
        if tokens is not None:
            per_minute = self.integer(
                tokens.required("tokens_per_minute"), tokens.at("tokens_per_minute"), minimum=1
            )
            burst_value = tokens.raw("burst_tokens")
            burst = (
                per_minute
                if burst_value is None
                else self.integer(burst_value, tokens.at("burst_tokens"), minimum=1)
            )
            tokens.finish()
            out.append(
                TokenCheck(
                    scope=scope,
                    limiter_id=limiter_id,
                    rate=per_minute / 60,
                    burst=burst,
                    per_minute=per_minute,
                )
            )
        return tuple(out)

    def headers(self, f: _Fields, name: str) -> tuple[tuple[str, str], ...]:
        """A `response_headers` object: legal names, values safe to put on the wire."""
        value = f.raw(name)
        if value is None:
            return ()
        path = f.at(name)
        headers = self.fields(value, path)
        out: list[tuple[str, str]] = []
        seen: set[str] = set()
        for header, raw in headers.items():
            if not _HEADER_NAME.fullmatch(header):
                self.fail(path, f"{orjson.dumps(header).decode()} is not a valid HTTP header name")
            lowered = header.lower()
            if lowered in _FRAMING_HEADERS:
                self.fail(path, f"'{header}' is managed by the gateway and cannot be configured")
            if lowered in seen:
                self.fail(path, f"'{header}' is given more than once (header names ignore case)")
            seen.add(lowered)
            text = self.string(raw, _child(path, header))
            problem = _header_value_problem(text)
            if problem:
                self.fail(_child(path, header), problem)
            out.append((header, text))
        return tuple(out)


class _Fields:
    """One JSON object being read: getters that know each field's path, and a record of
    which fields were read so the rest can be reported as unknown."""

    def __init__(self, loader: _Loader, data: dict, path: str) -> None:
        self.loader = loader
        self.data = data
        self.path = path
        self.used: set[str] = set()

    def at(self, name: str) -> str:
        return _child(self.path, name)

    def raw(self, name: str) -> object:
        """The field's value, None when absent or null (JSON null means "not set")."""
        self.used.add(name)
        return self.data.get(name)

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def items(self) -> list[tuple[str, object]]:
        self.used.update(self.data)
        return list(self.data.items())

    def required(self, name: str) -> object:
        value = self.raw(name)
        if value is None:
            self.loader.fail(self.at(name), "required")
        return value

    def optional_string(self, name: str, default: str) -> str:
        value = self.raw(name)
        return default if value is None else self.loader.string(value, self.at(name))

    def optional_bool(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        return default if value is None else self.loader.boolean(value, self.at(name))

    def optional_int(self, name: str, default: int, *, minimum: int) -> int:
        value = self.raw(name)
        return default if value is None else self.loader.integer(value, self.at(name), minimum=minimum)

    def optional_positive(self, name: str, default: float) -> float:
        value = self.raw(name)
        return default if value is None else self.loader.positive_number(value, self.at(name))

    def optional_object(self, name: str) -> _Fields | None:
        value = self.raw(name)
        return None if value is None else self.loader.fields(value, self.at(name))

    def ignore(self, name: str, kind: type | None = None) -> None:
        """A field the Rust gateway knows and this one accepts without acting on it."""
        value = self.raw(name)
        if value is None:
            return
        if kind is bool:
            self.loader.boolean(value, self.at(name))
        elif kind is dict:
            self.loader.fields(value, self.at(name))
        elif kind is int:
            self.loader.integer(value, self.at(name), minimum=0)
        elif kind is list:
            self.loader.array(value, self.at(name))
        self.loader.ignored.append(self.at(name))

    def finish(self) -> None:
        for name in self.data:
            if name not in self.used:
                # Every field this object knows has been asked for by now, so `used` is the
                # vocabulary a misspelling is compared with.
                close = difflib.get_close_matches(str(name), self.used, n=1, cutoff=0.75)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.loader.unknown.append(_child(self.path, name) + hint)


# --------------------------------------------------------------------------------------------
# Keys


class _KeyBook:
    """`auth`: key definitions by name and by token, and the resolved global keys."""

    def __init__(self, loader: _Loader) -> None:
        self.loader = loader
        self.by_name: dict[str, KeyDefinition] = {}
        self.by_token: dict[str, KeyDefinition] = {}
        self.global_keys: frozenset[str] = frozenset()

    def read(self, auth: _Fields) -> None:
        loader = self.loader
        defs = auth.optional_object("key_definitions")
        if defs is not None:
            for name, spec in defs.items():
                if not isinstance(name, str) or not name:
                    loader.fail(defs.path, "a key definition name must be a non-empty string")
                path = defs.at(name)
                f = loader.fields(spec, path)
                token = loader.string(f.required("key"), f.at("key"), non_empty=True)
                problem = _token_problem(token)
                if problem:
                    loader.fail(f.at("key"), problem)
                holder = self.by_token.get(token)
                if holder is not None:
                    loader.fail(
                        f.at("key"),
                        f"same token as key definition '{holder.name}'; a token can belong to one definition",
                    )
                checks = loader.checks(f, "key", f"key:{name}")
                labels: tuple[tuple[str, str], ...] = ()
                raw_labels = f.optional_object("labels")
                if raw_labels is not None:
                    labels = tuple(
                        (label, loader.string(value, raw_labels.at(label)))
                        for label, value in raw_labels.items()
                    )
                f.finish()
                definition = KeyDefinition(
                    name=name, key=token, checks=checks, labels=labels, label_set=frozenset(labels)
                )
                self.by_name[name] = definition
                self.by_token[token] = definition
            defs.finish()
        # The Rust parser insists on global_keys whenever auth is present; its own docs don't.
        self.global_keys = self.key_list(auth, "global_keys") or frozenset()
        auth.finish()

    def key_list(self, f: _Fields, name: str) -> frozenset[str] | None:
        """A list of accepted keys, each a literal token or a key definition name."""
        value = f.raw(name)
        if value is None:
            return None
        path = f.at(name)
        tokens: set[str] = set()
        for index, entry in enumerate(self.loader.array(value, path)):
            entry_path = _item(path, index)
            token = self.resolve(self.loader.string(entry, entry_path, non_empty=True), entry_path)
            problem = _token_problem(token)
            if problem:
                self.loader.fail(entry_path, problem)
            tokens.add(token)
        return frozenset(tokens)

    def resolve(self, entry: str, path: str) -> str:
        named = self.by_name.get(entry)
        if named is None:
            return entry
        holder = self.by_token.get(entry)
        if holder is not None and holder.name != named.name:
            # Either reading would be a guess, and a wrong guess grants someone else's access.
            self.loader.fail(
                path,
                f"is both the name of a key definition and the token of key definition '{holder.name}'; "
                "rename one of them",
            )
        return named.key


# --------------------------------------------------------------------------------------------
# Targets and providers


class _TargetReader:
    """One alias in all three shapes: pool, legacy list of providers, single provider."""

    def __init__(self, loader: _Loader, keys: _KeyBook, alias: str, path: str) -> None:
        self.loader = loader
        self.keys = keys
        self.alias = alias
        self.path = path
        # Provider limiter ids already used in this pool -> how often (see provider()).
        self.limiter_ids: dict[str, int] = {}
        self.single_responses: OpenResponsesSpec | None = None
        # A pool's stream_idle_timeout_secs is the default of its providers.
        self.stream_idle_default = DEFAULT_STREAM_IDLE_TIMEOUT_SECS

    def read(self, spec: object) -> Target:
        if isinstance(spec, dict):
            if spec.get("providers") is not None:
                return self.pool(_Fields(self.loader, spec, self.path))
            if spec.get("url") is not None:
                return self.single(_Fields(self.loader, spec, self.path))
        elif isinstance(spec, list | tuple):
            return self.legacy(list(spec))
        self.loader.fail(self.path, "must have 'url' or 'providers', or be a list of providers")

    def access(self, own: frozenset[str] | None) -> frozenset[str] | None:
        """Global keys join a target's own keys, and protect targets that have none."""
        glob = self.keys.global_keys
        if own is not None:
            return own | glob
        return glob if glob else None

    def pool(self, f: _Fields) -> Target:
        loader = self.loader
        strategy = f.optional_string("strategy", "weighted_random")
        if strategy not in STRATEGIES:
            loader.fail(f.at("strategy"), "must be 'weighted_random' or 'priority'")
        fallback = self.fallback(f)
        own_keys = self.keys.key_list(f, "keys")
        checks = loader.checks(f, "target", f"target:{self.alias}")
        max_tokens = self.default_max_tokens(f)
        headers = loader.headers(f, "response_headers")
        sanitize = f.optional_bool("sanitize_response", False)
        idle = f.raw("stream_idle_timeout_secs")
        if idle is not None:
            self.stream_idle_default = loader.positive_number(idle, f.at("stream_idle_timeout_secs"))
        trusted = f.optional_bool("trusted", False)
        pool_format = self.format(f, "openai")
        rules = read_rules(loader, f)
        responses = open_responses.read_target(loader, f)
        f.ignore("url")  # a pool's providers win over a top-level url, as in the Rust gateway

        providers_path = f.at("providers")
        providers: list[Provider] = []
        for index, item in enumerate(loader.array(f.required("providers"), providers_path)):
            pf = loader.fields(item, _item(providers_path, index))
            provider = self.provider(
                pf,
                index,
                sanitize_floor=sanitize,
                own_limits=True,
                pool_trusted=trusted,
                default_format=pool_format,
            )
            pf.finish()
            providers.append(provider)
        f.finish()
        self.check_weights(providers, strategy, providers_path)
        return self.target(
            providers,
            strategy,
            fallback,
            own_keys,
            checks,
            headers,
            sanitize,
            responses,
            trusted=trusted,
            rules=rules,
            default_max_tokens=max_tokens,
        )

    def single(self, f: _Fields) -> Target:
        own_keys = self.keys.key_list(f, "keys")
        # One provider's own limits and its target's limits are the same thing; they are
        # admitted once, with the target, before the provider is tried.
        checks = self.loader.checks(f, "target", f"target:{self.alias}")
        max_tokens = self.default_max_tokens(f)
        provider = self.provider(f, 0, sanitize_floor=False, own_limits=False, pool_trusted=False)
        f.finish()
        self.check_weights([provider], "weighted_random", f.at("weight"))
        return self.target(
            [provider],
            "weighted_random",
            FallbackSpec(),
            own_keys,
            checks,
            (),
            provider.sanitize_response,
            self.single_responses or OpenResponsesSpec(),
            trusted=provider.trusted,
            default_max_tokens=max_tokens,
        )

    def legacy(self, items: list[object]) -> Target:
        loader = self.loader
        own_keys: frozenset[str] | None = None
        providers: list[Provider] = []
        for index, item in enumerate(items):
            path = _item(self.path, index)
            f = loader.fields(item, path)
            if index == 0:
                own_keys = self.keys.key_list(f, "keys")
            else:
                f.ignore("keys", list)  # only the first element's keys count, as in the Rust gateway
            # Each element's own `trusted` applies to it (the Rust gateway refuses mixed values).
            providers.append(
                self.provider(f, index, sanitize_floor=False, own_limits=True, pool_trusted=False)
            )
            f.finish()
        self.check_weights(providers, "weighted_random", self.path)
        pool_trusted = providers[0].trusted if providers else False
        return self.target(
            providers, "weighted_random", FallbackSpec(), own_keys, (), (), False, trusted=pool_trusted
        )

    def check_weights(self, providers: list[Provider], strategy: Strategy, path: str) -> None:
        # Weighted selection over weights that are all 0 can pick nothing: every request
        # would fail, and the Rust gateway panics on it. Priority ignores weights.
        if strategy == "weighted_random" and providers and not any(p.weight for p in providers):
            self.loader.fail(
                path,
                "every provider has weight 0, so weighted_random can never pick one; "
                "give one a weight above 0 (or use strategy 'priority')",
            )

    def target(
        self,
        providers: list[Provider],
        strategy: Strategy,
        fallback: FallbackSpec,
        own_keys: frozenset[str] | None,
        checks: tuple[Check, ...],
        headers: tuple[tuple[str, str], ...],
        sanitize: bool,
        responses: OpenResponsesSpec | None = None,
        *,
        trusted: bool = False,
        rules: tuple[RoutingRule, ...] = (),
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> Target:
        return Target(
            alias=self.alias,
            providers=tuple(providers),
            strategy=strategy,
            fallback=fallback,
            keys=self.access(own_keys),
            checks=checks,
            response_headers=headers,
            sanitize_response=sanitize,
            weights=tuple(p.weight for p in providers),
            open_responses=responses or OpenResponsesSpec(),
            trusted=trusted,
            routing_rules=rules,
            default_max_tokens=default_max_tokens,
        )

    def default_max_tokens(self, f: _Fields) -> int:
        """The output a token-limited request reserves when its body names no maximum."""
        return f.optional_int("default_max_tokens", DEFAULT_MAX_TOKENS, minimum=1)

    def fallback(self, pool: _Fields) -> FallbackSpec:
        f = pool.optional_object("fallback")
        if f is None:
            return FallbackSpec()
        loader = self.loader
        statuses: list[int] = []
        raw_statuses = f.raw("on_status")
        if raw_statuses is not None:
            path = f.at("on_status")
            for index, value in enumerate(loader.array(raw_statuses, path)):
                if not _is_int(value) or not 1 <= value <= 599:  # type: ignore[operator]
                    loader.fail(
                        _item(path, index),
                        "must be an integer from 1 to 599 (5 means 5xx, 50 means 500-509)",
                    )
                statuses.append(value)  # type: ignore[arg-type]
        max_attempts = f.raw("max_attempts")
        budget = f.raw("max_total_backoff_ms")
        spec = FallbackSpec(
            enabled=f.optional_bool("enabled", False),
            on_status=tuple(statuses),
            on_rate_limit=f.optional_bool("on_rate_limit", False),
            max_attempts=None
            if max_attempts is None
            else loader.integer(max_attempts, f.at("max_attempts"), minimum=1),
            with_replacement=f.optional_bool("with_replacement", False),
            backoff=self.backoff(f),
            max_total_backoff_ms=None
            if budget is None
            else loader.integer(budget, f.at("max_total_backoff_ms"), minimum=0),
        )
        f.finish()
        return spec

    def backoff(self, fallback: _Fields) -> Backoff | None:
        f = fallback.optional_object("backoff")
        if f is None:
            return None
        loader = self.loader
        initial = loader.integer(f.required("initial_ms"), f.at("initial_ms"), minimum=0)
        max_ms = f.optional_int("max_ms", 5000, minimum=0)
        factor_value = f.raw("factor")
        factor = 2.0
        if factor_value is not None:
            if not _is_number(factor_value):
                loader.fail(f.at("factor"), f"must be a number, got {_type_name(factor_value)}")
            factor = float(factor_value)  # type: ignore[arg-type]
        jitter = f.optional_string("jitter", "full")
        if jitter not in ("full", "none"):
            loader.fail(f.at("jitter"), "must be 'full' or 'none'")
        f.finish()
        return Backoff(initial_ms=initial, max_ms=max_ms, factor=factor, jitter=jitter)  # type: ignore[arg-type]

    def format(self, f: _Fields, default: ProviderFormat) -> ProviderFormat:
        value = f.optional_string("format", default)
        if value not in ("openai", "anthropic"):
            self.loader.fail(f.at("format"), "must be 'openai' or 'anthropic'")
        return value  # type: ignore[return-value]

    def provider(
        self,
        f: _Fields,
        index: int,
        *,
        sanitize_floor: bool,
        own_limits: bool,
        pool_trusted: bool,
        default_format: ProviderFormat = "openai",
    ) -> Provider:
        loader = self.loader
        url, base_path = self.url(f)
        provider_format = self.format(f, default_format)
        key_value = f.raw("onwards_key")
        key = (
            None
            if key_value is None
            else loader.string(
                key_value,
                f.at("onwards_key"),
                non_empty=True,
                hint=" (leave the field out to send no upstream credential)",
            )
        )
        model_value = f.raw("onwards_model")
        model = (
            None if model_value is None else loader.string(model_value, f.at("onwards_model"), non_empty=True)
        )
        weight = f.optional_int("weight", 1, minimum=0)
        mock = self.mock(f, url)

        # Anthropic's API takes the bare key in x-api-key; an explicit name or prefix still wins.
        anthropic = provider_format == "anthropic"
        header_name = f.optional_string(
            "upstream_auth_header_name", "x-api-key" if anthropic else "Authorization"
        )
        if not _HEADER_NAME.fullmatch(header_name):
            loader.fail(f.at("upstream_auth_header_name"), "must be a valid HTTP header name")
        if header_name.lower() in _FRAMING_HEADERS or header_name.lower() == "host":
            loader.fail(f.at("upstream_auth_header_name"), f"'{header_name}' is managed by the gateway")
        prefix = f.optional_string("upstream_auth_header_prefix", "" if anthropic else "Bearer ")
        auth_header = None
        if key is not None:
            for field, text in (("upstream_auth_header_prefix", prefix), ("onwards_key", key)):
                problem = _header_value_problem(text)
                if problem:
                    loader.fail(f.at(field), problem)
            auth_header = (header_name, prefix + key)

        timeout_value = f.raw("request_timeout_secs")
        timeout = (
            None
            if timeout_value is None
            else loader.positive_number(timeout_value, f.at("request_timeout_secs"))
        )
        idle_value = f.raw("stream_idle_timeout_secs")
        stream_idle = (
            self.stream_idle_default
            if idle_value is None
            else loader.positive_number(idle_value, f.at("stream_idle_timeout_secs"))
        )
        proxy = self.proxy(f)
        checks: tuple[Check, ...] = ()
        # Only limited providers take an id, so unlimited neighbours cannot shift it.
        if own_limits and any(f.raw(name) is not None for name in _LIMIT_FIELDS):
            checks = loader.checks(f, "provider", self.provider_limiter_id(url, model, key))
        headers = loader.headers(f, "response_headers")
        sanitize = f.optional_bool("sanitize_response", False) or sanitize_floor
        # A provider's own `trusted` wins over its pool's; trace context follows trust unless set.
        trusted = f.optional_bool("trusted", pool_trusted)
        propagate = f.optional_bool("propagate_trace_context", trusted)
        translation = read_translation(self.loader, f)
        # The single-provider form is its own target: its open_responses also holds the target's.
        adapter, spec = open_responses.read_adapter(loader, f, owns_spec=not own_limits)
        if spec is not None:
            self.single_responses = spec
        return Provider(
            alias=self.alias,
            index=index,
            url=url,
            base_path=base_path,
            onwards_model=model,
            weight=weight,
            auth_header=auth_header,
            response_headers=headers,
            sanitize_response=sanitize,
            request_timeout_secs=timeout,
            checks=checks,
            label=f"{self.alias}/{index}",
            open_responses_adapter=adapter,
            trusted=trusted,
            propagate_trace_context=propagate,
            reasoning_translation=translation,
            stream_idle_timeout_secs=stream_idle,
            proxy=proxy,
            format=provider_format,
            mock=mock,
        )

    def proxy(self, f: _Fields) -> str | Literal[False] | None:
        """`proxy`: an http:// URL, or false for a direct connection whatever HTTP(S)_PROXY say."""
        value = f.raw("proxy")
        if value is None or value is False:
            return value
        url = self.loader.string(value, f.at("proxy"), non_empty=True, hint=" (or false for no proxy)")
        problem = check_proxy_url(url)
        if problem:
            self.loader.fail(f.at("proxy"), problem)
        return url

    def url(self, f: _Fields) -> tuple[str, str]:
        """The provider URL, normalised to end with "/", and its path without that "/"."""
        path = f.at("url")
        text = self.loader.string(f.required("url"), path)
        bad = "must be an absolute http(s) URL"
        if any(ch.isspace() for ch in text):
            self.loader.fail(path, f"{bad} without spaces")
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
        except ValueError:
            self.loader.fail(path, f"{bad} with a valid host and port")
        if parts.scheme.lower() == "mock":
            # The built-in mock provider (an Onwards extension): `mock://` or `mock://<name>`.
            if parts.path.strip("/") or parts.query or parts.fragment or "@" in parts.netloc:
                self.loader.fail(
                    path, "a mock provider url is mock:// or mock://<name>, with nothing after it"
                )
            return f"mock://{parts.netloc}/", ""
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            self.loader.fail(path, bad)
        if parts.query or parts.fragment or text.endswith(("?", "#")):
            # Request paths are joined onto this URL, which would drop a query or fragment.
            self.loader.fail(path, f"{bad} without a query string or fragment")
        base_path = parts.path.rstrip("/")
        url = urlunsplit((parts.scheme.lower(), parts.netloc, base_path + "/", "", ""))
        return url, base_path

    def mock(self, f: _Fields, url: str) -> MockSpec | None:
        """A `mock://` provider's settings; the `mock` object means nothing for other urls."""
        spec = f.optional_object("mock")
        if not url.startswith("mock:"):
            if spec is not None:
                self.loader.fail(f.at("mock"), "applies only to a provider whose url is mock://")
            return None
        if spec is None:
            return MockSpec()
        delays = {}
        for name in ("delay_ms", "stream_delay_ms"):
            value = spec.raw(name)
            if value is not None and (not _is_number(value) or value < 0):  # type: ignore[operator]
                self.loader.fail(spec.at(name), "must be a number >= 0 (milliseconds)")
            delays[name] = 0.0 if value is None else float(value)  # type: ignore[arg-type]
        reply = spec.raw("reply")
        result = MockSpec(
            delay_ms=delays["delay_ms"],
            stream_delay_ms=delays["stream_delay_ms"],
            reply=None if reply is None else self.loader.string(reply, spec.at("reply"), non_empty=True),
            embedding_dimensions=spec.optional_int("embedding_dimensions", 16, minimum=1),
        )
        if result.embedding_dimensions > 4096:
            self.loader.fail(spec.at("embedding_dimensions"), "must be an integer from 1 to 4096")
        spec.finish()
        return result

    def provider_limiter_id(self, url: str, model: str | None, key: str | None) -> str:
        """`provider:<alias>:<hash>`: the same provider keeps its limiter across reorders and
        reloads, and the id reveals nothing about the key it was derived from."""
        material = f"{url}\0{model or ''}\0{key or ''}".encode()
        limiter_id = f"provider:{self.alias}:{hashlib.sha256(material).hexdigest()[:10]}"
        # Two identical limited entries in one pool are separate providers with separate limits.
        seen = self.limiter_ids.get(limiter_id, 0) + 1
        self.limiter_ids[limiter_id] = seen
        return limiter_id if seen == 1 else f"{limiter_id}~{seen}"
