"""Batch embedding of the sample store into LanceDB, the scheduled re-embedding and refresh.

The names below are imported on first use: the model actors unpickle ``embed.rows`` and need not
import the job's driver side (LanceDB among it). ``refresh`` lives in ``scheduled``: a submodule of
the function's own name would replace it here once imported.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .job import EmbedOptions, EmbedSummary, embed, reembed
    from .scheduled import RefreshSummary, refresh

__all__ = ["EmbedOptions", "EmbedSummary", "RefreshSummary", "embed", "reembed", "refresh"]
_HOME = {"EmbedOptions": ".job", "EmbedSummary": ".job", "embed": ".job", "reembed": ".job",
         "RefreshSummary": ".scheduled", "refresh": ".scheduled"}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(import_module(_HOME[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
