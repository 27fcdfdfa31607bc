"""Checks -> script arguments, encoded once per distinct set of checks and kept as RESP bytes.

The hot path never formats a number or a key: a set of checks (key x target x provider) is
encoded the first time it is seen into an `AdmitPlan`, whose keys and values are already RESP
bulk strings, so a batch of admissions is one join of ready-made bytes. The layout of the
arguments is the one lua/admit.lua and lua/release.lua document at their top. Only a request's
token cost and a settlement's difference are formatted per call.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from onwards.config.model import Check, ConcurrencyCheck, RateCheck, TokenCheck
from onwards.limits.base import Decision, Headroom
from onwards.limits.keys import KeySpace, validate_checks

# Distinct check sets are key x target x provider combinations; bound the memo all the same.
MAX_PLANS = 4096
_ZERO = b"$1\r\n0\r\n"


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    body: bytes
    sha: str


def load_script(name: str) -> Script:
    body = importlib.resources.files("onwards.lua").joinpath(f"{name}.lua").read_bytes()
    return Script(name, body, hashlib.sha1(body).hexdigest())


async def load_scripts(transport: Any, scripts: tuple[Script, ...]) -> None:
    """SCRIPT LOAD each script, checking Redis computed the sha this gateway calls them by."""
    for script in scripts:
        sha = await transport.execute_command("SCRIPT", "LOAD", script.body)
        if isinstance(sha, bytes):
            sha = sha.decode()
        if sha != script.sha:
            raise ResponseError(f"SCRIPT LOAD of {script.name}.lua returned {sha}, expected {script.sha}")


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def num(value: float) -> bytes:
    # repr() round-trips a float exactly, and Lua's tonumber reads it back the same.
    return repr(value).encode() if isinstance(value, float) else str(value).encode()


@dataclass(frozen=True, slots=True)
class AdmitPlan:
    """One distinct tuple of checks, encoded once: its part of an admit.lua call."""

    checks: tuple[Check, ...]
    keys: tuple[bytes, ...]
    values: tuple[bytes, ...]  # kinds, then two values per check (after the lease id and cost)
    # The same in RESP, so a batch is a join of ready-made bytes.
    packed_keys: bytes
    packed_values: bytes
    semaphores: tuple[str, ...]  # limiter ids of the concurrency checks
    # The ready-made refusal for each concurrency check (None at rate checks).
    refusals: tuple[Decision | None, ...]
    # Per check: a refusal proves its bucket empty (a rate check listed once; a bucket listed
    # twice is refused with a token still in it; a token bucket refuses what does not fit, and a
    # smaller request may still fit).
    proves_empty: tuple[bool, ...]
    token_checks: tuple[TokenCheck, ...] = ()
    # The first token check whose whole burst is smallest: an estimate above it can never fit.
    smallest_token_check: TokenCheck | None = None


def headroom(plan: AdmitPlan, index: int, remaining: int, reset_ms: int) -> Headroom | None:
    """A bucket's headroom from an admit.lua reply (index 0: no bucket of that kind)."""
    if index <= 0:
        return None
    check = plan.checks[index - 1]
    assert isinstance(check, RateCheck | TokenCheck)
    return Headroom(check.burst, remaining, max(reset_ms, 0) / 1000)


# An admission waiting in a batch: its plan, its lease id ("" without semaphores), the tokens it
# reserves from each token bucket, and its reply.
Admission = tuple[AdmitPlan, str, int, Any]
# A release waiting in a batch: the packed semaphore key and the lease id.
Release = tuple[bytes, bytes]
# A settlement waiting in a batch: the packed token bucket key, then rate, burst and the
# difference (reserved minus used), each packed.
Settlement = tuple[bytes, bytes]


class Encoder:
    """The RESP of one gateway's script calls (one key space, one set of scripts)."""

    def __init__(self, keys: KeySpace) -> None:
        self.keys = keys
        self.admit = load_script("admit")
        self.release = load_script("release")
        self.renew = load_script("renew")
        self.scripts = (self.admit, self.release, self.renew)
        # The fixed start of every batched call: EVALSHA and the script's sha, in RESP.
        self._admit_head = bulk(b"EVALSHA") + bulk(self.admit.sha.encode())
        self._release_head = bulk(b"EVALSHA") + bulk(self.release.sha.encode())
        self.plans: dict[tuple[Check, ...], AdmitPlan] = {}
        self._semaphore_keys: dict[str, bytes] = {}
        self._token_keys: dict[TokenCheck, tuple[bytes, bytes]] = {}
        self._lease_heads: dict[tuple[str, ...], tuple[Any, ...]] = {}
        self._ttl = b""

    def configure(self, lease_ttl_ms: int) -> None:
        self._ttl = bulk(num(lease_ttl_ms))
        # A reload may change any check; plans are rebuilt lazily under the new config.
        self.plans = {}

    def plan(self, checks: tuple[Check, ...]) -> AdmitPlan:
        plan = self.plans.get(checks)
        if plan is None:
            plan = self._encode(checks)
            if len(self.plans) >= MAX_PLANS:
                self.plans.pop(next(iter(self.plans)))
            self.plans[checks] = plan
        return plan

    def _encode(self, checks: tuple[Check, ...]) -> AdmitPlan:
        validate_checks(checks)
        keys: list[bytes] = []
        params: list[bytes] = []
        kinds = bytearray()
        semaphores: list[str] = []
        refusals: list[Decision | None] = []
        for check in checks:
            keys.append(self.keys.key_for(check).encode())
            if isinstance(check, RateCheck | TokenCheck):
                kinds += b"r" if isinstance(check, RateCheck) else b"t"
                params += (num(float(check.rate)), num(check.burst))
                refusals.append(None)
            else:
                assert isinstance(check, ConcurrencyCheck)
                kinds += b"c"
                params += (num(check.limit), b"")
                semaphores.append(check.limiter_id)
                refusals.append(Decision(allowed=False, refused=check))
        values = (bytes(kinds), *params)
        tokens = tuple(c for c in checks if isinstance(c, TokenCheck))
        return AdmitPlan(
            checks=checks,
            keys=tuple(keys),
            values=values,
            packed_keys=b"".join(bulk(k) for k in keys),
            packed_values=b"".join(bulk(v) for v in values),
            semaphores=tuple(semaphores),
            refusals=tuple(refusals),
            proves_empty=tuple(
                isinstance(c, RateCheck)
                and sum(isinstance(o, RateCheck) and o.limiter_id == c.limiter_id for o in checks) == 1
                for c in checks
            ),
            token_checks=tokens,
            smallest_token_check=min(tokens, key=lambda c: c.burst) if tokens else None,
        )

    def pack_admits(self, admits: list[Admission]) -> bytes:
        """One admit.lua call deciding every admission of the batch, in order."""
        nkeys = 0
        items = 5  # EVALSHA, sha, numkeys, R, ttl
        for plan, _, _, _ in admits:
            nkeys += len(plan.keys)
            items += len(plan.keys) + 2 + len(plan.values)
        return b"".join(
            (
                b"*%d\r\n" % items,
                self._admit_head,
                bulk(b"%d" % nkeys),
                *(plan.packed_keys for plan, _, _, _ in admits),
                bulk(b"%d" % len(admits)),
                self._ttl,
                *(
                    bulk(lease.encode()) + (_ZERO if not cost else bulk(b"%d" % cost)) + plan.packed_values
                    for plan, lease, cost, _ in admits
                ),
            )
        )

    def pack_releases(self, releases: Sequence[Release], settlements: Sequence[Settlement] = ()) -> bytes:
        """One release.lua call removing every (semaphore, lease) pair of the batch and settling
        every token reservation (bucket keys after the semaphores, their values after the leases)."""
        n = len(releases)
        s = len(settlements)
        return b"".join(
            (
                b"*%d\r\n" % (3 + 2 * n + 4 * s),
                self._release_head,
                bulk(b"%d" % (n + s)),
                *(key for key, _ in releases),
                *(key for key, _ in settlements),
                *(bulk(lease) for _, lease in releases),
                *(values for _, values in settlements),
            )
        )

    def settlement(self, check: TokenCheck, delta: int) -> Settlement:
        """A settlement of `delta` tokens (reserved minus used) to `check`'s bucket, packed."""
        packed = self._token_keys.get(check)
        if packed is None:
            key = bulk(self.keys.token_bucket(check.limiter_id).encode())
            packed = (key, bulk(num(float(check.rate))) + bulk(num(check.burst)))
            if len(self._token_keys) >= MAX_PLANS:
                self._token_keys.pop(next(iter(self._token_keys)))
            self._token_keys[check] = packed
        return packed[0], packed[1] + bulk(b"%d" % delta)

    def semaphore_key(self, limiter_id: str) -> bytes:
        packed = self._semaphore_keys.get(limiter_id)
        if packed is None:
            packed = bulk(self.keys.semaphore(limiter_id).encode())
            if len(self._semaphore_keys) >= MAX_PLANS:
                self._semaphore_keys.pop(next(iter(self._semaphore_keys)))
            self._semaphore_keys[limiter_id] = packed
        return packed

    def lease_head(self, script: Script, limiter_ids: tuple[str, ...]) -> tuple[Any, ...]:
        """EVALSHA, sha, numkeys and the semaphore keys of a lease call (renew, awaited release)."""
        memo = (script.name, *limiter_ids)
        head = self._lease_heads.get(memo)
        if head is None:
            keys = [self.keys.semaphore(limiter_id).encode() for limiter_id in limiter_ids]
            head = ("EVALSHA", script.sha, len(keys), *keys)
            if len(self._lease_heads) >= MAX_PLANS:
                self._lease_heads.pop(next(iter(self._lease_heads)))
            self._lease_heads[memo] = head
        return head
