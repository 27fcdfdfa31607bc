"""The streaming upstream of the time-to-first-byte test: aiohttp answering chat POSTs with SSE streams.

nginx cannot pace a stream, so this small server sends ``--chunks`` chat.completion.chunk events, the
first at once and the next ones ``--delay-ms`` apart (a model producing tokens), then ``[DONE]``,
with chunked transfer encoding as real providers do.

    python -m tests.bench.sse_upstream --port 8002 --chunks 20 --delay-ms 5
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from aiohttp import web

from tests.bench.payloads import CHAT_PATH, SSE_DONE, sse_chunk
from tests.support.processes import LOOPBACK, ManagedProcess, http_status

HEALTH_PATH = "/__health"


def build_app(chunks: int, delay_s: float) -> web.Application:
    events = [sse_chunk(i) for i in range(chunks)]

    async def stream(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        for i, event in enumerate(events):
            if i and delay_s > 0:
                await asyncio.sleep(delay_s)
            await response.write(event)
        await response.write(SSE_DONE)
        await response.write_eof()
        return response

    async def health(_: web.Request) -> web.Response:
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post(CHAT_PATH, stream)
    app.router.add_get(HEALTH_PATH, health)
    return app


class SseUpstream(ManagedProcess):
    label = "sse-upstream"

    def __init__(self, port: int, chunks: int, delay_ms: float) -> None:
        self.port = port
        self.chunks = chunks
        self.delay_ms = delay_ms
        argv = [sys.executable, "-m", "tests.bench.sse_upstream", "--port", str(port)]
        argv += ["--chunks", str(chunks), "--delay-ms", str(delay_ms)]
        super().__init__(argv)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def ready(self) -> bool:
        return http_status(LOOPBACK, self.port, HEALTH_PATH) == 204


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=20, help="events per stream, before [DONE] (20)")
    parser.add_argument("--delay-ms", type=float, default=5.0, help="pause between events (5 ms)")
    args = parser.parse_args(argv)
    if args.chunks < 1:
        parser.error("--chunks must be at least 1")
    if args.delay_ms < 0:
        parser.error("--delay-ms must not be negative")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(
        build_app(args.chunks, args.delay_ms / 1000),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
