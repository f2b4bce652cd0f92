"""Per-token labels: rewards, advantages and selection scores."""
