"""Evaluation: datasets from traces and files, experiments as jobs, scorers, comparisons, gates."""
