"""In which order a target's providers are tried: weighted least-connections or priority, in passes.

`weighted_random` is what the Rust onwards does under that name today (since 0.18): weighted
least-connections. Each pick takes, among the providers not yet tried in this pass, those with
the fewest requests in flight per unit of weight (`in_flight / weight`, counted in this worker),
and chooses among them at random in proportion to weight. With no load every score is 0, so it is
plain weighted random (3:1 weights give about 3:1 traffic); under load a weight-3 provider carries
about three times the in-flight requests of a weight-1 one. Weight 0 is never picked. `priority`
takes providers in list order. Picks are made lazily, so each fallback sees the load at that moment.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping

from onwards.config.model import Provider, Target

_NO_LOAD: Mapping[str, int] = {}
_TIE = 1e-12


def attempt_order(
    target: Target, rng: random.Random = random._inst, in_flight: Mapping[str, int] | None = None
) -> Iterator[Provider]:
    """Yield providers to try, at most `fallback.max_attempts` (default: one per provider).

    Within a pass a provider is tried once (unless `with_replacement`); when a pass is used
    up and attempts remain, a new pass starts. `in_flight` maps provider labels to their
    requests in flight, for the weighted strategy.
    """
    providers = target.providers
    if not providers:
        return
    budget = target.fallback.max_attempts or len(providers)
    if target.strategy == "priority":
        for attempt in range(budget):
            yield providers[attempt % len(providers)]
        return

    weights = target.weights
    if not any(weights):
        return
    if len(providers) == 1:
        for _ in range(budget):
            yield providers[0]
        return
    load = in_flight if in_flight is not None else _NO_LOAD
    weighted = [i for i, w in enumerate(weights) if w > 0]
    if target.fallback.with_replacement:
        for _ in range(budget):
            yield providers[_pick(providers, weights, weighted, load, rng)]
        return
    given = 0
    while given < budget:
        remaining = list(weighted)
        while remaining and given < budget:
            pick = _pick(providers, weights, remaining, load, rng)
            remaining.remove(pick)
            yield providers[pick]
            given += 1


def _pick(
    providers: tuple[Provider, ...],
    weights: tuple[int, ...],
    indexes: list[int],
    load: Mapping[str, int],
    rng: random.Random,
) -> int:
    """The least loaded of `indexes` (in flight per weight), ties broken at random by weight."""
    if load:
        scores = [load.get(providers[i].label, 0) / weights[i] for i in indexes]
        best = min(scores)
        candidates = [i for i, score in zip(indexes, scores, strict=True) if score - best < _TIE]
    else:
        candidates = indexes
    if len(candidates) == 1:
        return candidates[0]
    total = sum(weights[i] for i in candidates)
    draw = rng.random() * total
    for i in candidates:
        draw -= weights[i]
        if draw < 0:
            return i
    return candidates[-1]  # float rounding left the draw at exactly 0
