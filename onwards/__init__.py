"""Onwards: an OpenAI-compatible AI gateway with cluster-wide limits enforced in Redis."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("onwards")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
