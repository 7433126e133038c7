"""Benchmarks run by hand (`python -m benchmarks.<name>` from the repository root); see benchmarks/README.md."""
