"""Studies: pipelines run over seeds and arms, summarised (measured results: docs/BENCHMARKS.md)."""
