"""Evaluation: retrieval metrics, ensembling, geocells, probes, pictures."""
