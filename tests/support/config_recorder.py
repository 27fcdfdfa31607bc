"""The apply/refuse callbacks a worker passes to a config follower, remembering every call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from onwards.config.model import Snapshot


class Recorder:
    def __init__(self) -> None:
        self.applied: list[Snapshot] = []
        self.refused: list[str] = []

    def apply(self, snapshot: Snapshot) -> None:
        self.applied.append(snapshot)

    def refuse(self, message: str) -> None:
        self.refused.append(message)

    @property
    def versions(self) -> list[str]:
        return [s.version for s in self.applied]

    @property
    def urls(self) -> list[str]:
        """The first provider url of target `m` in each applied config (the tests' convention)."""
        return [s.targets["m"].providers[0].url for s in self.applied]

    async def wait_for(self, condition: Callable[[], object], what: str, timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not condition():
            if loop.time() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what}; applied={self.versions} refused={self.refused}"
                )
            await asyncio.sleep(0.02)
