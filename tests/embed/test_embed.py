"""The embedding jobs end to end: the tiny store, tiny trained models, a local Ray cluster, LanceDB on disk."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import pytest
import ray
import torch
from unigeoclip import Config, Modality, UniGeoCLIP
from unigeoclip.embed import EmbedOptions, embed, reembed
from unigeoclip.ingest.pipeline import IngestSummary, ingest
from unigeoclip.modality import present_key
from unigeoclip.preprocess.batch import DecodeBatch
from unigeoclip.preprocess.spec import PreprocessSpec
from unigeoclip.samples.store import SampleStore
from unigeoclip.sources.synthetic.source import SyntheticSource, SyntheticSourceConfig
from unigeoclip.vectors import EmbeddingDB, EmbeddingStore
from unigeoclip.vectors.schema import ALIASES, table_name
from unigeoclip.vectors.versions import model_version_id

from ..helpers import expected_keys, store_copy, stored_keys, stored_rows, train_tiny

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
MODALITIES = [m.value for m in Modality]
SMALL_COMMITS = EmbedOptions(batch_size=8, commit_rows=40)


@pytest.fixture(scope="module")
def models(tiny_world_cfg: Config, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("models")
    return train_tiny(tiny_world_cfg, root / "v1", steps=4, seed=1), train_tiny(
        tiny_world_cfg, root / "v2", steps=4, seed=2
    )


@pytest.fixture(scope="module")
def embedded(
    tiny_store: tuple[SampleStore, IngestSummary], models: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, object]:
    """The tiny store embedded once with the first model: (db directory, summary). Writers copy it."""
    db = tmp_path_factory.mktemp("emb") / "db"
    summary = embed(models[0], tiny_store[0], db, options=SMALL_COMMITS)
    return db, summary


def test_every_present_modality_gets_one_row_equal_to_model_encode(
    tiny_store: tuple[SampleStore, IngestSummary], models: tuple[Path, Path], embedded: tuple[Path, object]
) -> None:
    store, (db, summary) = tiny_store[0], embedded
    version = model_version_id(models[0])
    keys = stored_keys(db, version)
    assert len(keys) == len(set(keys)) and set(keys) == expected_keys(store)
    assert summary.complete and summary.published and summary.serving == version and not summary.failed

    model = UniGeoCLIP.from_pretrained(models[0])
    samples = store.samples().to_table(filter="current = true")
    decoded = DecodeBatch(PreprocessSpec.of(model.config), augment=False)(samples)
    ids = samples["sample_id"].to_pylist()
    table = stored_rows(db, version)
    vectors = {(i, m): v for i, m, v in zip(table["sample_id"].to_pylist(), table["modality"].to_pylist(),
                                            table["vector"].to_pylist(), strict=True)}  # fmt: skip
    encoded = {}
    for m in Modality:
        rows = np.flatnonzero(decoded[present_key(m)])
        with torch.no_grad():
            if m is Modality.TEXT:
                want = model.encode(m, [samples["text"][int(i)].as_py() for i in rows])
            else:
                want = model.encode(m, torch.from_numpy(decoded[m.value][rows]))
        got = np.stack([vectors[(ids[i], m.value)] for i in rows])
        np.testing.assert_allclose(got, want.numpy(), atol=1e-5, err_msg=m.value)
        encoded[m] = (rows, got)

    served = EmbeddingStore.open(db)
    rows, got = encoded[Modality.AERIAL]
    hit = served.search(got[:3], k=1, modality="aerial")
    assert hit["sample_id"].to_pylist() == [ids[i] for i in rows[:3]]
    assert hit["score"].to_numpy() == pytest.approx(1.0, abs=1e-5)

    version_before = EmbeddingDB(db).embeddings(version).version
    again = embed(models[0], store, db, options=SMALL_COMMITS)  # a rerun: nothing to do, nothing written
    assert sum(again.embedded.values()) == 0 and sum(again.skipped.values()) == len(keys)
    assert EmbeddingDB(db).embeddings(version).version == version_before and not again.published
    assert stored_rows(db, version).sort_by("sample_id").equals(table.sort_by("sample_id"))


def test_reembed_embeds_only_a_new_year_and_retires_superseded_samples(
    tiny_store: tuple[SampleStore, IngestSummary],
    tiny_world_cfg: Config,
    models: tuple[Path, Path],
    embedded: tuple[Path, object],
    tmp_path: Path,
) -> None:
    store = store_copy(tiny_store[0], tmp_path / "store")
    db = Path(shutil.copytree(embedded[0], tmp_path / "db"))
    version = model_version_id(models[0])
    before = {(r["sample_id"], r["modality"]): r for r in stored_rows(db, version).to_pylist()}
    pinned = EmbeddingDB(db).alias()["table_version"]

    new_year = tiny_world_cfg.updated({"data": {"sources": {"synthetic": {"years": [2024]}}}})
    added = ingest(SyntheticSource(SyntheticSourceConfig.of(new_year.data), new_year.data), store, new_year.data)
    assert added.written > 0
    gone = sorted({k[0] for k in before})[:2]
    store.mark_superseded(gone)  # as if newer content for their (cell, year) had arrived

    summary = reembed(store, db, options=SMALL_COMMITS)
    new = expected_keys(store) - {(i, m, r["content_hash"]) for (i, m), r in before.items()}
    assert {k[0].split("-")[1] for k in new} == {"2024"}
    assert sum(summary.embedded.values()) == len(new) and summary.retired == sum(k[0] in gone for k in before)
    keys = stored_keys(db, version)
    assert len(keys) == len(set(keys)) and set(keys) == expected_keys(store)
    after = {(r["sample_id"], r["modality"]): r for r in stored_rows(db, version).to_pylist()}
    for key, row in before.items():  # old rows are untouched: same vector, same run, same time
        if key[0] not in gone:
            assert after[key]["written_at"] == row["written_at"] and after[key]["vector"] == row["vector"]
    served = EmbeddingStore.open(db)
    assert served.table_version > pinned and served.count(year=2024) == len(new)
    assert served.count() == len(keys) and not served.get(gone).num_rows


def test_two_runs_started_together_on_one_database_take_turns(
    tiny_store: tuple[SampleStore, IngestSummary], models: tuple[Path, Path], tmp_path: Path
) -> None:
    """An embed and a reembed of the same model at once: the lease makes one wait for the other, so every row is
    embedded once (the second finds nothing left), no (item, modality) twice, and one serving alias."""
    db, version = tmp_path / "db", model_version_id(models[0])
    patient = EmbedOptions(batch_size=8, commit_rows=40, lease_wait_s=600)
    embed(models[0], tiny_store[0], db, options=patient, model_version=version)  # a version to reembed: served
    EmbeddingDB(db).embeddings(version).delete("true")  # ... with every row gone, so both runs have all to do
    runs: dict[str, object] = {}
    threads = [threading.Thread(target=lambda: runs.update(a=embed(models[0], tiny_store[0], db, options=patient))),
               threading.Thread(target=lambda: runs.update(b=reembed(tiny_store[0], db, options=patient)))]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert set(runs) == {"a", "b"}, "a run failed (see its traceback above)"
    done = sorted(sum(r.embedded.values()) for r in runs.values())  # type: ignore[attr-defined]
    keys = stored_keys(db, version)
    assert done == [0, len(expected_keys(tiny_store[0]))], f"the runs interleaved: {done}"
    assert len(keys) == len(set(keys)) and set(keys) == expected_keys(tiny_store[0])
    assert EmbeddingDB(db).conn.open_table(ALIASES).count_rows() == 1


def test_a_bad_input_is_recorded_and_the_rest_embedded(
    tiny_store: tuple[SampleStore, IngestSummary], models: tuple[Path, Path], embedded: tuple[Path, object],
    tmp_path: Path,
) -> None:  # fmt: skip
    store = store_copy(tiny_store[0], tmp_path / "store")
    db = Path(shutil.copytree(embedded[0], tmp_path / "db"))
    row = store.samples().to_table(filter="current = true AND aerial_present", limit=1).to_pylist()[0]
    row |= {"sample_id": row["sample_id"] + "-bad", "aerial": b"not an image", "aerial_hash": "0" * 32}
    lance.write_dataset(pa.Table.from_pylist([row], schema=store.samples().schema), store.samples_uri, mode="append")

    summary = reembed(store, db, options=SMALL_COMMITS)
    present = [m for m in MODALITIES if row[f"{m}_present"]]
    assert dict(summary.failed) == {"aerial": 1} and sum(summary.embedded.values()) == len(present) - 1
    assert not summary.complete and "not a readable image" in summary.failure_examples[0]
    failures = EmbeddingDB(db).failures().to_pylist()
    assert [(f["sample_id"], f["modality"]) for f in failures] == [(row["sample_id"], "aerial")]
    assert "decode" in failures[0]["reason"]


def test_a_killed_job_reruns_to_exactly_the_expected_rows_and_searches_never_see_it_half_done(
    tiny_store: tuple[SampleStore, IngestSummary], models: tuple[Path, Path], embedded: tuple[Path, object],
    tmp_path: Path,
) -> None:  # fmt: skip
    """Roll out a second model: SIGKILL its job mid-way, rerun it; a reader polls the serving store throughout."""
    store, db = tiny_store[0], Path(shutil.copytree(embedded[0], tmp_path / "db"))
    v1, v2 = model_version_id(models[0]), model_version_id(models[1])
    want = expected_keys(store)
    seen: list[tuple[str, int]] = []
    stop = threading.Event()

    def read_serving() -> None:
        while not stop.is_set():
            s = EmbeddingStore.open(db)
            hits = s.search(np.ones(s.embed_dim, np.float32), k=3, modality="text")
            seen.append((s.model_version, len(s) if hits.num_rows == 3 else -1))
            time.sleep(0.02)

    reader = threading.Thread(target=read_serving, daemon=True)
    reader.start()
    env = os.environ | {"RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    job = subprocess.Popen(
        [sys.executable, "jobs/embed.py", "--model", str(models[1]), "--store", store.root, "--db", str(db),
         "--commit-rows", "10", "--batch-size", "2", "--actors", "1", "--metrics-textfile", str(tmp_path / "m.prom")],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    partial = 0
    try:
        deadline = time.time() + 300
        while time.time() < deadline and job.poll() is None:
            edb = EmbeddingDB(db)
            partial = edb.embeddings(v2).count_rows() if edb.has_table(table_name(v2)) else 0
            if partial > 0:
                os.kill(job.pid, signal.SIGKILL)  # a real process death between (or during) commits
                break
            time.sleep(0.01)
    finally:
        job.kill()
        job.wait()
    assert job.returncode == -signal.SIGKILL, "the job finished before it could be killed"
    killed_rows = len(stored_keys(db, v2))
    assert 0 < killed_rows < len(want)
    assert EmbeddingDB(db).alias()["model_version"] == v1  # the half-embedded version does not serve

    summary = embed(models[1], store, db, options=SMALL_COMMITS)
    time.sleep(0.1)
    stop.set()
    reader.join(timeout=10)
    keys = stored_keys(db, v2)
    assert len(keys) == len(set(keys)) and set(keys) == want
    assert sum(summary.embedded.values()) == len(want) - killed_rows
    assert summary.published and summary.serving == v2 and summary.serving_before == v1
    assert {v for v, _ in seen} == {v1, v2} and seen[-1][0] == v2
    assert all(n == len(want) for _, n in seen), "a search saw a partial snapshot"
    assert seen.index((v2, len(want))) > max(i for i, (v, _) in enumerate(seen) if v == v1)  # switched once


def test_the_model_actors_module_leaves_lancedb_unimported() -> None:
    """A model actor unpickles ``embed.rows``: in a fresh interpreter that imports no LanceDB (over a second of CPU
    per actor), while the packages' names still resolve, lazily, to their modules' objects."""
    code = (
        "import sys\n"
        "import unigeoclip.embed.rows\n"
        "assert 'lancedb' not in sys.modules, 'embed.rows imported lancedb'\n"
        "import unigeoclip.embed as e, unigeoclip.vectors as v\n"
        "from unigeoclip.embed import job, scheduled\n"
        "from unigeoclip.vectors import db, index, search\n"
        "assert (e.embed, e.reembed, e.EmbedOptions, e.refresh) == (job.embed, job.reembed, job.EmbedOptions, "
        "scheduled.refresh)\n"
        "assert (v.EmbeddingDB, v.EmbeddingStore, v.DEFAULT_POLICY) == (db.EmbeddingDB, search.EmbeddingStore, "
        "index.DEFAULT_POLICY)\n"
        "try:\n    v.EmbeddingTable\nexcept AttributeError as exc:\n    assert 'EmbeddingTable' in str(exc)\n"
        "else:\n    raise AssertionError('an unknown name resolved')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
