"""The Granian internals the worker hooks rely on (onwards/edge/worker.py). An upgrade that changes them
fails here, instead of silently turning graceful drain back into an immediate stop."""

from __future__ import annotations

import inspect

import granian._signals as granian_signals
from granian.server.mp import MPServer


def test_the_lifespan_worker_imports_set_loop_signals_when_it_runs():
    source = inspect.getsource(MPServer._spawn_asgi_lifespan_worker)
    assert "from granian._signals import set_loop_signals" in source
    assert "shutdown_event = set_loop_signals(loop)" in source
    # The lifespan starts after the signals are set, so the app can take them over.
    assert source.index("set_loop_signals(loop)") < source.index("lifespan_handler.startup()")


def test_set_loop_signals_returns_the_stop_event():
    assert "signal_event.set()" in inspect.getsource(granian_signals.set_loop_signals)


def test_serve_accepts_a_spawn_target():
    assert "spawn_target" in inspect.signature(MPServer.serve).parameters
