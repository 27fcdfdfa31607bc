"""The overhead benchmark of Onwards: `python -m tests.bench.run` (see docs/performance.md)."""
