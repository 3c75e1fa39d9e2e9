"""UniGeoCLIP: one embedding space for aerial, street-level, DSM, text and coordinates."""

from .config import Config, load_config
from .errors import CheckpointError, ConfigError, InputError, ModalityError, UniGeoCLIPError
from .modality import Modality
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
