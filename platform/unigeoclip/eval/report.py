"""An evaluation as files: ``report.md`` (tables and the pictures) and ``metrics.json`` (every number)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..modality import Modality
from .retrieval import GeoAccuracy, PairRecall
from .suite import EvalResult

REPORT_FILE, METRICS_FILE = "report.md", "metrics.json"


def _km(t: float) -> str:
    return f"{t * 1000:g}m" if t < 1 else f"{t:g}km"


def _geo_json(geo: GeoAccuracy | None) -> dict[str, Any] | None:
    if geo is None:
        return None
    return {"acc": {_km(t): v for t, v in geo.acc.items()}, "median_km": geo.median_km, "mean_km": geo.mean_km}


def _pair_json(r: PairRecall) -> dict[str, Any]:
    return {
        "query": [m.value for m in r.queries_from],
        "target": r.target.value,
        "queries": r.queries,
        "gallery": r.gallery,
        "recall": {str(k): v for k, v in r.recall.items()},
        "recall_over_chance": {str(k): v / r.chance(k) for k, v in r.recall.items()},
        "geo": _geo_json(r.geo),
    }


def to_json(res: EvalResult) -> dict[str, Any]:
    """Every number of an evaluation as JSON-able dicts: the content of ``metrics.json``."""
    o = res.options
    out: dict[str, Any] = {
        "model": res.model_dir,
        "store": res.store,
        "split": res.split,
        "samples": res.samples,
        "retrieval": {r.key: _pair_json(r) for r in res.retrieval},
        "retrieval_mean_recall": {str(k): float(np.mean([r.recall[k] for r in res.retrieval])) for k in o.ks}
        if res.retrieval
        else {},
        "ensembles": {r.key: _pair_json(r) for r in res.ensembles},
        "geocells": None,
        "probes": None,
        "ablations": [],
        "pictures": res.pictures,
        "seconds": res.seconds,
        "seconds_total": sum(res.seconds.values()),
    }
    if res.gallery is not None:
        g = res.gallery
        out["geocells"] = {
            "level": g.level,
            "cells": len(g.tokens),
            "cell_km": g.cell_km,
            "bbox": list(g.bbox),
            "results": {r.key: {"queries": r.queries, "geo": _geo_json(r.geo)} for r in res.geocells},
        }
    if res.probe_split is not None:
        s = res.probe_split
        out["probes"] = {
            "points": res.probe_points,
            "block_level": s.level,
            "blocks": s.n_blocks,
            "test_points": int(s.test.sum()),
            "features": {
                p.features: {"dim": p.dim, "mean_r2": p.mean_r2, "r2": p.r2, "alpha": p.alpha} for p in res.probes
            },
        }
    out["groups"] = {
        name: {
            "samples": g.samples,
            "retrieval": {r.key: _pair_json(r) for r in g.retrieval},
            "retrieval_mean_recall": {str(k): float(np.mean([r.recall[k] for r in g.retrieval])) for k in o.ks}
            if g.retrieval
            else {},
            "probe_points": g.probe_points,
            "probe": next((p.mean_r2 for p in g.probes if p.features.startswith("unigeoclip")), None),
            "probes": {p.features: {"dim": p.dim, "mean_r2": p.mean_r2, "r2": p.r2} for p in g.probes},
        }
        for name, g in res.groups.items()
    }
    for a in res.ablations:
        out["ablations"].append(
            {
                "model": a.model_dir,
                "coords_depth": a.coords_depth,
                "mean_r1": a.mean_r1,
                "coords_r1": a.coords_r1,
                "probe_mean_r2": a.probe.mean_r2,
                "probe_r2": a.probe.r2,
            }
        )
    return out


def _f(v: float, digits: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _pair_rows(results: Sequence[PairRecall], ks: Sequence[int], thresholds: Sequence[float]) -> str:
    head = [
        "query -> target",
        "queries",
        "gallery",
        *[f"R@{k}" for k in ks],
        "R@1 / chance",
        *[f"Acc@{_km(t)}" for t in thresholds],
        "median km",
    ]
    rows = []
    for r in results:
        geo = r.geo
        accs = [_f(geo.acc[t]) if geo else "–" for t in thresholds]
        rows.append(
            [
                r.key,
                str(r.queries),
                str(r.gallery),
                *[_f(r.recall[k]) for k in ks],
                f"{r.recall[ks[0]] / r.chance(ks[0]):.1f}x",
                *accs,
                _f(geo.median_km, 1) if geo else "–",
            ]
        )
    return _table(head, rows)


def _matrix(results: Sequence[PairRecall]) -> str:
    pairs = [r for r in results if not r.query_set]
    mods = [m for m in Modality if any(r.query is m or r.target is m for r in pairs)]
    cell = {(r.query, r.target): r for r in pairs}
    rows = [
        [
            f"**{m.value}**",
            *[
                f"{_f(cell[(m, n)].recall[1])} ({cell[(m, n)].recall[1] / cell[(m, n)].chance(1):.0f}x)"
                if (m, n) in cell
                else "–"
                for n in mods
            ],
        ]
        for m in mods
    ]
    return _table(["query \\ target", *[m.value for m in mods]], rows)


def to_markdown(res: EvalResult) -> str:
    """The evaluation as Markdown (tables, captions, picture links and run time): the content of ``report.md``."""
    o = res.options
    th = o.thresholds_km
    parts = [
        "# Evaluation report",
        f"Model `{res.model_dir}`, store `{res.store}`, split `{res.split}` ({res.samples} samples"
        + (f", embeddings from `{o.db}`" if o.db else ", encoded from the store")
        + f"). Total {sum(res.seconds.values()):.1f} s.",
        "## Retrieval: every directed pair",
        "Each sample queries the gallery of all split samples having the target modality; R@k = its own sample "
        "among the top k; chance at 1 = 1 / gallery. Acc@d and median km: distance from the query's location to "
        "the top hit's.",
        "Recall@1 (and its ratio to chance):",
        _matrix(res.retrieval),
        _pair_rows(res.retrieval, o.ks, th),
    ]
    if res.ensembles:
        parts += [
            "## Multimodal ensembling",
            "The query's modalities score the gallery by their mean cosine similarity (samples with every "
            "query modality present).",
            _pair_rows(res.ensembles, o.ks, th),
        ]
    if res.gallery is not None:
        g = res.gallery
        parts += [
            "## Geocells",
            f"Gallery: {len(g.tokens)} S2 cells of level {g.level} (~{g.cell_km:.3g} km) over lat "
            f"{g.bbox[0]:.3f}..{g.bbox[2]:.3f}, lon {g.bbox[1]:.3f}..{g.bbox[3]:.3f}, their centroids encoded by the "
            "coordinate encoder; a query is placed at its best cell's centroid.",
            _table(
                ["query", "queries", *[f"Acc@{_km(t)}" for t in th], "median km"],
                [
                    [r.key, str(r.queries), *[_f(r.geo.acc[t]) for t in th], _f(r.geo.median_km, 1)]
                    for r in res.geocells
                ],
            ),
        ]
    if res.probe_split is not None and res.probes:
        s = res.probe_split
        targets = list(res.probes[0].r2)
        rows = [[t, *[_f(p.r2[t]) for p in res.probes]] for t in targets]
        rows.append(["**mean R^2**", *[f"**{_f(p.mean_r2)}**" for p in res.probes]])
        parts += [
            "## Linear probes of the coordinate encoder",
            f"Ridge regression on frozen features of {res.probe_points} store locations; R^2 on held-out spatial "
            f"blocks (S2 level {s.level}: {s.n_blocks} blocks, {int(s.test.sum())} test points); alpha by grouped "
            "5-fold CV on the training blocks. Targets: ERA5 2000-2025 climatology, altitude (pvlib), log "
            "population within 50 km (GeoNames).",
            _table(["target", *[f"{p.features} ({p.dim}-d)" for p in res.probes]], rows),
        ]
    for name, grp in res.groups.items():
        parts += [
            f"## {name.capitalize()} samples, apart",
            f"The figures above are of places only. Among the split's {grp.samples} {name} samples (a gallery of "
            f"their own), recall@1 and its ratio to chance:",
            _matrix(grp.retrieval),
            _pair_rows(grp.retrieval, o.ks, th),
        ]
        if grp.probes:
            rows = [[t, *[_f(p.r2[t]) for p in grp.probes]] for t in grp.probes[0].r2]
            rows.append(["**mean R^2**", *[f"**{_f(p.mean_r2)}**" for p in grp.probes]])
            parts += [
                f"Linear probes on {grp.probe_points} {name} locations (same protocol as above):",
                _table(["target", *[f"{p.features} ({p.dim}-d)" for p in grp.probes]], rows),
            ]
    if res.ablations:
        main_pairs = {r.key: r.recall[1] for r in res.retrieval if Modality.COORDS in (r.query, r.target)}
        main_depth = next((p for p in res.probes if p.features.startswith("unigeoclip")), None)
        rows = [
            [
                "this model",
                _f(float(np.mean([r.recall[1] for r in res.retrieval]))),
                _f(float(np.mean(list(main_pairs.values())))) if main_pairs else "–",
                _f(main_depth.mean_r2) if main_depth else "–",
            ]
        ]
        for a in res.ablations:
            rows.append(
                [
                    f"coords depth {a.coords_depth} (`{a.model_dir}`)",
                    _f(a.mean_r1),
                    _f(float(np.mean(list(a.coords_r1.values())))) if a.coords_r1 else "–",
                    _f(a.probe.mean_r2),
                ]
            )
        parts += [
            "## Depth ablation of the coordinate encoder",
            _table(["model", "mean R@1 (all pairs)", "mean R@1 (pairs with coords)", "probe mean R^2"], rows),
        ]
    if res.pictures:
        parts.append("## Pictures")
        captions = {
            "retrieval": "Recall@1 of every directed pair",
            "pca_map": "Coordinate embeddings over a dense grid, first three principal components as RGB "
            "(white dots: store locations)",
            "tsne": "t-SNE of every modality's embedding of a few places (colour = place, marker = modality)",
        }
        parts += [f"{captions[k]}:\n\n![{k}]({v})" for k, v in res.pictures.items()]
    parts += ["## Run time", _table(["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in res.seconds.items()])]
    return "\n\n".join(parts) + "\n"


def printed_summary(report: Path, samples: int, seconds: float) -> str:
    """What ``evaluate`` (and the demo) print: the report's tables, everything before its pictures, and a line."""
    tables = report.read_text().split("## Pictures")[0].rstrip()
    return f"{tables}\n\nevaluation of {samples} samples in {seconds:.1f} s; report: {report}"


def write_report(res: EvalResult, out: str | Path) -> Path:
    """Write ``report.md`` and ``metrics.json`` into ``out``; returns the report's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS_FILE).write_text(json.dumps(to_json(res), indent=1, default=float))
    (out / REPORT_FILE).write_text(to_markdown(res))
    return out / REPORT_FILE
