"""Compression stage: data, teacher, factorization, pruning, schedule, distillation, student model."""
