"""Benchmarks: each prints its figures; tests never assert on time."""
