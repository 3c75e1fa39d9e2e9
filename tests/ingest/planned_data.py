"""A package-data loader that only a plan imports (``test_aside``: its value is not adopted where unknown)."""

from unigeoclip.geodata.once import once


@once
def table() -> list[int]:
    return [1, 2, 3]
