"""Batch embedding of the sample store into LanceDB, and the scheduled re-embedding."""

from .job import EmbedOptions, EmbedSummary, embed, reembed

__all__ = ["EmbedOptions", "EmbedSummary", "embed", "reembed"]
