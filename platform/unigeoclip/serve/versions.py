"""Following the store's serving alias from inside a replica, and finding each version's model directory.

Every query is encoded by one model version and searched in that version's table: the encoder
answers with the version it used and the retriever searches that version, keeping the previous
snapshots open for a while. So when the alias moves under load, a query in flight finishes on the
version it started with and no request fails or mixes two models' vectors.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError, NotFoundError
from ..vectors import EmbeddingDB
from ..vectors.versions import model_fingerprint

log = logging.getLogger(__name__)


def serving_pointer(db: EmbeddingDB) -> dict[str, Any]:
    """The store's serving alias row; a :class:`NotFoundError` saying to run ``unigeoclip embed`` when none exists."""
    pointer = db.alias()
    if pointer is None:
        raise NotFoundError(
            f"no serving model version in {db.uri}: run `unigeoclip embed --model MODEL_DIR --store STORE "
            f"--db {db.uri}` first"
        )
    return pointer


def model_dir_for(db: EmbeddingDB, model_version: str, override: Path | None) -> Path:
    """Where ``model_version``'s weights are: ``override`` when it holds exactly that model, else the recorded dir,
    which must still hold exactly the model the version was embedded with (its fingerprint), as the embedding
    job checks: a directory rewritten since (a resumed run, a copy over it) would encode queries into another
    space than the vectors they are searched against."""
    info = db.version_info(model_version)
    if info is None:
        raise NotFoundError(f"model version {model_version!r} is not registered in {db.uri}")
    if override is not None and model_fingerprint(override) == info["fingerprint"]:
        return override
    recorded = Path(info["model_dir"])
    found = model_fingerprint(recorded)
    if found != info["fingerprint"]:
        raise ConfigError(
            f"{recorded} no longer holds model version {model_version!r} (fingerprint {found[:12]}, embedded with "
            f"{info['fingerprint'][:12]}): restore that model there, serve with --model pointing at a copy of "
            "it, or embed the new model as its own version"
        )
    return recorded


def check_override(db: EmbeddingDB, override: Path | None) -> None:
    """Refuse a ``--model`` that is not the model the store serves (queries would land in another space)."""
    if override is None:
        return
    pointer = serving_pointer(db)
    info = db.version_info(pointer["model_version"]) or {}
    if model_fingerprint(override) != info.get("fingerprint"):
        raise ConfigError(
            f"--model {override} is not the model of {db.uri}'s serving version {pointer['model_version']!r} "
            f"(embedded from {info.get('model_dir')}): pass that model's directory, or leave --model out"
        )


class AliasWatcher:
    """A daemon thread that re-reads the serving alias every ``period_s`` and calls ``on_change(pointer)``.

    ``on_change`` runs in the watcher thread (loading a model there never stalls requests);
    an error is logged and retried at the next tick, the replica keeps serving what it has.
    """

    def __init__(
        self, db: EmbeddingDB, period_s: float, on_change: Callable[[dict[str, Any]], None], current: dict[str, Any]
    ) -> None:
        self.db, self.period_s, self.on_change = db, period_s, on_change
        self._seen = (current["table_name"], int(current["table_version"]))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alias-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                pointer = self.db.alias()
                if pointer is None:
                    continue
                key = (pointer["table_name"], int(pointer["table_version"]))
                if key != self._seen:
                    self.on_change(pointer)
                    self._seen = key
            except Exception:  # a transient read error must not kill the watcher
                log.exception("re-reading the serving alias failed; retrying in %.1f s", self.period_s)

    def stop(self) -> None:
        """Tell the watcher thread to stop at its next wake-up; it does not wait for the thread to end."""
        self._stop.set()
