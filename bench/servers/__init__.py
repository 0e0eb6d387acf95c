"""Reference servers the benchmarks run beside profiled."""
