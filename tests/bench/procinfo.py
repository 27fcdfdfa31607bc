"""What the kernel knows about the processes under test: their upstream sockets and their peak memory."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests.support.processes import child_pids

_ESTABLISHED = "01"
_TIME_WAIT = "06"
# Children of the server parent that serve no requests: multiprocessing's helpers and the
# gateway's metrics exporter.
_NOT_WORKERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver", "onwards.metrics_exporter")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The connections to one upstream port at one moment, each named by its client-side port."""

    open: frozenset[int]
    time_wait: frozenset[int]  # whichever side closed first holds the TIME-WAIT; both are counted
    per_worker: tuple[int, ...] = ()  # open connections held by each worker, in worker order


@dataclass(frozen=True, slots=True)
class Connections:
    """One proxy's upstream connections over a run: what it held open, and what it opened and closed.

    Connections closed before the run (an idle pool expiring between runs) are not this run's.
    """

    established: int  # open at the peak (or at the moment, for a single snapshot)
    time_wait: int  # closed since the run started
    opened: int  # opened since the run started
    per_worker: tuple[int, ...] = ()

    @property
    def total(self) -> int:
        """Connections the pool needed: open at the peak plus the ones it closed (churn)."""
        return self.established + self.time_wait

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "per_worker": list(self.per_worker), "total": self.total}


class ConnectionTracker:
    """Follows the connections to one upstream port from a baseline taken before a run.

    ``accepts``, when given, returns how many connections the upstream has accepted so far; opened
    connections are then counted exactly from it. Otherwise they are inferred from the client ports
    seen, which undercounts on loopback, where Linux reuses a TIME-WAIT port for a new connection at
    once (net.ipv4.tcp_tw_reuse=2).
    """

    def __init__(
        self, port: int, worker_pids: list[int] | None = None, accepts: Callable[[], int] | None = None
    ) -> None:
        self.port = port
        self.worker_pids = worker_pids
        self._accepts = accepts
        self._base_accepts = accepts() if accepts is not None else 0
        self.base = snapshot(port, worker_pids)
        self._open_seen: set[int] = set()
        self._tw_seen: set[int] = set()
        self._peak_open = 0
        self._peak_per_worker = tuple(0 for _ in worker_pids or ())

    def sample(self) -> Snapshot:
        seen = snapshot(self.port, self.worker_pids)
        self._open_seen |= seen.open
        self._tw_seen |= seen.time_wait
        self._peak_open = max(self._peak_open, len(seen.open))
        if seen.per_worker:
            self._peak_per_worker = tuple(
                max(a, b) for a, b in zip(self._peak_per_worker, seen.per_worker, strict=True)
            )
        return seen

    def _since_base(
        self, open_ports: set[int] | frozenset[int], tw_ports: set[int] | frozenset[int]
    ) -> tuple[int, int]:
        closed = tw_ports - self.base.time_wait
        if self._accepts is not None:
            return len(closed), self._accepts() - self._base_accepts
        return len(closed), len((set(open_ports) | closed) - self.base.open)

    def during(self) -> Connections:
        """Peaks over every sample so far."""
        closed, opened = self._since_base(self._open_seen, self._tw_seen)
        return Connections(self._peak_open, closed, opened, self._peak_per_worker)

    def now(self) -> Connections:
        """One more snapshot, counted from the same baseline."""
        seen = self.sample()
        closed, opened = self._since_base(self._open_seen, seen.time_wait)
        return Connections(len(seen.open), closed, opened, seen.per_worker)


def _tcp_rows() -> list[tuple[int, int, str, int]]:
    """(local port, remote port, state, inode) of every IPv4 and IPv6 TCP socket of this network namespace."""
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            rows.append(
                (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16), state, int(inode))
            )
    return rows


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def snapshot(port: int, worker_pids: list[int] | None = None) -> Snapshot:
    """Connections to the upstream listening on ``port``: open ones (seen from the client side) and
    those in TIME-WAIT on either side.

    Each proxy under test has an upstream port of its own, so these are that proxy's connections.
    """
    open_by_inode: dict[int, int] = {}
    time_wait: set[int] = set()
    for local, remote, state, inode in _tcp_rows():
        if state == _ESTABLISHED and remote == port:
            open_by_inode[inode] = local
        elif state == _TIME_WAIT and remote == port:
            time_wait.add(local)
        elif state == _TIME_WAIT and local == port:
            time_wait.add(remote)
    per_worker: tuple[int, ...] = ()
    if worker_pids:
        inodes = set(open_by_inode)
        per_worker = tuple(len(_socket_inodes(pid) & inodes) for pid in worker_pids)
    return Snapshot(frozenset(open_by_inode.values()), frozenset(time_wait), per_worker)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def worker_pids(parent: int) -> list[int]:
    """The request-serving children of a Granian parent process."""
    return [pid for pid in child_pids(parent) if not any(other in _cmdline(pid) for other in _NOT_WORKERS)]


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM (the peak resident set) of ``pid`` in MiB, or None if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
