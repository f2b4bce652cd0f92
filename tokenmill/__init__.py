"""tokenmill — a token-level data mill for LLM post-training."""

__version__ = "0.1.0"
