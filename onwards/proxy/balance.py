"""In which order a target's providers are tried: weighted random or priority, with passes."""

from __future__ import annotations

import random
from collections.abc import Iterator

from onwards.config.model import Provider, Target


def attempt_order(target: Target, rng: random.Random = random._inst) -> Iterator[Provider]:
    """Yield providers to try, at most `fallback.max_attempts` (default: one per provider).

    Within a pass a provider is tried once (unless `with_replacement`); when a pass is used
    up and attempts remain, a new pass starts. Weight 0 providers are never chosen by the
    weighted strategy.
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
    if target.fallback.with_replacement:
        for _ in range(budget):
            yield rng.choices(providers, weights)[0]
        return
    given = 0
    while given < budget:
        remaining = [i for i, w in enumerate(weights) if w > 0]
        while remaining and given < budget:
            total = sum(weights[i] for i in remaining)
            pick = rng.random() * total
            for pos, i in enumerate(remaining):  # noqa: B007 - pos is the pick, used after the loop
                pick -= weights[i]
                if pick < 0:
                    break
            else:  # float rounding left pick at exactly 0: take the last one
                pos = len(remaining) - 1
            yield providers[remaining.pop(pos)]
            given += 1
