"""The embedding store without Ray: version ids, filters, upserts, the serving alias, search, reads, metrics."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import s2sphere
import torch
from unigeoclip import Config, UniGeoCLIP
from unigeoclip.errors import ConfigError, InputError
from unigeoclip.models import unigeoclip as model_module
from unigeoclip.obs.metrics import push_run_metrics
from unigeoclip.vectors import EmbeddingDB, EmbeddingStore
from unigeoclip.vectors import versions as versions_module
from unigeoclip.vectors.filters import Filters, build_filter
from unigeoclip.vectors.index import IndexPolicy, compact, maintain_index
from unigeoclip.vectors.schema import FAILURES, FAILURES_SCHEMA, embedding_schema
from unigeoclip.vectors.versions import check_version_name, model_fingerprint, model_version_id
from unigeoclip.vectors.writer import BufferedUpserter, upsert

from ..helpers import DB_DIM, db_with, embedding_rows


def test_version_file_names_match_what_save_pretrained_writes() -> None:
    for name in ("CONFIG_FILE", "WEIGHTS_FILE", "TOWERS_FILE", "TOKENIZER_DIR"):
        assert getattr(versions_module, name) == getattr(model_module, name)


def test_model_version_is_stable_across_copies_and_changes_with_the_weights(tiny_cfg: Config, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = UniGeoCLIP.from_config(tiny_cfg)
    a = model.save_pretrained(tmp_path / "a")
    shutil.copytree(a, tmp_path / "copy")
    assert model_version_id(a) == model_version_id(tmp_path / "copy")
    assert model_version_id(a).startswith("tiny-") and len(model_version_id(a)) == len("tiny-") + 12
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    b = model.save_pretrained(tmp_path / "b")
    assert model_fingerprint(a) != model_fingerprint(b)
    with pytest.raises(Exception, match="not a UniGeoCLIP model directory"):
        model_fingerprint(tmp_path)
    with pytest.raises(InputError, match="not a valid name"):
        check_version_name("v1; DROP TABLE")


def test_filters_compose_and_bad_values_say_how_to_fix_them() -> None:
    where = build_filter(modality=["aerial", "text"], bbox=(10, 170, 20, -170), year=2022, split="train")
    assert "modality IN ('aerial', 'text')" in where
    assert "(lon_deg >= 170.0 OR lon_deg <= -170.0)" in where  # crosses the antimeridian
    assert build_filter() is None
    for kwargs, message in [
        ({"modality": "sonar"}, "unknown modality"),
        ({"bbox": (20, 0, 10, 1)}, "lat_min <= lat_max"),
        ({"bbox": (0, 0, 1)}, "lat_min, lon_min, lat_max, lon_max"),
        ({"cell_prefix": "xyz"}, "not a valid S2 cell token"),
    ]:
        with pytest.raises(InputError, match=message):
            build_filter(**kwargs)


def test_upserts_are_idempotent_and_a_version_name_stays_bound_to_its_model(tmp_path: Path) -> None:
    rows = embedding_rows(400, "v1")
    db, table = db_with(tmp_path, rows)
    assert upsert(table, rows) == (0, 400)  # the same keys again: updated in place, nothing added
    writer = BufferedUpserter(table, embedding_schema(DB_DIM), commit_rows=150, commit_seconds=1e9)
    for start in range(0, 400, 50):
        writer.add(rows.slice(start, 50))
    writer.flush()
    assert writer.commits == 3 and writer.updated == 400
    assert table.count_rows() == 400
    keys = table.to_lance().to_table(columns=["sample_id", "modality"]).to_pylist()
    assert len({(k["sample_id"], k["modality"]) for k in keys}) == 400
    with pytest.raises(ConfigError, match="another model"):
        db.register_version("v1", fingerprint="0" * 64, model_dir="/other", embed_dim=DB_DIM, modalities=["aerial"])


def test_searches_read_only_the_published_snapshot(tmp_path: Path) -> None:
    rows = embedding_rows(400, "v1")
    db, table = db_with(tmp_path, rows.slice(0, 200))
    with pytest.raises(FileNotFoundError, match="run `unigeoclip embed"):
        EmbeddingStore.open(db)
    db.publish("v1")
    store = EmbeddingStore.open(tmp_path / "db")
    upsert(table, rows.slice(200))  # written, not yet published
    assert len(store) == 200 and len(EmbeddingStore.open(db)) == 200
    assert len(EmbeddingStore.open(db, model_version="v1")) == 400  # a version by name: its latest rows
    assert not store.refresh()
    db.publish("v1")
    assert store.refresh() and len(store) == 400
    compact(table, keep_versions=timedelta(0))  # prunes every old version but the tagged, published one
    assert len(EmbeddingStore.open(db)) == 400  # the published snapshot is tagged, so it survives


def test_one_filters_type_selects_the_same_rows_in_sql_and_in_numpy(tmp_path: Path) -> None:
    """What the store's searches ask LanceDB (``to_sql``) and what the service's snapshot computes (``mask``)."""
    rows = embedding_rows(2000, "v1")
    _, table = db_with(tmp_path, rows)
    cols = {c: rows[c].to_numpy(zero_copy_only=False) for c in ("modality", "lat_deg", "lon_deg", "year", "split")}
    cols["cell_id"] = rows["cell_id"].to_numpy().astype(np.uint64)
    paris = s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(48.85, 2.35)).parent(10)
    cases = [
        {"modality": "text"},
        {"modality": ["aerial", "text"], "year": 2022, "split": "train"},
        {"bbox": (48.0, 2.0, 49.5, 3.0), "year": [2021, 2023]},
        {"bbox": (-40.0, 170.0, -30.0, 152.0)},  # across the antimeridian: Sydney (151.2 E) is west of its end
        {"cell_prefix": paris.to_token(), "modality": "aerial"},
        {"split": ["test_year"]},
    ]
    for kwargs in cases:
        f = Filters.parse(**kwargs)
        selected = table.to_lance().to_table(columns=["sample_id", "modality"], filter=f.to_sql())
        want = sorted(zip(selected["sample_id"].to_pylist(), selected["modality"].to_pylist(), strict=True))
        mask = f.mask(modality=cols["modality"], lat_deg=cols["lat_deg"], lon_deg=cols["lon_deg"],
                      cell_id=cols["cell_id"], year=cols["year"], split=cols["split"])  # fmt: skip
        got = sorted(zip(rows["sample_id"].to_numpy(zero_copy_only=False)[mask], cols["modality"][mask], strict=True))
        assert got == want and (len(want) > 0 or kwargs == {"split": ["test_year"]}), kwargs
    assert Filters.parse().to_sql() is None and Filters.parse().mask(**cols).all()


def test_search_with_filters_matches_brute_force(tmp_path: Path) -> None:
    rows = embedding_rows(2000, "v1")
    db, _ = db_with(tmp_path, rows)
    db.publish("v1")
    store = EmbeddingStore.open(db)
    vec = rows["vector"].combine_chunks().flatten().to_numpy().reshape(-1, DB_DIM)
    queries = np.random.default_rng(1).standard_normal((3, DB_DIM)).astype(np.float32)
    paris = s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(48.85, 2.35)).parent(9)
    cases = [
        ({}, np.ones(len(vec), bool)),
        ({"modality": "text"}, np.asarray(rows["modality"].to_pylist()) == "text"),
        ({"bbox": (48.0, 2.0, 49.5, 3.0), "year": [2021, 2023]},
         (rows["lat_deg"].to_numpy() > 48) & np.isin(rows["year"].to_numpy(), [2021, 2023])),
        ({"cell_prefix": paris.to_token()},
         np.asarray([paris.contains(s2sphere.CellId.from_token(t)) for t in rows["cell_token"].to_pylist()])),
    ]  # fmt: skip
    for filters, mask in cases:
        hits = store.search(queries, k=5, **filters)
        assert hits.num_rows == 15
        for qi, q in enumerate(queries):
            sims = np.where(mask, vec @ (q / np.linalg.norm(q)), -np.inf)
            want = np.argsort(-sims)[:5]
            got = hits.filter(pa.compute.equal(hits["query_index"], qi))
            keys = list(zip(got["sample_id"].to_pylist(), got["modality"].to_pylist(), strict=True))
            assert keys == [(rows["sample_id"][i].as_py(), rows["modality"][i].as_py()) for i in want], filters
            np.testing.assert_allclose(got["score"].to_numpy(), sims[want], atol=1e-5)
    one = store.search(vec[7], k=1, with_vectors=True)
    assert one["sample_id"][0].as_py() == rows["sample_id"][7].as_py() and one.num_rows == 1
    with pytest.raises(InputError, match="embeds to 16"):
        store.search(np.ones(8), k=1)
    with pytest.raises(InputError, match="no ANN index"):
        store.search(vec[0], exact=False)
    got = store.get(["item3", "item5"], modality="text")
    assert sorted(got["sample_id"].to_pylist()) == ["item3", "item5"] and set(got["modality"].to_pylist()) == {"text"}
    assert store.count(modality="aerial") == 1000


def test_run_figures_go_to_a_textfile_when_the_gateway_is_unreachable(tmp_path: Path) -> None:
    figures = {"rows_embedded": 12, "rows_skipped": 3, "rows_failed": 0, "seconds": 1.5}
    where = push_run_metrics("reembed", figures, labels={"model_version": "v1"}, pushgateway="http://127.0.0.1:9",
                             textfile=tmp_path / "m" / "reembed.prom")  # fmt: skip
    assert "failed" in where and "written to" in where
    text = (tmp_path / "m" / "reembed.prom").read_text()
    assert 'unigeoclip_reembed_rows_embedded{model_version="v1"} 12.0' in text
    assert "unigeoclip_reembed_last_run_timestamp_seconds" in text


def test_run_figures_breakdowns_and_a_textfile_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A breakdown becomes one gauge labelled ``kind``; a folder (node-exporter's) gets one file per job; the
    environment's setting wins over the job's own default place."""
    folder = tmp_path / "textfiles"
    folder.mkdir()
    monkeypatch.delenv("UNIGEOCLIP_PUSHGATEWAY", raising=False)
    monkeypatch.setenv("UNIGEOCLIP_METRICS_TEXTFILE", str(folder))
    figures = {"rows_written": 5, "rejects_by_reason": {"bad_year": 2, "duplicate": 1}}
    where = push_run_metrics("ingest", figures, labels={"store": "s"}, default_textfile=tmp_path / "own.prom")
    assert where == f"written to {folder / 'unigeoclip_ingest.prom'}" and not (tmp_path / "own.prom").exists()
    text = (folder / "unigeoclip_ingest.prom").read_text()
    assert 'unigeoclip_ingest_rejects_by_reason{kind="bad_year",store="s"} 2.0' in text
    assert 'unigeoclip_ingest_rows_written{store="s"} 5.0' in text
    monkeypatch.delenv("UNIGEOCLIP_METRICS_TEXTFILE")
    unwritable = tmp_path / "file"
    unwritable.write_text("")
    where = push_run_metrics("ingest", figures, default_textfile=unwritable / "x.prom")  # under a file: fails
    assert where.startswith("not written to"), "a metrics failure never fails the job"


def test_serving_refuses_a_model_directory_rewritten_since_its_version_was_embedded(
    tmp_path: Path, tiny_model: UniGeoCLIP
) -> None:
    """The encoder's model lookup checks the recorded directory's fingerprint, as the embedding job does."""
    from unigeoclip.serve.versions import model_dir_for

    model_dir = tiny_model.save_pretrained(tmp_path / "model")
    db = EmbeddingDB(tmp_path / "db")
    db.register_version("v1", fingerprint=model_fingerprint(model_dir), model_dir=str(model_dir), embed_dim=32,
                        modalities=["coords"])  # fmt: skip
    assert model_dir_for(db, "v1", None) == model_dir
    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    with torch.no_grad():  # the run directory's model rewritten in place (a resumed run exporting again)
        next(tiny_model.parameters()).add_(1.0)
    tiny_model.save_pretrained(model_dir)
    with pytest.raises(ConfigError, match="no longer holds model version 'v1'"):
        model_dir_for(db, "v1", None)
    assert model_dir_for(db, "v1", copy) == copy  # an intact copy given as --model still serves


def test_a_database_from_before_the_id_rename_still_reads_and_is_renamed_when_written(tmp_path: Path) -> None:
    """Databases written when the id column was ``item_id``: readers see ``sample_id`` (the published snapshot is
    not touched), the next writer renames the column in place (no vector rewritten), the old snapshot stays readable."""
    rows = embedding_rows(400, "v1")
    db, table = db_with(tmp_path, rows.slice(0, 200))
    policy = IndexPolicy(min_rows=100, rows_per_partition=50)
    maintain_index(table, policy)  # the BTree on the id column, as an old run built it
    table.alter_columns({"path": "sample_id", "rename": "item_id"})  # -> the old layout
    legacy = pa.schema([("item_id" if f.name == "sample_id" else f.name, f.type) for f in FAILURES_SCHEMA])
    db.conn.create_table(FAILURES, pa.table({"item_id": ["item1"], "modality": ["text"], "model_version": ["v1"],
                         "reason": ["bad"], "embed_run": ["r"], "failed_at": [None]}, schema=legacy))  # fmt: skip
    db.publish("v1")
    assert "item_id" in db.conn.open_table("embeddings__v1").schema.names

    old = EmbeddingStore.open(tmp_path / "db", policy=policy)
    query = rows["vector"][0].values.to_numpy()
    hits = old.search(query, k=3, exact=True)
    assert hits.column_names[2] == "sample_id" and hits["sample_id"][0].as_py() == rows["sample_id"][0].as_py()
    got = old.get(["item3"], modality="text")
    assert got["sample_id"].to_pylist() == ["item3"] and got.num_rows == 1
    assert "sample_id" in old.scan().column_names and "item_id" not in old.scan().column_names
    assert db.failures()["sample_id"].to_pylist() == ["item1"]
    assert "item_id" in db.conn.open_table("embeddings__v1").schema.names  # reading changed nothing

    table = db.register_version("v1", fingerprint="f" * 64, model_dir="/m", embed_dim=DB_DIM, modalities=["aerial"])
    assert "sample_id" in table.schema.names and "item_id" not in table.schema.names
    assert upsert(table, rows.slice(200)) == (200, 0)  # new rows under the new name, beside the renamed old ones
    assert maintain_index(table, policy).startswith("IVF")
    db.record_failures([{"sample_id": "item9", "modality": "aerial", "model_version": "v1", "reason": "x",
                         "embed_run": "r2", "failed_at": None}])  # fmt: skip
    assert sorted(db.failures()["sample_id"].to_pylist()) == ["item1", "item9"]
    db.publish("v1")
    assert len(old) == 200 and old.get("item3")["sample_id"].to_pylist() == ["item3", "item3"]  # still pinned
    assert old.refresh() and len(old) == 400 and old.get(["item150"])["sample_id"].to_pylist() == ["item150"] * 2
