"""Batch embedding of the sample store into LanceDB, the scheduled re-embedding and refresh."""

from .job import EmbedOptions, EmbedSummary, embed, reembed
from .refresh import RefreshSummary, refresh

__all__ = ["EmbedOptions", "EmbedSummary", "RefreshSummary", "embed", "reembed", "refresh"]
