"""Fallback upstream when nginx is not installed: a raw RSGI app on Granian answering the canned completion.

It is several times slower than nginx, so the "direct" figures and every ratio that leans on the
upstream are less telling with it; run.py says so in its report. One process serves one port.

    python -m tests.bench.fast_upstream --port 8001
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from tests.bench.payloads import CHAT_COMPLETION, CHAT_PATH
from tests.support.processes import LOOPBACK, ManagedProcess, http_status

HEALTH_PATH = "/__health"
_JSON = [("content-type", "application/json")]


async def app(scope: Any, protocol: Any) -> None:
    """RSGI entry point: the completion for POST on the chat path, 204 on the health path, else 404."""
    if scope.proto != "http":
        return
    await protocol()  # read the whole request body, as a real upstream would
    if scope.path == CHAT_PATH:
        protocol.response_bytes(200, _JSON, CHAT_COMPLETION)
    elif scope.path == HEALTH_PATH:
        protocol.response_empty(204, [])
    else:
        protocol.response_bytes(404, _JSON, b'{"error":"not found"}')


class FastUpstream(ManagedProcess):
    label = "fast-upstream"

    def __init__(self, port: int) -> None:
        self.port = port
        super().__init__([sys.executable, "-m", "tests.bench.fast_upstream", "--port", str(port)])

    def ready(self) -> bool:
        return http_status(LOOPBACK, self.port, HEALTH_PATH) == 204


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)

    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels
    from granian.server import Server

    Server(
        "tests.bench.fast_upstream:app",
        address=args.host,
        port=args.port,
        interface=Interfaces.RSGI,
        workers=1,
        loop=Loops.uvloop,
        log_level=LogLevels.warning,
        log_access=False,
        backpressure=8192,
    ).serve()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
