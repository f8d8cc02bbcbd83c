"""ONNX export of students and teachers, graph rewrites, quantization and validation."""
