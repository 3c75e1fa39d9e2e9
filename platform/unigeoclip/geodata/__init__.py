"""Real geodata that ships inside pip packages (DATA.md): rasters, places and country facts, read offline.

The earth source builds samples from them and the evaluation its probe targets; loaded lazily, once per process.
"""
