"""Triton kernels for sparse-factorized layers, each with a plain-PyTorch reference."""
