"""Benchmarks of theory-check: ratios measured in one run on one machine (python -m benchmarks)."""
