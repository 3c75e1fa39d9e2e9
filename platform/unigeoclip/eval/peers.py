"""Location encoders a trained coordinate encoder is compared with: raw coordinates and GeoCLIP's.

GeoCLIP's pretrained ``LocationEncoder`` (pip ``geoclip``; the weights ship inside the
package) loads offline: only the location encoder is built, never ``GeoCLIP()``, which
fetches CLIP from a hub. ``geoclip`` is installed without its dependencies (it would drag
in a CUDA torchvision); what its import needs is in the Makefile.

The location encoder's module is imported without ``geoclip``'s package ``__init__`` files,
which import its CLIP image encoder and with it ``transformers``, for a model the baseline
never builds.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..errors import DataSourceError
from ..modality import Modality
from ..models import UniGeoCLIP

LocationFeatures = Callable[[np.ndarray], np.ndarray]  # (N, 2) lat_deg, lon_deg -> (N, F)

GEOCLIP_MODEL = "_unigeoclip_geoclip_model"  # the installed geoclip/model/ directory, imported under this name


def geoclip_location_encoder_class() -> type[torch.nn.Module]:
    """``geoclip.model.location_encoder.LocationEncoder``, with its two sibling modules (``misc``, ``rff``) and
    nothing else of the package: ``geoclip/model/`` is imported as a package of a private name, so ``import
    geoclip`` elsewhere still gets the real package. ``ImportError`` when ``geoclip`` is not installed."""
    spec = importlib.util.find_spec("geoclip")
    if spec is None or spec.origin is None:
        raise ImportError("no module named 'geoclip'")
    if GEOCLIP_MODEL not in sys.modules:
        package = types.ModuleType(GEOCLIP_MODEL)
        package.__path__ = [str(Path(spec.origin).parent / "model")]
        sys.modules[GEOCLIP_MODEL] = package
    encoder: type[torch.nn.Module] = importlib.import_module(f"{GEOCLIP_MODEL}.location_encoder").LocationEncoder
    return encoder


@functools.cache
def geoclip_location_encoder() -> torch.nn.Module:
    """GeoCLIP's pretrained location encoder (512-d output), in eval mode, from the package's own weights."""
    try:
        location_encoder = geoclip_location_encoder_class()
    except ImportError as exc:
        raise DataSourceError(
            f"GeoCLIP's location encoder is not importable ({exc}): `make install` installs "
            "geoclip==1.3.0 with --no-deps and the packages it needs (geopy pandas tqdm huggingface-hub)"
        ) from None
    return location_encoder(from_pretrained=True).eval()


@torch.no_grad()
def batched(fn: Callable[[torch.Tensor], torch.Tensor], latlon: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Run a ``(B, 2)`` float32 location encoder over ``(N, 2)`` degrees in batches -> ``(N, F)`` float32."""
    x = torch.as_tensor(np.asarray(latlon, np.float32))
    parts = [fn(x[i : i + batch_size]).float().numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def raw_features(latlon: np.ndarray) -> np.ndarray:
    """The baseline: latitude and longitude in degrees, as they are."""
    return np.asarray(latlon, np.float64)


def geoclip_features(latlon: np.ndarray) -> np.ndarray:
    """GeoCLIP's pretrained location embedding of ``(N, 2)`` degrees -> ``(N, 512)`` float32."""
    return batched(geoclip_location_encoder(), latlon)


def coords_features(model: UniGeoCLIP) -> LocationFeatures:
    """A model's coordinate encoder as a feature function (its unit-norm embeddings)."""
    return lambda latlon: batched(lambda x: model.encode(Modality.COORDS, x), latlon)


def stored_coords_features(model: UniGeoCLIP, stored: Callable[[], tuple[np.ndarray, np.ndarray]]) -> LocationFeatures:
    """:func:`coords_features` that reads the points the embedding job already embedded and encodes only the others.

    ``stored`` (called once, at the first call): the model version's ``(N, 2)`` lat, lon degrees and ``(N, D)``
    coordinate vectors (:func:`unigeoclip.eval.embeddings.read_locations_from_db`); a point is found by its exact
    coordinates.
    """
    encode = coords_features(model)

    @functools.cache
    def index() -> tuple[dict[tuple[float, float], int], np.ndarray]:
        latlon, vectors = stored()
        return {(float(a), float(b)): i for i, (a, b) in enumerate(latlon)}, vectors

    def features(points: np.ndarray) -> np.ndarray:
        row, vectors = index()
        points = np.asarray(points, np.float64).reshape(-1, 2)
        at = np.array([row.get((float(a), float(b)), -1) for a, b in points], dtype=np.int64)
        found = at >= 0
        out = np.empty((len(points), vectors.shape[1]), np.float32)
        out[found] = vectors[at[found]]
        if not found.all():
            out[~found] = encode(points[~found])
        return out

    return features
