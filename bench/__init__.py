"""Throughput and memory benchmark for tap-dynamics (``python -m bench.run``; see the README)."""
