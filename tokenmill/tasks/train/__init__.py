"""Training tasks: each takes lake data in and writes model artifacts with lineage out."""
