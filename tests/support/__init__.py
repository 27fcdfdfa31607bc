"""Shared test machinery: ``mock_upstream`` (the scriptable OpenAI-compatible upstream) and ``processes``
(free ports, waiting, running the gateway and the stand-alone mock as real processes).

Import from the submodules; this file stays empty so ``python -m tests.support.mock_upstream`` does not
import the module twice.
"""
