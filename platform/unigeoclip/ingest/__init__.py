"""Ray Data ingest: a source's samples -> validated rows in the Lance sample store (the only Ray in ingest)."""
