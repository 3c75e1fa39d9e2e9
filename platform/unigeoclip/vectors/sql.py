"""SQL literals for LanceDB filters: every user value passes through here, never into an f-string directly."""

from __future__ import annotations

from collections.abc import Iterable


def quote(value: str) -> str:
    """``O'Brien`` -> ``'O''Brien'`` (a SQL string literal)."""
    return "'" + str(value).replace("'", "''") + "'"


def in_list(column: str, values: Iterable[str | int]) -> str:
    """``column IN ('a', 'b')`` for strings, ``column IN (1, 2)`` for integers."""
    items = [quote(v) if isinstance(v, str) else str(int(v)) for v in values]
    return f"{column} IN ({', '.join(items)})" if items else "false"
