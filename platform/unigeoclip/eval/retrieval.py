"""Cross-modal retrieval metrics over one gallery: every directed modality pair.

For a directed pair (m -> n), each sample with ``m`` present queries the gallery of all
samples with ``n`` present; it is a hit at ``k`` when its own sample is among the ``k``
most similar. Chance at 1 is ``1 / gallery size``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..modality import Modality


@dataclass(frozen=True)
class PairRecall:
    query: Modality
    target: Modality
    recall: dict[int, float]  # k -> recall@k
    queries: int
    gallery: int

    @property
    def chance_at_1(self) -> float:
        return 1.0 / max(self.gallery, 1)

    @property
    def key(self) -> str:
        return f"{self.query.value}->{self.target.value}"


def ranks_of_own_sample(queries: np.ndarray, gallery: np.ndarray, own: np.ndarray) -> np.ndarray:
    """``(Q, D)`` queries, ``(G, D)`` gallery, ``own[i]`` = gallery row of query i's sample -> 0-based ranks ``(Q,)``.

    Ties count against the query (a gallery item scoring equal to its own sample ranks first).
    """
    sims = queries @ gallery.T  # (Q, G)
    own_score = sims[np.arange(len(own)), own][:, None]
    return np.asarray((sims >= own_score).sum(axis=1) - 1)


def recall_matrix(
    embeddings: Mapping[Modality, np.ndarray],
    present: Mapping[Modality, np.ndarray],
    ks: Sequence[int] = (1,),
) -> list[PairRecall]:
    """Recall@k of every directed pair among the modalities in ``embeddings`` (``(N, D)`` unit rows each)."""
    out = []
    mods = [m for m in Modality if m in embeddings]
    for m in mods:
        for n in mods:
            if m == n:
                continue
            both = present[m] & present[n]
            gallery_rows = np.flatnonzero(present[n])
            if not both.any():
                continue
            position = np.full(len(present[n]), -1)
            position[gallery_rows] = np.arange(len(gallery_rows))
            query_rows = np.flatnonzero(both)
            ranks = ranks_of_own_sample(embeddings[m][query_rows], embeddings[n][gallery_rows], position[query_rows])
            out.append(PairRecall(m, n, {k: float((ranks < k).mean()) for k in ks}, len(query_rows), len(gallery_rows)))
    return out


def format_matrix(results: Sequence[PairRecall], k: int = 1) -> str:
    """A query x target table of recall@k, with the mean over pairs."""
    mods = [m for m in Modality if any(r.query is m or r.target is m for r in results)]
    cell = {(r.query, r.target): r.recall[k] for r in results}
    head = "query \\ target".ljust(14) + "".join(f"{n.value:>9}" for n in mods)
    lines = [head]
    for m in mods:
        row = "".join(f"{cell[(m, n)]:9.3f}" if (m, n) in cell else f"{'-':>9}" for n in mods)
        lines.append(f"{m.value:<14}{row}")
    mean = float(np.mean([r.recall[k] for r in results])) if results else float("nan")
    lines.append(f"mean recall@{k} over {len(results)} directed pairs: {mean:.3f}")
    return "\n".join(lines)
