"""One-off measurements of changes outside the benchmarks' own files (docs/benchmarks.md)."""
