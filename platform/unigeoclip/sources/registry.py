"""The sources by name: each builds itself from its own settings under ``data.sources.<name>``."""

from __future__ import annotations

from ..config import Config
from ..errors import ConfigError
from .base import Source

SOURCE_NAMES = ("synthetic", "earth", "files")


def make_source(name: str, cfg: Config) -> Source:
    """The source called ``name``, configured and validated from ``cfg.data.sources.<name>`` (imported lazily)."""
    unknown = sorted(set(cfg.data.sources) - set(SOURCE_NAMES))
    if unknown:
        raise ConfigError(
            f"data.sources has settings for {', '.join(map(repr, unknown))}, which is no source; "
            f"the sources are {', '.join(SOURCE_NAMES)}: check the spelling"
        )
    if name == "synthetic":
        from .synthetic.source import SyntheticSource, SyntheticSourceConfig

        return SyntheticSource(SyntheticSourceConfig.of(cfg.data), cfg.data)
    if name == "earth":
        from .earth import EarthSource, EarthSourceConfig

        return EarthSource(EarthSourceConfig.of(cfg.data), cfg.data)
    if name == "files":
        from .files import FilesSource, FilesSourceConfig

        return FilesSource(FilesSourceConfig.of(cfg.data), cfg.data)
    raise ConfigError(f"unknown source {name!r}; expected one of {', '.join(SOURCE_NAMES)}")
