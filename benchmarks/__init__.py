"""Benchmark scripts (not tests). Each writes JSON into benchmarks/results/; tables come from that JSON."""
