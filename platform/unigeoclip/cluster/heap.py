"""Keep freed heap memory in the process, so numpy's large temporaries do not fault their pages in every time.

glibc serves an allocation above ``M_MMAP_THRESHOLD`` (128 KiB at start) with a fresh ``mmap`` and gives
the heap's free top back to the kernel above ``M_TRIM_THRESHOLD``. It raises both as it sees large blocks
freed, up to 32 MiB and 64 MiB, but a fresh Ray worker that cuts earth patches (2-6 MiB arrays, freed at
once) kept returning its memory and faulting it in again, page by page (minor page faults and kernel
time in the hundreds of thousands per few hundred items: notes/issue25.md, "malloc in Ray workers").
:func:`keep_heap` sets both thresholds to those ceilings from the start, in the driver (``ensure_ray``) and in
every worker (:mod:`.worker_setup`). A process then keeps up to 64 MiB of freed heap per malloc arena.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD_BYTES = 32 * 2**20  # glibc's own ceiling for its dynamic threshold (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD_BYTES = 2 * MMAP_THRESHOLD_BYTES  # what glibc pairs with it


def keep_heap() -> bool:
    """Set glibc's mmap and trim thresholds (above); False where the C library has no ``mallopt`` (not glibc)."""
    try:
        loaded = ctypes.CDLL(None)  # the symbols this process has loaded already, the C library's among them
    except (OSError, TypeError):  # Windows has no such handle
        return False
    mallopt = getattr(loaded, "mallopt", None)
    if mallopt is None:  # macOS, Windows: their allocators have no such knobs
        return False
    return bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    )
