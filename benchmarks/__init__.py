"""Benchmarks: run from the repository root as ``python -m benchmarks.NAME`` (results go to ``results/``)."""
