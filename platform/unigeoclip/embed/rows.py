"""Ray Data transforms of the embedding job: store positions -> decoded inputs -> embedding rows.

``DecodeRows`` takes the planned rows from a pinned version of the sample store and
decodes only the wanted modalities, canonically (no augmentation), with the training
reader's own decoder. ``EncodeRows`` holds one model and turns each wanted modality of
a batch into unit vectors with ``model.encode``. On CPU one actor does both
(``EmbedRows``): no decoded tensors cross the object store; with GPUs they are two
pools, so the GPUs never wait for image decoding.

A sample whose modality cannot be decoded or encoded becomes a row with an ``error``
instead of a vector: the rest of the batch is embedded, the failure is recorded, and a
rerun retries it. "Cannot" means a ``ValueError``: what the decoders raise for bad bytes
(:class:`~unigeoclip.errors.InputError`, numpy's shape errors) and what the model raises for
inputs it refuses. Anything else is a bug and fails the job with its traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import s2sphere

from ..cluster.runtime import actor_device
from ..config import load_config
from ..errors import CheckpointError
from ..modality import Modality
from ..preprocess.batch import DecodeBatch, bool_column
from ..preprocess.spec import PreprocessSpec
from ..samples.positions import take_chunk
from ..vectors.schema import embedding_schema
from ..vectors.versions import CONFIG_FILE, model_fingerprint

META_COLUMNS = ["sample_id", "cell_token", "lat_deg", "lon_deg", "year", "split"]
# What each modality reads from the store (coords: the metadata): a run over some modalities reads only theirs.
PAYLOAD_COLUMNS = {
    Modality.AERIAL: ["aerial"],
    Modality.STREET: ["street"],
    Modality.DSM: ["dsm", "dsm_px"],
    Modality.TEXT: ["text"],
    Modality.COORDS: [],
}


def output_schema(dim: int) -> pa.Schema:
    """Embedding rows plus ``error`` ("" when the row has a vector)."""
    return embedding_schema(dim).append(pa.field("error", pa.string()))


class DecodeRows:
    """``{"rows": positions, "want": bitmasks}`` -> metadata, hashes, decoded inputs and per-modality want/error."""

    def __init__(self, *, samples_uri: str, samples_version: int, model_dir: str, modalities: Sequence[str]) -> None:
        import lance

        self.dataset = lance.dataset(samples_uri, version=samples_version)
        self.modalities = tuple(Modality(m) for m in modalities)
        cfg = load_config(Path(model_dir) / CONFIG_FILE)
        # Text is tokenized by the model itself (its saved tokenizer); the decoder handles pixels, heights and
        # coordinates, canonically (no augmentation), as the reader and the evaluation do.
        pixels: tuple[Modality, ...] = tuple(m for m in self.modalities if m is not Modality.TEXT)
        self.decoder = DecodeBatch(PreprocessSpec.of(cfg, modalities=pixels), augment=False)
        self.pixel_modalities = pixels
        self.columns = (
            META_COLUMNS
            + [c for m in self.modalities for c in PAYLOAD_COLUMNS[m]]
            + [f"{m.value}_{s}" for m in self.modalities for s in ("present", "hash")]
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A planned chunk -> metadata, content hashes, decoded inputs, per-modality ``want_*``/``error_*`` columns."""
        bits = np.concatenate([np.asarray(w, dtype=np.int64) for w in batch["want"]])
        table = take_chunk(self.dataset, batch, self.columns)
        n = table.num_rows
        want = {
            m: ((bits >> i) & 1).astype(bool) & bool_column(table, f"{m.value}_present")
            for i, m in enumerate(self.modalities)
        }
        errors = {m: np.full(n, "", dtype=object) for m in self.modalities}
        out: dict[str, np.ndarray] = {c: _column(table, c) for c in META_COLUMNS}
        for m in self.modalities:
            out[f"hash_{m.value}"] = _column(table, f"{m.value}_hash")
        if Modality.TEXT in self.modalities:
            out["text"] = _column(table, "text")
        if self.pixel_modalities:
            out.update(self._decode(table, want, errors))
        for m in self.modalities:
            out[f"want_{m.value}"] = want[m] & (errors[m] == "")
            out[f"error_{m.value}"] = errors[m]
        return out

    def _decode(
        self, table: pa.Table, want: dict[Modality, np.ndarray], errors: dict[Modality, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Decode the wanted modalities; on failure, find the (row, modality) that fails and decode the rest."""
        pixel_want = {m: want[m] for m in self.pixel_modalities}
        try:
            return self._decode_only(table, pixel_want)
        except ValueError:  # a bad stored input (isolated below; every other row still gets embedded)
            pass
        parts = []
        for i in range(table.num_rows):
            row = table.slice(i, 1)
            ok = {m: w[i : i + 1].copy() for m, w in pixel_want.items()}
            for m, w in ok.items():
                if not w[0]:
                    continue
                try:
                    self._decode_only(row, {k: (v if k is m else np.zeros(1, bool)) for k, v in ok.items()})
                except ValueError as exc:
                    errors[m][i] = f"decode: {type(exc).__name__}: {exc}"
                    w[0] = False
            parts.append(self._decode_only(row, ok))
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _decode_only(self, table: pa.Table, want: dict[Modality, np.ndarray]) -> dict[str, np.ndarray]:
        """The decoder sees a modality as present only where it is wanted (so nothing else is decoded)."""
        for m, w in want.items():
            name = f"{m.value}_present"
            table = table.set_column(table.schema.get_field_index(name), name, pa.array(w, pa.bool_()))
        decoded = self.decoder(table)
        return {m.value: decoded[m.value] for m in self.pixel_modalities}


class EncodeRows:
    """Decoded batch -> embedding rows (``output_schema``): one model per actor, loaded once."""

    def __init__(
        self,
        *,
        model_dir: str,
        model_version: str,
        fingerprint: str,
        modalities: Sequence[str],
        run_id: str,
        device: str | None = None,
        threads: int | None = None,
    ) -> None:
        import torch

        from ..models.unigeoclip import UniGeoCLIP

        if threads:
            torch.set_num_threads(threads)
        if model_fingerprint(model_dir) != fingerprint:
            raise CheckpointError(
                f"{model_dir} changed while the job ran (its fingerprint is no longer {fingerprint[:12]}): "
                "rerun the job with the model directory as it is now"
            )
        self.torch = torch
        # None: the GPU Ray gave this actor (num_gpus=1 in the --gpu pipeline), else the CPU
        self.model = UniGeoCLIP.from_pretrained(model_dir, device=device or actor_device())
        self.modalities = tuple(Modality(m) for m in modalities)
        self.version, self.run_id = model_version, run_id
        self.dim = self.model.embed_dim
        self.schema = output_schema(self.dim)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        """A decoded batch -> embedding rows per wanted modality; a failed row has a null vector and its ``error``."""
        parts = []
        for m in self.modalities:
            rows = np.flatnonzero(np.asarray(batch[f"want_{m.value}"], dtype=bool))
            vectors, errors = self._encode(m, batch, rows)
            failed = np.flatnonzero(np.asarray(batch[f"error_{m.value}"]) != "")
            parts.append(self._rows(batch, m, rows, vectors, errors))
            if len(failed):
                errs = np.asarray(batch[f"error_{m.value}"], dtype=object)[failed]
                parts.append(self._rows(batch, m, failed, np.zeros((len(failed), self.dim), np.float32), errs))
        return pa.concat_tables(parts) if parts else self.schema.empty_table()

    def _encode(self, m: Modality, batch: dict[str, np.ndarray], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(len(rows), D)`` vectors and per-row errors ("" = fine); a failing batch is retried row by row."""
        errors = np.full(len(rows), "", dtype=object)
        if not len(rows):
            return np.zeros((0, self.dim), np.float32), errors
        try:
            return self._forward(m, batch, rows), errors
        except ValueError:  # an input the model refuses: find the bad rows, keep the others
            pass
        out = np.zeros((len(rows), self.dim), np.float32)
        for j in range(len(rows)):
            try:
                out[j] = self._forward(m, batch, rows[j : j + 1])[0]
            except ValueError as exc:
                errors[j] = f"encode: {type(exc).__name__}: {exc}"
        return out, errors

    def _forward(self, m: Modality, batch: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
        torch = self.torch
        inputs: Any
        if m is Modality.TEXT:
            inputs = [str(t) for t in np.asarray(batch["text"], dtype=object)[rows]]
        else:
            inputs = torch.from_numpy(np.ascontiguousarray(np.asarray(batch[m.value])[rows]))
        with torch.inference_mode():
            z = self.model.encode(m, inputs)  # (B, D), unit norm
        return np.asarray(z.float().cpu().numpy(), dtype=np.float32)

    def _rows(
        self, batch: dict[str, np.ndarray], m: Modality, rows: np.ndarray, vectors: np.ndarray, errors: np.ndarray
    ) -> pa.Table:
        n = len(rows)

        def col(name: str) -> list[Any]:
            return np.asarray(batch[name], dtype=object)[rows].tolist()

        tokens = col("cell_token")
        ok = np.asarray(errors, dtype=object) == ""
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel())
        vector = pa.FixedSizeListArray.from_arrays(flat, self.dim, mask=pa.array(~ok))
        data = {
            "sample_id": col("sample_id"),
            "modality": [m.value] * n,
            "model_version": [self.version] * n,
            "content_hash": col(f"hash_{m.value}"),
            "cell_token": tokens,
            "cell_id": [s2sphere.CellId.from_token(t).id() for t in tokens],
            "lat_deg": col("lat_deg"),
            "lon_deg": col("lon_deg"),
            "year": [int(y) for y in col("year")],
            "split": col("split"),
            "vector": vector,
            "embed_run": [self.run_id] * n,
            "written_at": pa.nulls(n, pa.timestamp("us", tz="UTC")),
            "error": [str(e) for e in errors],
        }
        return pa.table(data, schema=self.schema)


class EmbedRows:
    """Decode and encode in one actor (the CPU path): positions in, embedding rows out."""

    def __init__(self, *, decode: dict[str, Any], encode: dict[str, Any]) -> None:
        self.decode = DecodeRows(**decode)
        self.encode = EncodeRows(**encode)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        """Planned positions -> embedding rows: :class:`DecodeRows` then :class:`EncodeRows` in this one actor."""
        return self.encode(self.decode(batch))


def _column(table: pa.Table, column: str) -> np.ndarray:
    values = table.column(column).to_pylist()
    return np.array(values, dtype=object if not values or isinstance(values[0], str | type(None)) else None)
