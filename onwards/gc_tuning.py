"""The cyclic garbage collector, set for serving once a worker is ready.

Measured on a gateway worker under load (docs/performance.md): with CPython's default
threshold the collector ran about every 13 requests, found nothing to collect (a request's
objects are freed by reference counting), and cost 11-15% of the worker's CPU, most of it
walking the tens of thousands of long-lived objects that importing aiohttp, Starlette,
redis-py and prometheus-client leaves behind. So, once the app is loaded:

- ``gc.freeze()`` moves those objects out of the collector's sight for good (they live as long
  as the process);
- the first generation's threshold goes from 700 to ``GEN0_THRESHOLD`` allocations, so the
  collector runs a few times a minute rather than hundreds of times a second. Reference cycles
  that requests do create (an exception's traceback, say) are still collected, only later.

Turned on by the command line (``--gc-tuning``, on by default); an app embedded in another
process leaves that process's collector alone.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("onwards.gc")

GEN0_THRESHOLD = 10_000


def tune_for_serving() -> None:
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
    log.debug(
        "garbage collector tuned: %d objects frozen, thresholds %s", gc.get_freeze_count(), gc.get_threshold()
    )
