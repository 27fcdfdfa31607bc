"""Fixtures for the deployment tests: the deploy/local topology, loaded from its script."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

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
