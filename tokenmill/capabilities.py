"""What an engine can give and a labeler may ask for (engines declare, labelers ask:
`tokenmill.engines.CAPABILITIES`, `LabelFamily.needs`). Plain names, importable without
loading torch."""

GENERATE = "generate"
SCORE = "score"  # logprob (and top-k) of given tokens
ENTROPY = "entropy"  # exact entropy of every next-token distribution
HIDDEN_STATES = "hidden_states"
LOGITS = "logits"  # full-vocabulary logits in process (contrast models, LM-head passes)
NEXT_TOKEN_FEATURES = "next_token_features"  # R2R router features (top-k logits, last hidden state)
