"""The embedding job: a trained model and a sample store -> one model version's table in LanceDB.

``embed`` embeds whatever the model version still lacks (the first run: everything);
``reembed``, the scheduled job, does the same for the serving version (new or changed
imagery, a new year), or rolls out a new model next to the serving one. Either way:

1. plan: the (sample, modality) pairs of current samples without a row for the version
   (by content hash), and the rows of samples that were superseded since;
2. embed: a Ray Data actor pool reads those rows from a pinned store version, decodes
   and encodes them (one model per actor; GPU actors with ``gpu``);
3. write: buffered ``merge_insert`` upserts keyed by (item, modality, model version);
   a crash loses at most the uncommitted buffer and a rerun finishes the job exactly;
4. index: compaction, then the ANN index is built, extended or retrained (policy);
5. publish: the serving alias moves to the version's new snapshot, in one commit: the
   serving version after each run, a new version only once it is complete;
6. report: a summary, and figures pushed for Prometheus.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray

from ..cluster.runtime import actor_pool, can_grow, wait_for_resources
from ..config import load_config
from ..errors import ConfigError, NotFoundError
from ..lease import held
from ..modality import Modality
from ..obs.metrics import push_run_metrics, textfile_beside
from ..obs.progress import Rate
from ..samples.store import SampleStore
from ..vectors.db import EmbeddingDB
from ..vectors.index import DEFAULT_POLICY, IndexPolicy, maintain_index
from ..vectors.schema import embedding_schema
from ..vectors.versions import CONFIG_FILE, check_version_name, model_fingerprint, model_version_id
from ..vectors.writer import BufferedUpserter, delete_items
from .plan import EmbedPlan, plan_embedding
from .rows import DecodeRows, EmbedRows, EncodeRows

GPU_ACTOR = {"GPU": 1.0, "CPU": 1.0}  # what one model actor of the --gpu pipeline holds


@dataclass(frozen=True)
class EmbedOptions:
    """How a run embeds; defaults suit a CPU machine. ``commit_*`` bound the work a crash can lose."""

    modalities: tuple[Modality, ...] | None = None  # None: every modality the model has
    gpu: bool = False
    actors: int | None = None  # a fixed number of model actors (overrides min_actors / max_actors)
    min_actors: int = 1  # the model actors' pool starts here and grows as nodes join ...
    max_actors: int | None = None  # ... up to this (None: one per chunk, as far as the cluster allows)
    cpus_per_actor: float = 1.0
    decoders: int | None = None  # gpu only: the most CPU actors decoding for the GPU actors (None: as needed)
    resource_timeout_s: float = 900.0  # gpu only: how long to wait for the cluster to bring a GPU
    # Samples per actor call: each call has a fixed Ray Data overhead, and 128 embedded the demo's store
    # fastest of 64, 128 and 256 on 2 cores (notes/issue25.md).
    batch_size: int = 128
    commit_rows: int = 20_000
    commit_seconds: float = 60.0
    publish: bool = True  # make the version serve once it is complete
    index: IndexPolicy = DEFAULT_POLICY
    pushgateway: str | None = None
    metrics_textfile: str | None = None
    lease_wait_s: float = 0.0  # another run holds the database's writer lease: wait this long, then refuse
    lease_ttl_s: float = 300.0  # a run that dies frees the lease this long after its last renewal

    def __post_init__(self) -> None:
        if self.min_actors < 1 or (self.actors is not None and self.actors < 1):
            raise ConfigError("embedding needs at least one model actor: --actors / --min-actors must be >= 1")
        if self.decoders is not None and self.decoders < 1:
            raise ConfigError(f"decoders must be >= 1 (or None for as many as needed), got {self.decoders}")
        if self.cpus_per_actor <= 0:
            raise ConfigError(f"cpus_per_actor must be > 0, got {self.cpus_per_actor}")
        if self.max_actors is not None and self.max_actors < self.min_actors:
            raise ConfigError(f"--max-actors ({self.max_actors}) is below --min-actors ({self.min_actors})")

    def model_pool(self, chunks: int) -> ray.data.ActorPoolStrategy:
        """The model actors: a fixed pool with ``actors``, else one autoscaling between the bounds."""
        low, high = (self.actors, self.actors) if self.actors is not None else (self.min_actors, self.max_actors)
        return actor_pool(low, high, chunks, needs=GPU_ACTOR if self.gpu else {"CPU": self.cpus_per_actor})


@dataclass
class EmbedSummary:
    """What one embedding run did: rows embedded and failed per modality, and whether the version serves."""

    job: str
    run_id: str
    model_version: str
    store: str
    db: str
    embedded: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    retired: int = 0
    seconds: float = 0.0
    startup_seconds: float = 0.0  # from submitting the pipeline to its first rows (actors loading models)
    stream_seconds: float = 0.0  # from the first rows to the last: the steady embedding rate's denominator
    rows: int = 0
    expected_rows: int = 0
    complete: bool = False
    index: str = ""
    serving_before: str | None = None
    serving: str | None = None
    published: bool = False
    metrics: str = ""
    failure_examples: list[str] = field(default_factory=list)

    @property
    def figures(self) -> dict[str, float]:
        """The run's counts and duration as numbers, for the run metrics pushed at its end."""
        return {
            "rows_embedded": sum(self.embedded.values()),
            "rows_skipped": sum(self.skipped.values()),
            "rows_failed": sum(self.failed.values()),
            "rows_retired": self.retired,
            "seconds": self.seconds,
            "table_rows": self.rows,
            "complete": float(self.complete),
            "published": float(self.published),
        }

    def __str__(self) -> str:
        n = sum(self.embedded.values())
        per = ", ".join(f"{m} {c}" for m, c in self.embedded.items() if c) or "nothing to do"
        if self.published and self.serving_before is None:
            serving = f"{self.serving} (now serving; nothing served before)"
        elif self.published and self.serving_before != self.serving:
            serving = f"{self.serving} (switched from {self.serving_before})"
        elif self.published:
            serving = f"{self.serving} (published its new rows)"
        else:
            serving = f"{self.serving or 'none'} (unchanged)"
        lines = [
            f"{self.job} {self.run_id}: model version {self.model_version}, {self.store} -> {self.db}",
            f"  embedded: {n} rows in {self.seconds:.1f} s ({n / max(self.seconds, 1e-9):.1f} rows/s): {per}",
            f"  skipped: {sum(self.skipped.values())} already embedded",
            f"  failed: {sum(self.failed.values())}"
            + "".join(f"\n    {e}" for e in self.failure_examples)
            + ("\n    (all in the embed_failures table; a rerun retries them)" if self.failed else ""),
            f"  retired: {self.retired} rows of superseded samples",
            f"  table: {self.rows} rows ("
            + ("complete)" if self.complete else f"incomplete: {self.expected_rows} expected)"),
            f"  index: {self.index}",
            f"  serving: {serving}",
            f"  metrics: {self.metrics}",
        ]
        return "\n".join(lines)


def embed(
    model_dir: str | Path,
    store: SampleStore | str,
    db: EmbeddingDB | str,
    *,
    model_version: str | None = None,
    options: EmbedOptions = EmbedOptions(),
    job: str = "embed",
) -> EmbedSummary:
    """Embed every current sample's present modalities that ``model_version`` lacks (see the module docstring).

    One run writes to a database at a time: it holds the database's writer lease (:mod:`unigeoclip.lease`)
    throughout, waiting ``options.lease_wait_s`` for another run's, else raising ``LeaseHeld`` naming it.
    """
    store = store if isinstance(store, SampleStore) else SampleStore(store)
    db = db if isinstance(db, EmbeddingDB) else EmbeddingDB(db)
    with held(db.uri, job, ttl_s=options.lease_ttl_s, wait_s=options.lease_wait_s):
        return _embed(model_dir, store, db, model_version=model_version, options=options, job=job)


def _embed(
    model_dir: str | Path, store: SampleStore, db: EmbeddingDB, *, model_version: str | None, options: EmbedOptions,
    job: str,
) -> EmbedSummary:  # fmt: skip
    start = time.perf_counter()
    model_dir = str(Path(model_dir).resolve()) if "://" not in str(model_dir) else str(model_dir)
    fingerprint = model_fingerprint(model_dir)
    version = check_version_name(model_version) if model_version else model_version_id(model_dir)
    cfg = load_config(Path(model_dir) / CONFIG_FILE)
    modalities = _modalities(cfg.model.modalities, options.modalities)
    dim = cfg.model.embed_dim
    table = db.register_version(
        version, fingerprint=fingerprint, model_dir=model_dir, embed_dim=dim, modalities=[m.value for m in modalities]
    )
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    before = db.alias()
    serving_before: str | None = before["model_version"] if before else None
    summary = EmbedSummary(job, run_id, version, store.root, db.uri, serving_before=serving_before)

    plan = plan_embedding(store, table, modalities, batch_size=options.batch_size)
    summary.skipped, summary.expected_rows = plan.skipped, plan.expected_rows
    if plan.chunks:
        _run_pipeline(plan, table, db, summary, model_dir, fingerprint, dim, options)
    if plan.retired:
        summary.retired = delete_items(table, plan.retired)
    wrote = bool(sum(summary.embedded.values()) or summary.retired)
    summary.index = maintain_index(table, options.index, wrote=wrote)
    summary.rows = int(table.count_rows())
    # A run over some of the model's modalities cannot vouch for the others: it never completes a version.
    whole = set(modalities) == set(cfg.model.modalities)
    summary.complete = whole and not summary.failed and summary.rows == plan.expected_rows
    info = db.version_info(version) or {}
    if summary.complete and (info.get("completed_at") is None or info.get("rows") != summary.rows):
        db.mark_complete(version, summary.rows)

    serving_now = before is not None and before["model_version"] == version
    if (serving_now and wrote) or (summary.complete and options.publish and not serving_now):
        pointer = db.publish(version)
        summary.published, summary.serving = True, pointer["model_version"]
    else:
        summary.serving = serving_before
    summary.seconds = time.perf_counter() - start
    summary.metrics = push_run_metrics(
        job,
        summary.figures,
        labels={"model_version": version},
        pushgateway=options.pushgateway,
        textfile=options.metrics_textfile,
        default_textfile=textfile_beside(db.uri, job),
    )
    return summary


def reembed(
    store: SampleStore | str,
    db: EmbeddingDB | str,
    *,
    model_dir: str | Path | None = None,
    model_version: str | None = None,
    options: EmbedOptions = EmbedOptions(),
) -> EmbedSummary:
    """The scheduled job: bring the serving version up to date, or roll out ``model_dir`` beside it."""
    db = db if isinstance(db, EmbeddingDB) else EmbeddingDB(db)
    if model_dir is None:
        serving = db.alias()
        if serving is None:
            raise NotFoundError(
                f"nothing serves from {db.uri} yet, so there is no model to re-embed with: "
                "run `unigeoclip embed --model MODEL_DIR` first, or give `reembed --model MODEL_DIR`"
            )
        info = db.version_info(serving["model_version"])
        assert info is not None
        model_dir, model_version = info["model_dir"], serving["model_version"]
    return embed(model_dir, store, db, model_version=model_version, options=options, job="reembed")


def _modalities(have: tuple[Modality, ...], wanted: tuple[Modality, ...] | None) -> tuple[Modality, ...]:
    if wanted is None:
        return tuple(have)
    missing = [m.value for m in wanted if m not in have]
    if missing:
        raise ConfigError(
            f"the model has no tower for {', '.join(missing)} (it has {', '.join(m.value for m in have)}): "
            "leave those out of --modalities"
        )
    return tuple(m for m in have if m in wanted)


def _run_pipeline(
    plan: EmbedPlan,
    table: Any,
    db: EmbeddingDB,
    summary: EmbedSummary,
    model_dir: str,
    fingerprint: str,
    dim: int,
    options: EmbedOptions,
) -> None:
    """Stream the plan's chunks through the actor pool(s) and upsert what comes back."""
    names = [m.value for m in plan.modalities]
    decode = {"samples_uri": plan.samples_uri, "samples_version": plan.samples_version, "model_dir": model_dir,
              "modalities": names}  # fmt: skip
    encode = {"model_dir": model_dir, "model_version": summary.model_version, "fingerprint": fingerprint,
              "modalities": names, "run_id": summary.run_id}  # fmt: skip
    chunks = ray.data.from_items(plan.chunks, override_num_blocks=len(plan.chunks))
    if options.gpu:
        # On the local Ray started here a missing GPU fails at once; a cluster gets the time to bring one.
        wait_for_resources([GPU_ACTOR], timeout_s=options.resource_timeout_s, what="embedding (--gpu)",
                           hint="leave out --gpu, or add a GPU node group to the cluster")  # fmt: skip
        decoders = options.decoders
        if not can_grow():  # leave a CPU for each GPU actor, or the decoders take them all and nothing encodes
            have = ray.cluster_resources()
            decoders = min(decoders or len(plan.chunks), max(1, int(have.get("CPU", 1) - have.get("GPU", 0))))
        ds = chunks.map_batches(
            DecodeRows, fn_constructor_kwargs=decode, batch_size=1, batch_format="numpy",
            compute=actor_pool(1, decoders, len(plan.chunks)), num_cpus=1,
        ).map_batches(
            EncodeRows, fn_constructor_kwargs=encode, batch_size=None, batch_format="numpy",
            compute=options.model_pool(len(plan.chunks)), num_gpus=1, num_cpus=1,  # = GPU_ACTOR
        )  # fmt: skip
    else:
        threads = max(1, int(options.cpus_per_actor))
        ds = chunks.map_batches(
            EmbedRows, fn_constructor_kwargs={"decode": decode, "encode": encode | {"threads": threads}},
            batch_size=1, batch_format="numpy", num_cpus=options.cpus_per_actor,
            compute=options.model_pool(len(plan.chunks)),
        )  # fmt: skip
    schema = embedding_schema(dim)
    writer = BufferedUpserter(table, schema, commit_rows=options.commit_rows, commit_seconds=options.commit_seconds)
    start = first = time.perf_counter()
    rate = Rate(summary.job, plan.rows_to_embed, "rows")
    block: pa.Table
    for i, block in enumerate(ds.iter_batches(batch_size=None, batch_format="pyarrow")):
        if i == 0:
            first = time.perf_counter()
            summary.startup_seconds = first - start
        ok = pc.equal(block["error"], "")
        good, bad = block.filter(ok), block.filter(pc.invert(ok))
        if good.num_rows:
            now = pa.array([datetime.now(UTC)] * good.num_rows, pa.timestamp("us", tz="UTC"))
            good = good.set_column(good.schema.get_field_index("written_at"), "written_at", now)
            writer.add(good.drop_columns(["error"]))
            summary.embedded.update(Counter(good["modality"].to_pylist()))
        if bad.num_rows:
            _record_failures(db, summary, bad)
        failed = sum(summary.failed.values())
        rate.update(sum(summary.embedded.values()) + failed, f"{failed:,} failed" if failed else "")
    writer.flush()
    summary.stream_seconds = time.perf_counter() - first


def _record_failures(db: EmbeddingDB, summary: EmbedSummary, bad: pa.Table) -> None:
    now = datetime.now(UTC)
    rows = [
        {"sample_id": r["sample_id"], "modality": r["modality"], "model_version": r["model_version"],
         "reason": r["error"], "embed_run": summary.run_id, "failed_at": now}
        for r in bad.select(["sample_id", "modality", "model_version", "error"]).to_pylist()
    ]  # fmt: skip
    db.record_failures(rows)
    summary.failed.update(Counter(r["modality"] for r in rows))
    room = 5 - len(summary.failure_examples)
    summary.failure_examples += [f"{r['sample_id']} {r['modality']}: {r['reason']}" for r in rows[: max(room, 0)]]
