"""The report's pictures (matplotlib, Agg: no display needed).

* :func:`pca_map`: coordinate embeddings over a dense lat/lon grid, their first three
  principal components as RGB (the paper's Figure 6): regions the encoder tells apart
  get different colours, smooth colour means a smooth embedding.
* :func:`tsne_modalities`: t-SNE of every modality's embedding of a few places (the
  paper's Figure 5): one colour per place, one marker per modality; a shared space puts
  a place's modalities together.
* :func:`recall_heatmap`: the query x target recall@1 matrix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..geo.bbox import BBox
from ..modality import Modality
from .embeddings import SplitEmbeddings
from .retrieval import PairRecall

MARKERS = {Modality.AERIAL: "s", Modality.STREET: "^", Modality.DSM: "D", Modality.TEXT: "P", Modality.COORDS: "o"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def grid_points(bbox: BBox, width: int) -> tuple[np.ndarray, int, int]:
    """``(H*W, 2)`` pixel centres (row 0 north) of a plate-carrée grid ``width`` pixels wide over ``bbox``."""
    lat_min, lon_min, lat_max, lon_max = bbox
    height = max(2, round(width * (lat_max - lat_min) / max(lon_max - lon_min, 1e-9)))
    lats = lat_max - (np.arange(height) + 0.5) * (lat_max - lat_min) / height
    lons = lon_min + (np.arange(width) + 0.5) * (lon_max - lon_min) / width
    la, lo = np.meshgrid(lats, lons, indexing="ij")
    return np.stack([la.ravel(), lo.ravel()], axis=1), height, width


def pca_rgb(features: np.ndarray) -> np.ndarray:
    """``(N, F)`` -> ``(N, 3)`` in [0, 1]: the first three principal components, each stretched to its 1-99% range."""
    from sklearn.decomposition import PCA

    comps = PCA(n_components=3, random_state=0).fit_transform(features - features.mean(axis=0))
    lo, hi = np.percentile(comps, 1, axis=0), np.percentile(comps, 99, axis=0)
    return np.clip((comps - lo) / np.maximum(hi - lo, 1e-12), 0.0, 1.0)


def pca_map(
    encoders: Sequence[tuple[str, Callable[[np.ndarray], np.ndarray]]],
    bbox: BBox,
    out: Path,
    *,
    width: int = 240,
    points: np.ndarray | None = None,
) -> Path:
    """One PCA-to-RGB panel per location encoder over the same grid; ``points`` (lat, lon) are overlaid."""
    plt = _pyplot()
    latlon, h, w = grid_points(bbox, width)
    fig, axes = plt.subplots(1, len(encoders), figsize=(5.5 * len(encoders), 5.5 * h / w + 0.8), squeeze=False)
    extent = (bbox[1], bbox[3], bbox[0], bbox[2])
    for ax, (name, encode) in zip(axes[0], encoders, strict=True):
        ax.imshow(pca_rgb(encode(latlon)).reshape(h, w, 3), extent=extent, origin="upper", aspect="auto")
        if points is not None and len(points):
            ax.scatter(points[:, 1], points[:, 0], s=0.4, c="white", alpha=0.35, linewidths=0)
        ax.set_title(name)
        ax.set_xlabel("lon_deg")
        ax.set_ylabel("lat_deg")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def tsne_points(split: SplitEmbeddings, places: int, seed: int = 0) -> tuple[np.ndarray, list[Modality]]:
    """The rows of ``places`` samples with the most modalities present (a stable pick) and those modalities."""
    mods = [m for m in split.embeddings if split.present[m].any()]
    count = np.sum([split.present[m] for m in mods], axis=0)
    order = np.random.default_rng(seed).permutation(len(split))
    rows = order[np.argsort(-count[order], kind="stable")][:places]
    return np.sort(rows), mods


def tsne_modalities(split: SplitEmbeddings, out: Path, *, places: int = 12, seed: int = 0) -> Path:
    """t-SNE of every present modality's embedding of ``places`` places."""
    from sklearn.manifold import TSNE

    plt = _pyplot()
    rows, mods = tsne_points(split, places, seed)
    feats, place_of, mod_of = [], [], []
    for i, r in enumerate(rows):
        for m in mods:
            if split.present[m][r]:
                feats.append(split.embeddings[m][r])
                place_of.append(i)
                mod_of.append(m)
    x = np.asarray(feats, np.float64)
    perplexity = float(max(2.0, min(10.0, (len(x) - 1) / 3)))
    xy = TSNE(2, perplexity=perplexity, init="pca", metric="cosine", random_state=seed).fit_transform(x)
    colours = plt.get_cmap("tab20")(np.arange(len(rows)) % 20)
    fig, ax = plt.subplots(figsize=(7, 6))
    for m in mods:
        sel = np.array([mm is m for mm in mod_of])
        if sel.any():
            ax.scatter(
                xy[sel, 0],
                xy[sel, 1],
                c=colours[np.asarray(place_of)[sel]],
                marker=MARKERS[m],
                s=60,
                edgecolors="black",
                linewidths=0.5,
                label=m.value,
            )
    ax.legend(title="modality", loc="best", fontsize=8)
    ax.set_title(f"t-SNE of {len(mods)} modalities for {len(rows)} places (colour = place)")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def recall_heatmap(results: Sequence[PairRecall], out: Path, k: int = 1) -> Path:
    """The directed-pair recall@k matrix, with each pair's ratio to chance written in its cell."""
    plt = _pyplot()
    pairs = [r for r in results if not r.query_set]
    mods = [m for m in Modality if any(r.query is m or r.target is m for r in pairs)]
    grid = np.full((len(mods), len(mods)), np.nan)
    for r in pairs:
        grid[mods.index(r.query), mods.index(r.target)] = r.recall[k]
    fig, ax = plt.subplots(figsize=(1.3 * len(mods) + 2, 1.1 * len(mods) + 1.5))
    im = ax.imshow(grid, vmin=0.0, vmax=max(1e-6, float(np.nanmax(grid)) if pairs else 1.0), cmap="viridis")
    for r in pairs:
        i, j = mods.index(r.query), mods.index(r.target)
        ax.text(
            j,
            i,
            f"{r.recall[k]:.2f}\n{r.recall[k] / r.chance(k):.0f}x",
            ha="center",
            va="center",
            fontsize=8,
            color="white" if r.recall[k] < 0.6 * np.nanmax(grid) else "black",
        )
    ax.set_xticks(range(len(mods)), [m.value for m in mods])
    ax.set_yticks(range(len(mods)), [m.value for m in mods])
    ax.set_xlabel("target (gallery)")
    ax.set_ylabel("query")
    ax.set_title(f"recall@{k} (and x chance)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
