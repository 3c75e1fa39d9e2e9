"""The scheduled refresh: ingest what a source holds now, then bring the serving version up to date.

One job for new imagery end to end (``jobs/refresh.py``, the CronJob / RayCronJob): a year dropped
into the ``files`` source's ``drop_dir`` is ingested (what the store holds already is skipped),
embedded with the serving model (only what it lacks), indexed and published; Serve replicas pick
the new snapshot up at their next refresh, without a restart.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import DataConfig, IngestConfig
from ..errors import ConfigError
from ..ingest.pipeline import IngestSummary, ingest
from ..samples.store import SampleStore
from ..sources.base import Source
from ..vectors.db import EmbeddingDB
from .job import EmbedOptions, EmbedSummary, reembed


@dataclass
class RefreshSummary:
    """One refresh: the ingest of new samples and the embedding of what it added."""

    ingest: IngestSummary
    embed: EmbedSummary

    def __str__(self) -> str:
        return f"{self.ingest}\n{self.embed}"


def refresh(
    source: Source,
    store: SampleStore,
    db: EmbeddingDB | str,
    data: DataConfig,
    *,
    plan: IngestConfig | None = None,
    options: EmbedOptions | None = None,
) -> RefreshSummary:
    """Ingest ``source`` into ``store``, then re-embed ``store`` for the version ``db`` serves, and publish."""
    db = db if isinstance(db, EmbeddingDB) else EmbeddingDB(db)
    if db.alias() is None:  # before ingesting: a scheduled run must not do half its work and then fail
        raise ConfigError(
            f"nothing serves from {db.uri} yet, so a refresh has no model to embed new samples with: run "
            "`unigeoclip embed --model MODEL_DIR --store ... --db ...` once first"
        )
    options = options or EmbedOptions()
    ingested = ingest(source, store, data, plan=plan, lease_wait_s=options.lease_wait_s)
    return RefreshSummary(ingested, reembed(store, db, options=options))
