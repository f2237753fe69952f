"""pyroact's benchmark suite (pytest-benchmark); ``python -m benchmarks.report`` renders results."""
