"""Studies: pipelines run over seeds and arms, summarised (the README's measured results)."""
