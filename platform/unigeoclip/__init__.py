"""UniGeoCLIP: one embedding space for aerial, street-level, DSM, text and coordinates.

The model is imported lazily: data and serving workers that only need configs,
schemas or stores do not pay for importing torch and transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import Config, load_config
from .errors import CheckpointError, ConfigError, InputError, ModalityError, UniGeoCLIPError
from .lazy import lazy_names
from .modality import Modality

if TYPE_CHECKING:
    from .models import UniGeoCLIP

__all__ = [
    "CheckpointError",
    "Config",
    "ConfigError",
    "InputError",
    "Modality",
    "ModalityError",
    "UniGeoCLIP",
    "UniGeoCLIPError",
    "load_config",
]
__version__ = "0.1.0"
__getattr__ = lazy_names(__name__, {"UniGeoCLIP": ".models"})
