"""Caches over the data layer: pooled embeddings and token sequences of frozen encoders, the frozen-prefix hidden
states, and the integrity of their files."""
