"""Writes a reader never sees half done: a file by temp-and-rename, a directory by an atomic exchange.

``write_text`` writes beside the target and renames over it (one ``rename(2)``: readers see the old
file or the new one). ``replace_dir`` puts a fully written directory in place of another with
Linux's ``renameat2(RENAME_EXCHANGE)`` (both names swap in one step), then removes the old one; where
the file system cannot exchange (not Linux, some network file systems) it falls back to two renames,
which leave the name absent for an instant but never half written.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import uuid
from pathlib import Path

RENAME_EXCHANGE = 2
AT_FDCWD = -100


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` by a temp file beside it and one rename: readers see the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def staging_dir(final: str | os.PathLike[str]) -> Path:
    """A fresh sibling of ``final`` to write into before :func:`replace_dir` (same file system: renames work)."""
    final = Path(final)
    return final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.staged")


def replace_dir(staged: str | os.PathLike[str], final: str | os.PathLike[str]) -> None:
    """Put the directory ``staged`` at ``final`` (replacing what is there) without ever exposing a partial one."""
    staged, final = Path(staged), Path(final)
    if not final.exists():
        os.rename(staged, final)
        return
    if not _exchange(staged, final):
        old = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.old")
        os.rename(final, old)
        os.rename(staged, final)
        staged = old
    shutil.rmtree(staged)  # after the exchange, the old contents sit under the staged name


def _exchange(a: Path, b: Path) -> bool:
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    done = renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE)
    return bool(done == 0)
