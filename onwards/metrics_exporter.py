"""The /metrics endpoint: a small child process of the CLI that sums every worker's metric files.

Why a separate process: the CLI parent forks the Granian workers, and a thread running in a
process while it forks can leave a lock held forever in the child. So the parent runs no
threads; this process serves the scrapes instead, and exits when its parent goes away.

It also keeps the multiprocess directory bounded. prometheus-client writes one file per
metric type per worker pid, and a respawned worker gets a new pid, so files of dead workers
pile up and every scrape reads them all. The reaper below removes them:

- live gauges (in flight, circuit state, active config) of a dead pid are deleted, since a
  dead worker is no longer in flight or open;
- counters, histograms and summaries of dead pids are added into one archive file per type
  (``counter_archive.db`` ...), so totals never go backwards, then the pid files are deleted;
- non-live gauges (max/min/sum/mostrecent) are folded the same way with their own rule;
  ``all`` gauges of a dead pid carry that pid as a label and are deleted.

A fold is made crash-safe by a journal: the new archives are written beside the old ones,
then a journal naming them and the files they absorbed is written atomically, then the
archives are swapped in and the absorbed files deleted. A journal found later is rolled
forward, so an exporter killed mid-fold neither loses nor double-counts anything.

Run by ``onwards.metrics.start_exporter``::

    python -m onwards.metrics_exporter --port 9090 --host 0.0.0.0 --multiproc-dir DIR --parent-pid PID
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

log = logging.getLogger("onwards.metrics_exporter")

# The names prometheus-client gives a worker's files: <type>_<pid>.db, gauge_<mode>_<pid>.db.
_PID_FILE = re.compile(r"^(?P<kind>counter|histogram|summary|gauge_(?P<mode>[a-z]+))_(?P<pid>[0-9]+)\.db$")
_ARCHIVE_FILE = re.compile(r"^(?:counter|histogram|summary|gauge_[a-z]+)_archive\.db$")
JOURNAL = "onwards-reap-journal.json"
_TMP_SUFFIX = ".tmp"

_SUMMED = frozenset({"counter", "histogram", "summary", "gauge_sum"})
_FOLDED_GAUGES = frozenset({"gauge_max", "gauge_min", "gauge_mostrecent"})
_DROPPED_GAUGES = frozenset({"gauge_all"})  # one series per pid: meaningless once the pid is gone
# Everything else with a pid (gauge_live*) is removed by prometheus_client's mark_process_dead.

READY_PREFIX = "onwards-metrics-exporter listening on "


def is_multiprocess_file(name: str) -> bool:
    """True for files this module or prometheus-client writes into the multiprocess dir."""
    if _PID_FILE.match(name) or _ARCHIVE_FILE.match(name):
        return True
    if name in (JOURNAL, JOURNAL + _TMP_SUFFIX):
        return True
    return name.endswith(".db" + _TMP_SUFFIX) and _ARCHIVE_FILE.match(name[: -len(_TMP_SUFFIX)]) is not None


def pid_alive(pid: int) -> bool:
    """Whether `pid` can still write to its files. Zombies (exited, not yet waited for) cannot."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True  # no procfs: trust kill()
    # The state letter follows the command name, which is in parentheses and may contain spaces.
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] != b"Z"


@dataclass(frozen=True, slots=True)
class ReapResult:
    dead_pids: tuple[int, ...]
    folded_files: int  # counter/histogram/... files added into an archive
    deleted_files: int  # every pid file removed (folded ones included)


class Reaper:
    """Folds dead workers' files of one multiprocess dir. Not safe to run twice at once on one dir."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._journal = os.path.join(path, JOURNAL)

    def reap(self) -> ReapResult:
        self.recover()
        by_pid: dict[int, list[tuple[str, str]]] = {}
        for name in os.listdir(self.path):
            m = _PID_FILE.match(name)
            if m:
                by_pid.setdefault(int(m["pid"]), []).append((m["kind"], name))
        dead = sorted(pid for pid in by_pid if not pid_alive(pid))
        if not dead:
            return ReapResult((), 0, 0)

        to_fold: dict[str, list[str]] = {}
        to_drop: list[str] = []
        for pid in dead:
            # Live gauges first: whatever happens below, a dead worker no longer counts as live.
            mark_process_dead(pid, self.path)
            for kind, name in by_pid[pid]:
                full = os.path.join(self.path, name)
                if kind in _SUMMED or kind in _FOLDED_GAUGES:
                    to_fold.setdefault(kind, []).append(full)
                elif kind in _DROPPED_GAUGES:
                    to_drop.append(full)

        replace: list[tuple[str, str]] = []
        for kind, sources in to_fold.items():
            archive = os.path.join(self.path, f"{kind}_archive.db")
            tmp = archive + _TMP_SUFFIX
            _write_mmap_file(tmp, _fold(kind, [archive, *sources]))
            replace.append((tmp, archive))
        folded = [src for sources in to_fold.values() for src in sources]
        self._write_journal(replace, folded + to_drop)
        self._commit(replace, folded + to_drop)
        return ReapResult(tuple(dead), len(folded), len(folded) + len(to_drop))

    def recover(self) -> None:
        """Finish a fold that an earlier, killed reaper left half done (or drop one that never began)."""
        try:
            with open(self._journal, encoding="utf-8") as f:
                journal = json.load(f)
        except FileNotFoundError:
            journal = None
        if journal is not None:
            # The journal is written only after every new archive is complete, and nothing is
            # deleted before it exists: rolling forward is always right.
            join = os.path.join
            replace = [(join(self.path, t), join(self.path, a)) for t, a in journal["replace"]]
            delete = [os.path.join(self.path, d) for d in journal["delete"]]
            self._commit(replace, delete)
        for name in os.listdir(self.path):
            # Leftovers of a fold killed before its journal was written: the sources are intact.
            if name.endswith(_TMP_SUFFIX) and is_multiprocess_file(name):
                _remove(os.path.join(self.path, name))

    def _write_journal(self, replace: list[tuple[str, str]], delete: list[str]) -> None:
        body = {
            "replace": [[os.path.basename(t), os.path.basename(a)] for t, a in replace],
            "delete": [os.path.basename(d) for d in delete],
        }
        tmp = self._journal + _TMP_SUFFIX
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(body, f)
        os.replace(tmp, self._journal)

    def _commit(self, replace: list[tuple[str, str]], delete: list[str]) -> None:
        for tmp, archive in replace:
            if os.path.exists(tmp):  # gone means it was already swapped in
                os.replace(tmp, archive)
        for path in delete:
            _remove(path)
        _remove(self._journal)


def _fold(kind: str, files: Iterable[str]) -> dict[str, tuple[float, float]]:
    """Combine the rows of several files of one type the way the collector would across pids."""
    out: dict[str, tuple[float, float]] = {}
    for path in files:
        try:
            rows = MmapedDict.read_all_values_from_file(path)
        except FileNotFoundError:
            continue  # no archive yet
        for key, value, ts, _pos in rows:
            old = out.get(key)
            if old is None:
                out[key] = (value, ts)
            elif kind in _SUMMED:
                out[key] = (old[0] + value, 0.0)
            elif kind == "gauge_max":
                out[key] = max(old, (value, ts), key=lambda r: r[0])
            elif kind == "gauge_min":
                out[key] = min(old, (value, ts), key=lambda r: r[0])
            elif ts > old[1]:  # gauge_mostrecent
                out[key] = (value, ts)
    return out


def _write_mmap_file(path: str, rows: dict[str, tuple[float, float]]) -> None:
    _remove(path)
    d = MmapedDict(path)
    try:
        for key, (value, ts) in rows.items():
            d.write_value(key, value, ts)
    finally:
        d.close()


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


# --- the HTTP side -------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _ExporterServer
    # HTTP/1.0: one request per connection, so one idle scraper cannot hold the single thread.
    protocol_version = "HTTP/1.0"
    timeout = 10  # a stalled client is dropped instead of blocking every other scrape

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._metrics()
        elif path == "/":
            self._send(200, b"onwards metrics exporter: see /metrics\n", "text/plain; charset=utf-8")
        else:
            self._send(404, b"not found; metrics are at /metrics\n", "text/plain; charset=utf-8")

    def _metrics(self) -> None:
        srv = self.server
        try:
            srv.reap()
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            body = encoder(srv.registry)
        except Exception as exc:
            log.exception("collecting metrics from %s failed", srv.reaper.path)
            self._send(500, f"collecting metrics failed: {exc}\n".encode(), "text/plain; charset=utf-8")
            return
        self._send(200, body, content_type)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        # A scrape every few seconds is not news; errors are logged where they happen.
        log.debug("%s " + format, self.address_string(), *args)


class _ExporterServer(HTTPServer):
    def __init__(self, host: str, port: int, multiproc_dir: str) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.registry = CollectorRegistry()
        MultiProcessCollector(self.registry, path=multiproc_dir)
        self.reaper = Reaper(multiproc_dir)
        self.last_reap = 0.0
        self._reap_failing = ""
        super().__init__((host, port), _Handler)

    def reap(self) -> None:
        try:
            result = self.reaper.reap()
        except Exception as exc:
            # A failed fold leaves the files in place: the scrape stays correct, only bigger.
            # Logged when the failure changes, not twice a second.
            if repr(exc) != self._reap_failing:
                log.exception("folding dead workers' metric files in %s failed", self.reaper.path)
                self._reap_failing = repr(exc)
        else:
            if self._reap_failing:
                log.info("folding dead workers' metric files works again")
                self._reap_failing = ""
            if result.dead_pids:
                log.info("folded metric files of dead workers %s", list(result.dead_pids))
        self.last_reap = time.monotonic()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m onwards.metrics_exporter", description="Serve the workers' metrics on /metrics."
    )
    p.add_argument("--port", type=int, required=True, help="TCP port for GET /metrics")
    p.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    p.add_argument("--multiproc-dir", required=True, help="the workers' PROMETHEUS_MULTIPROC_DIR")
    p.add_argument(
        "--parent-pid", type=int, default=None, help="exit when this process is no longer our parent"
    )
    p.add_argument(
        "--reap-interval", type=float, default=0.5, help="seconds between looks for dead workers' files"
    )
    args = p.parse_args(argv)
    if not 1 <= args.port <= 65535:
        p.error(f"--port must be between 1 and 65535, got {args.port}")
    if not os.path.isdir(args.multiproc_dir):
        p.error(f"--multiproc-dir {args.multiproc_dir!r} is not a directory")
    if args.reap_interval <= 0:
        p.error(f"--reap-interval must be positive, got {args.reap_interval}")
    return args


def main(argv: list[str] | None = None) -> int:
    # Same log format as the gateway that started us (its settings are in the environment).
    from onwards.logging_setup import configure_logging
    from onwards.settings import Settings

    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    args = _parse_args(argv)
    parent = args.parent_pid if args.parent_pid is not None else os.getppid()
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server = _ExporterServer(args.host, args.port, args.multiproc_dir)
    except OSError as exc:
        log.error("cannot listen on %s:%s for /metrics: %s", args.host, args.port, exc)
        return 2
    # How often the loop looks at the parent and for dead workers. Folding between scrapes
    # keeps that work off the scrape; a look that finds nothing costs well under a millisecond.
    server.timeout = min(0.5, args.reap_interval)
    server.reap()
    bound_host, bound_port = server.server_address[:2]
    print(f"{READY_PREFIX}{bound_host!s}:{bound_port}", flush=True)
    # Nothing else is written to stdout; the starter may close its end of the pipe.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)

    try:
        while not stopping:
            if os.getppid() != parent:
                log.info("parent process %s is gone; metrics exporter exits", parent)
                break
            server.handle_request()
            if time.monotonic() - server.last_reap >= args.reap_interval:
                server.reap()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
