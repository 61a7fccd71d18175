"""Benchmarks are scripts (`.venv/bin/python tests/bench/run.py [--quick]`), never collected as tests."""

collect_ignore_glob = ["*.py"]
