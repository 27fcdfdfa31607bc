"""Sample a running proxy with py-spy and rank where its CPU goes, by function of the onwards package.

Optional: needs ``py-spy`` (``pip install py-spy``) and permission to ptrace the gateway (root, or
``kernel.yama.ptrace_scope=0``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

# "function (file:line)"; py-spy prints file paths shortened to the import root, e.g. onwards/gateway.py.
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_PACKAGE = re.compile(r"(?:^|/)onwards/")
# Entry frames under which a whole worker runs (Granian forks the workers inside `serve`): on every
# stack, so they say nothing about where the time goes.
_ROOTS = frozenset(
    {("<module>", "onwards/__main__.py"), ("main", "onwards/cli.py"), ("serve", "onwards/cli.py")}
)
# Leaf frames grouped by where they live, to say how much of the time is the library's or the server's.
_AREAS = (
    ("redis client", ("redis/",)),
    ("aiohttp client", ("aiohttp/",)),
    ("asyncio / uvloop", ("asyncio/", "uvloop/")),
    ("granian / ASGI server", ("granian/",)),
    ("prometheus metrics", ("prometheus_client/",)),
    ("starlette", ("starlette/",)),
    ("logging", ("logging/",)),
    ("onwards", ("onwards/",)),
)


def py_spy_binary() -> str | None:
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.is_file() else shutil.which("py-spy")


def start_recording(pid: int, duration_s: int, out_path: Path, rate: int = 200) -> subprocess.Popen[bytes]:
    """Start ``py-spy record`` on ``pid`` and all its children, writing collapsed stacks to ``out_path``.

    Only samples of the thread holding the GIL are kept (``--gil``): that is the Python CPU time a
    request costs. Without it py-spy counts threads blocked in native code (Granian's Rust runtime,
    the file watcher) as busy, though /proc shows them idle.
    """
    binary = py_spy_binary()
    if binary is None:
        raise FileNotFoundError("py-spy is not installed (pip install py-spy)")
    argv = [binary, "record", "--pid", str(pid), "--subprocesses", "--duration", str(duration_s)]
    argv += ["--rate", str(rate), "--gil", "--format", "raw", "--function", "--output", str(out_path)]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _frames(stack: str) -> list[tuple[str, str]]:
    frames = []
    for raw in stack.split(";"):
        match = _FRAME.match(raw)
        if match:
            frames.append((match["func"], match["file"]))
    return frames


def _area(file: str) -> str:
    for name, markers in _AREAS:
        if any(marker in file for marker in markers):
            return name
    return "other"


def hot_spots(collapsed: str, top: int = 15) -> dict[str, Any]:
    """Rank onwards functions in py-spy's collapsed stacks.

    inclusive: share of samples with the function anywhere on the stack (the entry frames every
    worker runs under are left out).
    own: share of samples whose deepest onwards frame is this function, so the time of the library
    calls it makes directly (an EVALSHA, a send) is charged to it.
    """
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = in_package = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = _frames(stack)
        if not frames:
            continue
        total += count
        areas[_area(frames[-1][1])] += count
        mine = [
            f"{func} ({file})"
            for func, file in frames
            if _PACKAGE.search(file) and (func, file) not in _ROOTS
        ]
        if mine:
            in_package += count
            own[mine[-1]] += count
            for name in set(mine):
                inclusive[name] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"function": name, "percent": 100 * n / total} for name, n in counter.most_common(top)]

    return {
        "samples": total,
        "onwards_percent": 100 * in_package / total if total else 0.0,
        "inclusive": share(inclusive) if total else [],
        "own": share(own) if total else [],
        "leaf_areas": [{"area": name, "percent": 100 * n / total} for name, n in areas.most_common()]
        if total
        else [],
    }


def render_markdown(spots: dict[str, Any]) -> str:
    lines = [
        f"{spots['samples']} samples of the thread holding the GIL; {spots['onwards_percent']:.1f}% are in "
        "onwards code or in calls it made (the rest: server, event loop, connection handling).",
        "",
        "| own % | function (time in it and in the library calls it makes) |",
        "|---|---|",
        *(f"| {row['percent']:.1f} | {row['function']} |" for row in spots["own"]),
        "",
        "| inclusive % | function |",
        "|---|---|",
        *(f"| {row['percent']:.1f} | {row['function']} |" for row in spots["inclusive"]),
        "",
        "| leaf frame area | % |",
        "|---|---|",
        *(f"| {row['area']} | {row['percent']:.1f} |" for row in spots["leaf_areas"]),
    ]
    return "\n".join(lines) + "\n"
