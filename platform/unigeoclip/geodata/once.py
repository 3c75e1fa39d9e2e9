"""Package data read once per process, or handed in by another process through Ray's object store.

A loader decorated with :func:`once` is a ``functools.cache`` of no arguments whose value a worker can also
:func:`adopt`: ingest reads the rasters once (one Ray task, :func:`values`) into the object store,
and every extraction worker adopts them (numpy arrays come back as zero-copy, read-only views), instead of
each worker decoding the same JPEG and npz files.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from ..errors import InputError

T = TypeVar("T")

_VALUES: dict[str, Any] = {}  # this process's values, by loader name
_LOADERS: dict[str, Callable[[], Any]] = {}  # the loaders, by name (the names adopt accepts)


def once(read: Callable[[], T]) -> Callable[[], T]:
    """``read()`` on first use, then the same value for the life of the process (or the value adopted)."""
    name = f"{read.__module__}.{read.__qualname__}"

    @functools.wraps(read)
    def get() -> T:
        if name not in _VALUES:
            _VALUES[name] = read()
        return _VALUES[name]

    _LOADERS[name] = read
    get.once_name = name  # type: ignore[attr-defined]
    return get


def values(loaders: Iterable[Callable[[], Any]]) -> dict[str, Any]:
    """The loaders' values by name, to hand to other processes; read here (and not kept) where not loaded yet."""
    out = {}
    for loader in loaders:
        name = _name(loader)
        out[name] = _VALUES[name] if name in _VALUES else _LOADERS[name]()
    return out


def held(loaders: Iterable[Callable[[], Any]]) -> bool:
    """Whether this process holds every one of the loaders' values (read or adopted): :func:`values` reads nothing."""
    return all(_name(loader) in _VALUES for loader in loaders)


def held_values() -> dict[str, Any]:
    """Every value this process holds (read or adopted) by loader name, for another process to :func:`adopt`."""
    return dict(_VALUES)


def known(given: Mapping[str, Any]) -> dict[str, Any]:
    """The values of ``given`` whose loaders this process has imported (those :func:`adopt` accepts)."""
    return {name: value for name, value in given.items() if name in _LOADERS}


def adopt(given: Mapping[str, Any]) -> None:
    """Use these values (from :func:`values` in another process) instead of reading the files here."""
    unknown = sorted(set(given) - set(_LOADERS))
    if unknown:
        raise InputError(f"no loader is named {unknown}; names come from geodata.once.values ({sorted(_LOADERS)})")
    _VALUES.update(given)


def keep(loader: Callable[[], Any], value: Any) -> None:
    """Hold ``value`` as ``loader``'s in this process: a value that other work computed on the way (no file read)."""
    _VALUES[_name(loader)] = value


def forget() -> None:
    """Drop every value this process holds (read or adopted): the next use reads the files again."""
    _VALUES.clear()


def _name(loader: Callable[[], Any]) -> str:
    name = getattr(loader, "once_name", None)
    if name is None:
        raise TypeError(f"{loader!r} is not a loader decorated with geodata.once.once")
    return str(name)
