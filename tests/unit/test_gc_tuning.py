"""The worker's garbage-collector settings: applied by the lifespan when the CLI asks, else not."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator

import pytest

from onwards.app import create_app
from onwards.gc_tuning import GEN0_THRESHOLD, tune_for_serving
from onwards.settings import Settings


@pytest.fixture
def restore_gc() -> Iterator[None]:
    saved = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)


def test_tuning_freezes_what_is_loaded_and_raises_the_first_threshold(restore_gc) -> None:
    gc.unfreeze()
    _, gen1, gen2 = gc.get_threshold()
    tune_for_serving()
    assert gc.get_threshold() == (GEN0_THRESHOLD, gen1, gen2)
    assert gc.get_freeze_count() > 1000  # the imported modules and everything they hold


def test_cycles_made_after_tuning_are_still_collected(restore_gc) -> None:
    tune_for_serving()

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a
    del a, b
    assert gc.collect() >= 2


@pytest.mark.parametrize("enabled", [True, False])
async def test_lifespan_tunes_only_when_settings_say_so(enabled, write_config, mock_upstream, restore_gc):
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    path = write_config({"targets": {"gpt": {"url": mock_upstream.url + "/v1"}}})
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        app = create_app(
            Settings(targets=str(path), watch=False, metrics=False, log_level="warning", gc_tuning=enabled)
        )
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(app.starlette.router.lifespan_context(app.starlette))
        assert gc.get_threshold()[0] == (GEN0_THRESHOLD if enabled else 700)
        assert (gc.get_freeze_count() > 0) is enabled
