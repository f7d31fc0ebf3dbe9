"""Experiment drivers built on the training loop (results tables)."""
