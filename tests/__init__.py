"""Onwards test suite; a package so ``tests.support`` is importable from tests and benchmarks."""
