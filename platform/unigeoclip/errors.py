"""Project exception types.

Each subclasses the built-in a caller would naturally catch, so code that does not
know this project still handles them, while messages always say what was wrong and
how to fix it.
"""

from __future__ import annotations


class UniGeoCLIPError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(UniGeoCLIPError, ValueError):
    """A configuration file or value is invalid."""


class InputError(UniGeoCLIPError, ValueError):
    """Data handed to a model, job or service is malformed."""


class ModalityError(InputError, KeyError):
    """A modality is unknown, or not part of this model."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(UniGeoCLIPError, OSError):
    """A model directory or checkpoint is missing pieces or inconsistent."""


class DataSourceError(UniGeoCLIPError, FileNotFoundError):
    """A data package or file a source relies on is missing or not what it expects."""


class NotFoundError(UniGeoCLIPError, FileNotFoundError):
    """A sample store, embedding database, model version or run that a command needs does not exist (yet)."""


class DistributedError(UniGeoCLIPError, RuntimeError):
    """Ranks disagree about something they must share (batch size, modalities)."""


class ResourcesUnavailableError(UniGeoCLIPError, TimeoutError):
    """The cluster could not provide the resources a job asked for (in time, or ever)."""
