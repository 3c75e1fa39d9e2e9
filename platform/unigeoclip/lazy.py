"""Names a package exports but imports on first use (PEP 562), so a process pays only for what it touches.

A Ray worker that unpickles one module of a package runs the package's ``__init__`` first: with
``__getattr__ = lazy_names(__name__, {...})`` there, that ``__init__`` imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_names(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: each name in ``homes`` from its (relative) module, on first use."""

    def __getattr__(name: str) -> Any:
        if name in homes:
            return getattr(import_module(homes[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
