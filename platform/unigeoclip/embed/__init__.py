"""Batch embedding of the sample store into LanceDB, the scheduled re-embedding and refresh.

The names below are imported on first use: the model actors unpickle ``embed.rows`` and need not
import the job's driver side (LanceDB among it). ``refresh`` lives in ``scheduled``: a submodule of
the function's own name would replace it here once imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_names

if TYPE_CHECKING:
    from .job import EmbedOptions, EmbedSummary, embed, reembed
    from .scheduled import RefreshSummary, refresh

__all__ = ["EmbedOptions", "EmbedSummary", "RefreshSummary", "embed", "reembed", "refresh"]
__getattr__ = lazy_names(
    __name__,
    {
        "EmbedOptions": ".job",
        "EmbedSummary": ".job",
        "embed": ".job",
        "reembed": ".job",
        "RefreshSummary": ".scheduled",
        "refresh": ".scheduled",
    },
)
