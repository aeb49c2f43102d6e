"""Pipelines: what writes a run folder (train, evaluate, correct, study), above the libraries."""
