"""The one shared Ray runtime: connect to a cluster or start a local one, wait for resources, size actor pools.

The pipeline stages (ingest, reader, embed, train, serve) and the app use it; the pure layers below never import Ray.
"""
