"""Fixtures for the deployment tests: the deploy/local topology, loaded from its script."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from collections.abc import Mapping
from types import ModuleType

from onwards.settings import Settings
from tests.support.processes import REPO_ROOT

TOPOLOGY_SCRIPT = REPO_ROOT / "deploy" / "local" / "topology.py"


def load_topology() -> ModuleType:
    """deploy/local/topology.py as a module (deploy/ is not a package: it is for users to run)."""
    name = "onwards_local_topology"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, TOPOLOGY_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


# Granian's wait for in-flight requests at shutdown (workers_kill_timeout in onwards/cli.py).
GRANIAN_KILL_TIMEOUT_S = 30


def shutdown_wait_s(env: Mapping[str, str]) -> float:
    """The longest a replica run with `env` takes to exit after SIGTERM."""
    defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
    if "shutdown_timeout_secs" not in defaults:
        # Before the graceful drain (issue 12): Granian's own wait for in-flight requests.
        cli = (REPO_ROOT / "onwards" / "cli.py").read_text()
        assert f"workers_kill_timeout={GRANIAN_KILL_TIMEOUT_S}" in cli, "the shutdown wait changed"
        return GRANIAN_KILL_TIMEOUT_S
    drain = float(env.get("ONWARDS_DRAIN_SECS", defaults["drain_secs"]))
    timeout = float(env.get("ONWARDS_SHUTDOWN_TIMEOUT_SECS", defaults["shutdown_timeout_secs"]))
    # The main process kills a worker still running this long after the signal (docs/operations.md).
    return drain + timeout + 5
