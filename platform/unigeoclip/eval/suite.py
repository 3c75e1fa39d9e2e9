"""The whole evaluation of one model on one sample store: what ``unigeoclip evaluate`` runs.

Retrieval over every directed pair of the held-out split (recall@k and the top hit's
geolocation), multimodal ensembles, the geocell protocol, linear probes of the
coordinate encoder against raw coordinates and GeoCLIP, the optional depth ablation
(other model directories, e.g. the same config with ``model.coords.depth: 0``), and the
pictures. :func:`evaluate` returns the numbers; :mod:`.report` writes them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..geo.bbox import BBox
from ..geo.s2 import stable_fraction
from ..modality import Modality
from ..models import UniGeoCLIP
from ..obs.progress import Rate, polled
from ..samples.store import SampleStore
from ..sources.earth import is_landscape
from .embeddings import SplitEmbeddings, encode_split, read_locations_from_db, read_split_from_db
from .geocells import CellGallery, GeocellResult, cell_gallery, geolocate, padded_bbox
from .peers import LocationFeatures, coords_features, geoclip_features, raw_features, stored_coords_features
from .pictures import pca_map, recall_heatmap, tsne_modalities
from .probes import BlockSplit, ProbeResult, probe, spatial_blocks
from .retrieval import DEFAULT_KS, DEFAULT_THRESHOLDS_KM, PairRecall, ensemble_retrieval, recall_matrix
from .targets import location_targets

Ensemble = tuple[tuple[Modality, ...], Modality]
PEER_FEATURES: dict[str, LocationFeatures] = {"raw": raw_features, "geoclip": geoclip_features}
PEERS = tuple(PEER_FEATURES)


def parse_ensemble(spec: str) -> Ensemble:
    """``"aerial+text->coords"`` -> ``((AERIAL, TEXT), COORDS)``."""
    query, sep, target = spec.partition("->")
    if not sep or not query.strip() or not target.strip():
        raise InputError(f"an ensemble is QUERY[+QUERY...]->TARGET, e.g. aerial+text->coords; got {spec!r}")
    mods = tuple(Modality.parse(m.strip()) for m in query.split("+"))
    tgt = Modality.parse(target.strip())
    if tgt in mods or len(set(mods)) != len(mods):
        raise InputError(f"ensemble {spec!r}: query modalities must be distinct and differ from the target")
    return mods, tgt


@dataclass(frozen=True)
class EvalOptions:
    """What ``evaluate`` measures and on which split (the flags of ``unigeoclip evaluate``)."""

    split: str = "test_year"
    ks: tuple[int, ...] = DEFAULT_KS
    thresholds_km: tuple[float, ...] = DEFAULT_THRESHOLDS_KM
    ensembles: tuple[Ensemble, ...] = ()  # on top of "all other modalities -> each target"
    max_samples: int | None = None
    db: str | None = None
    model_version: str | None = None
    geocell_max_cells: int = 20_000
    geocell_level: int | None = None
    probe_max_points: int = 5_000
    probe_block_level: int | None = None
    peers: tuple[str, ...] = PEERS
    ablation_models: tuple[Path, ...] = ()
    map_bbox: BBox | None = None
    map_width: int = 160
    tsne_places: int = 12
    pictures: bool = True
    seed: int = 0


@dataclass
class AblationResult:
    """One ablation model evaluated beside the main one."""

    model_dir: str
    coords_depth: int
    mean_r1: float
    coords_r1: dict[str, float]  # pairs involving coords
    probe: ProbeResult


@dataclass
class GroupResult:
    """Retrieval and probes on one kind of sample only (the Earth source's landscape samples)."""

    samples: int
    retrieval: list[PairRecall]
    probe_points: int
    probes: list[ProbeResult]


@dataclass
class EvalResult:
    """Every figure of one evaluation: retrieval, ensembles, geolocation, probes, peers and ablations."""

    model_dir: str
    store: str
    split: str
    samples: int
    retrieval: list[PairRecall]
    ensembles: list[PairRecall]
    gallery: CellGallery | None
    geocells: list[GeocellResult]
    probe_split: BlockSplit | None
    probe_points: int
    probes: list[ProbeResult]
    ablations: list[AblationResult]
    groups: dict[str, GroupResult] = field(default_factory=dict)  # other kinds of sample, reported apart
    pictures: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    options: EvalOptions = field(default_factory=EvalOptions)


class _Timer:
    """Wall seconds per part (a part entered twice adds up), and the progress line's count of parts done."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.rate = Rate("evaluate", None, "parts")  # its total is set once the model and the split are read
        self.done = 0
        self.current = ""

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        self.current = name
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            self.done += 1

    def progress(self) -> tuple[int, str]:
        """``(parts done, the part running)`` for the progress line."""
        return self.done, f"now: {self.current}"


def planned_parts(o: EvalOptions, *, has_coords: bool, landscape: bool) -> int:
    """How many timed parts :func:`evaluate` runs: the progress line's total (and its ETA's)."""
    parts = 4  # load model, embed split, retrieval, ensembles
    if has_coords:  # geocells, probe targets, a probe of the model and of each peer, each ablation
        parts += 3 + len(o.peers) + len(o.ablation_models)
    return parts + int(landscape) + int(o.pictures)


def store_locations(store: SampleStore, *, landscape: bool | None = None) -> np.ndarray:
    """``(N, 2)`` distinct locations of the store's current samples (every split and year); ``landscape``
    True or False keeps only the Earth source's landscape samples, or only the others."""
    table = store.samples().to_table(columns=["lat_deg", "lon_deg", "current", "source_id"])
    keep = np.asarray(table.column("current").to_numpy(zero_copy_only=False), dtype=bool)
    if landscape is not None:
        keep &= landscape_mask(table.column("source_id").to_pylist()) == landscape
    latlon = np.stack([table.column("lat_deg").to_numpy(), table.column("lon_deg").to_numpy()], axis=1)[keep]
    return np.unique(latlon.astype(np.float64), axis=0)


def landscape_mask(source_ids: Sequence[str]) -> np.ndarray:
    """``(N,)`` bool: which of the source ids are the Earth source's landscape samples."""
    return np.array([is_landscape(str(s)) for s in source_ids], dtype=bool)


def _split_landscape(store: SampleStore, split: SplitEmbeddings) -> np.ndarray:
    """``(N,)`` bool: which of the split's samples are landscape samples."""
    table = store.samples().to_table(columns=["sample_id", "source_id"], filter="current = true")
    source = dict(zip(table.column("sample_id").to_pylist(), table.column("source_id").to_pylist(), strict=True))
    return landscape_mask([source.get(str(i), "") for i in split.sample_ids])


def probe_points(latlon: np.ndarray, max_points: int, seed: int = 0) -> np.ndarray:
    """At most ``max_points`` of the locations, chosen by a stable hash (the same subset for every model)."""
    if len(latlon) <= max_points:
        return latlon
    keys = [stable_fraction(f"{a:.6f},{b:.6f}", f"probe:{seed}") for a, b in latlon]
    return latlon[np.sort(np.argsort(keys)[:max_points])]


def default_ensembles(split: SplitEmbeddings) -> list[Ensemble]:
    """For each target modality: every other modality present in the split, together (the paper's column)."""
    mods = [m for m in Modality if m in split.present and split.present[m].any()]
    return [(tuple(q for q in mods if q is not t), t) for t in mods if len(mods) > 2]


def _embed(model: UniGeoCLIP, model_dir: Path, store: SampleStore, o: EvalOptions) -> SplitEmbeddings:
    if o.db is not None:
        split = read_split_from_db(
            o.db, o.split, model_dir=model_dir, model_version=o.model_version, modalities=model.modalities
        )
        return split if o.max_samples is None else split.subset(np.arange(min(o.max_samples, len(split))))
    return encode_split(model, store, o.split, max_samples=o.max_samples)


def evaluate(model_dir: str | Path, store: SampleStore | str, out: str | Path, options: EvalOptions) -> EvalResult:
    """Every metric (and picture, unless ``options.pictures`` is False) of one model; pictures go to ``out``.

    A progress line (parts done of all, the part running, ETA) is logged ten seconds in, then every minute.
    """
    timer = _Timer()
    with polled(timer.rate, timer.progress):
        return _evaluate(Path(model_dir), store, Path(out), options, timer)


def _evaluate(model_dir: Path, store: SampleStore | str, out: Path, o: EvalOptions, timer: _Timer) -> EvalResult:
    store = store if isinstance(store, SampleStore) else SampleStore(store)
    out.mkdir(parents=True, exist_ok=True)
    with timer("load model"):
        model = UniGeoCLIP.from_pretrained(model_dir)
        name = f"unigeoclip ({model.config.name})"
    with timer("embed split"):
        split = _embed(model, model_dir, store, o)
    landscape = _split_landscape(store, split)
    other = split.subset(np.flatnonzero(landscape)) if landscape.any() else None
    if landscape.any():  # the main figures stay those of places, comparable with a store without landscape
        split = split.subset(np.flatnonzero(~landscape))
    if len(split) < 2:
        raise InputError(f"split {o.split!r} has {len(split)} sample(s): retrieval needs at least 2")
    geo_args: dict[str, Any] = {"latlon": split.latlon, "thresholds_km": o.thresholds_km}
    with timer("retrieval"):
        retrieval = recall_matrix(split.embeddings, split.present, o.ks, **geo_args)
    with timer("ensembles"):
        wanted = list(dict.fromkeys([*default_ensembles(split), *o.ensembles]))
        ensembles = []
        for query, target in wanted:
            if all(m in split.present for m in (*query, target)):
                r = ensemble_retrieval(split.embeddings, split.present, query, target, ks=o.ks, **geo_args)
                if r is not None:
                    ensembles.append(r)
    locations = store_locations(store, landscape=False if other is not None else None)
    has_coords = Modality.COORDS in model.modalities
    timer.rate.total = planned_parts(o, has_coords=has_coords, landscape=other is not None)
    gallery, geocells = None, []
    psplit, points = None, probe_points(locations, o.probe_max_points, o.seed)
    probes: list[ProbeResult] = []
    ablations: list[AblationResult] = []
    own = coords_features(model)  # the probes' points are the store's: read them where the embedding job wrote them
    if has_coords and o.db is not None:
        db, version = o.db, o.model_version
        own = stored_coords_features(model, lambda: read_locations_from_db(db, model_dir=model_dir,
                                                                            model_version=version))  # fmt: skip
    if has_coords:
        with timer("geocells"):
            gallery = cell_gallery(model, padded_bbox(locations), max_cells=o.geocell_max_cells, level=o.geocell_level)
            queries = [
                m for m in Modality if m is not Modality.COORDS and m in split.present and split.present[m].any()
            ]
            for q in [(m,) for m in queries] + ([tuple(queries)] if len(queries) > 1 else []):
                if (g := geolocate(split, gallery, q, o.thresholds_km)) is not None:
                    geocells.append(g)
        with timer("probe targets"):
            targets = location_targets(points[:, 0], points[:, 1])
            psplit = spatial_blocks(points, level=o.probe_block_level)
        for feature_name, fn in probe_features(name, own, o.peers):
            with timer(f"probe {feature_name.split()[0]}"):
                probes.append(probe(feature_name, fn(points), targets, psplit))
        for ablated in o.ablation_models:
            with timer("ablation"):
                ablations.append(_ablation(Path(ablated), store, o, points, targets, psplit))
    groups: dict[str, GroupResult] = {}
    if other is not None:
        with timer("landscape"):
            groups["landscape"] = _group(model, name, store, other, o, has_coords, own)
    pictures: dict[str, str] = {}
    if o.pictures:
        with timer("pictures"):
            pictures["retrieval"] = recall_heatmap(retrieval, out / "retrieval_r1.png").name
            if has_coords:
                encoders: list[tuple[str, LocationFeatures]] = [(name, coords_features(model))]
                if "geoclip" in o.peers:
                    encoders.append(("GeoCLIP", geoclip_features))
                bbox = o.map_bbox or padded_bbox(locations)
                path = pca_map(encoders, bbox, out / "coords_pca_map.png", width=o.map_width, points=locations)
                pictures["pca_map"] = path.name
            pictures["tsne"] = tsne_modalities(split, out / "tsne_modalities.png", places=o.tsne_places).name
    return EvalResult(
        model_dir=str(model_dir), store=str(store.root), split=o.split, samples=len(split), retrieval=retrieval,
        ensembles=ensembles, gallery=gallery, geocells=geocells, probe_split=psplit, probe_points=len(points),
        probes=probes, ablations=ablations, groups=groups, pictures=pictures, seconds=timer.seconds, options=o,
    )  # fmt: skip


def probe_features(name: str, own: LocationFeatures, peers: Sequence[str]) -> list[tuple[str, LocationFeatures]]:
    """The probes' feature functions in their rows' order: the model's own (``name``), then each peer's."""
    return [(name, own), *[(p, PEER_FEATURES[p]) for p in peers]]


def _group(
    model: UniGeoCLIP,
    name: str,
    store: SampleStore,
    split: SplitEmbeddings,
    o: EvalOptions,
    has_coords: bool,
    own: LocationFeatures,
) -> GroupResult:
    """Retrieval among the landscape samples of the split, probes on every landscape location of the store."""
    retrieval = recall_matrix(split.embeddings, split.present, o.ks, latlon=split.latlon, thresholds_km=o.thresholds_km)
    probes: list[ProbeResult] = []
    points = probe_points(store_locations(store, landscape=True), o.probe_max_points, o.seed)
    if has_coords and len(points) >= 20:
        targets = location_targets(points[:, 0], points[:, 1])
        psplit = spatial_blocks(points, level=o.probe_block_level)
        for feature_name, fn in probe_features(name, own, o.peers):
            probes.append(probe(feature_name, fn(points), targets, psplit))
    return GroupResult(len(split), retrieval, len(points), probes)


def _ablation(
    model_dir: Path,
    store: SampleStore,
    o: EvalOptions,
    points: np.ndarray,
    targets: dict[str, np.ndarray],
    psplit: BlockSplit,
) -> AblationResult:
    """Another model (e.g. coords depth 0) on the same split and probe points: retrieval and probe summary."""
    model = UniGeoCLIP.from_pretrained(model_dir)
    split = encode_split(model, store, o.split, max_samples=o.max_samples)
    pairs = recall_matrix(split.embeddings, split.present, (1,))
    coords_r1 = {r.key: r.recall[1] for r in pairs if Modality.COORDS in (r.query, r.target)}
    depth = model.config.model.coords.depth
    name = f"unigeoclip ({model.config.name}, coords depth {depth})"
    return AblationResult(
        str(model_dir),
        depth,
        float(np.mean([r.recall[1] for r in pairs])) if pairs else float("nan"),
        coords_r1,
        probe(name, coords_features(model)(points), targets, psplit),
    )


def chance_ratios(results: Sequence[PairRecall], k: int = 1) -> dict[str, float]:
    """Recall@k over chance per pair."""
    return {r.key: r.recall[k] / r.chance(k) for r in results}
