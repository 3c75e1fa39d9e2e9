"""Samples: the sources, the Ray Data ingest into the Lance sample store, and the training reader."""
