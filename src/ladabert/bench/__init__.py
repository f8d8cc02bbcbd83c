"""Latency benchmarking: BERT-base, students built from configs and exported bundles, side by side."""
