"""How many connections a worker may hold: as many as its open-file limit allows, not a guess.

Rule: Granian's backpressure counts every open connection, idle and slow ones included, and a
connection that never sends a byte is never timed out by the HTTP server. So the default lets a
worker hold as many connections as it has file descriptors for (half of them: each active request
also holds an upstream connection), after raising the soft open-file limit to the hard one.
"""

from __future__ import annotations

import resource

RESERVED_FDS = 512  # logs, metrics files, Redis, the listener, pipes
_CAP = 1 << 20


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (workers inherit it); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _CAP if hard == resource.RLIM_INFINITY else min(hard, _CAP)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return _CAP if soft == resource.RLIM_INFINITY else soft


def default_backpressure(open_files: int) -> int:
    return max(256, (open_files - RESERVED_FDS) // 2)
