"""Sources of co-located geodata: the synthetic world, real Earth data from packages, a user's files."""

from __future__ import annotations

from ..config import Config
from ..errors import ConfigError
from .base import Source

SOURCE_NAMES = ("synthetic", "earth", "files")


def make_source(name: str, cfg: Config) -> Source:
    """The source called ``name``, configured from ``cfg.data.sources.<name>`` (modules import lazily)."""
    if name == "synthetic":
        from .synthetic.source import SyntheticSource

        return SyntheticSource(cfg.data.sources.synthetic, cfg.data)
    if name == "earth":
        from .earth import EarthSource

        return EarthSource(cfg.data.sources.earth, cfg.data)
    if name == "files":
        from .files import FilesSource

        return FilesSource(cfg.data.sources.files, cfg.data)
    raise ConfigError(f"unknown source {name!r}; expected one of {', '.join(SOURCE_NAMES)}")
