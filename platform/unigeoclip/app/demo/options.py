"""What the demo runs with: its directory, its size and its port, as printed arguments and as config overrides.

The lowest layer of ``demo``: the stages and the pipeline both read it, it reads neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...config import parse_overrides

CONFIG = "earth"


@dataclass(frozen=True)
class DemoOptions:
    """Where the demo writes and how big it is (None: the ``earth`` preset's full size)."""

    out: Path = Path("data/demo")
    places: int | None = None
    landscape: int | None = None  # cap on the preset's landscape samples (None: all of them)
    steps: int | None = None
    probe_points: int = 5000
    host: str = "127.0.0.1"
    port: int = 8000
    keep_serving: bool = False  # after the stages, keep the service (and its map explorer) up until Ctrl-C / SIGTERM
    verbose: bool = False  # Ray Data's own progress too (the command keeps Ray's output on the console)
    log_file: Path | None = None  # where the command sends Ray's and the libraries' output [OUT/logs/unigeoclip.log]

    @property
    def log_path(self) -> Path:
        """The run's log file: ``log_file``, else ``OUT/logs/unigeoclip.log``."""
        return self.log_file or self.out / "logs" / "unigeoclip.log"

    @property
    def url(self) -> str:
        """The service's base URL (what ``start_service`` answers for ``host:port``)."""
        return f"http://{self.host}:{self.port}"

    @classmethod
    def quick(cls, out: Path, **kwargs: Any) -> DemoOptions:
        """The smoke run: 400 places and 400 landscape samples, 30 steps (a few minutes; the model learns little)."""
        return cls(out=out, places=400, landscape=400, steps=30, probe_points=400, **kwargs)

    def config_sets(self) -> list[str]:
        """``--set`` arguments shared by every stage (the store and the model must agree on the config)."""
        sets = ["--set", f"data.sources.earth.max_places={self.places}"] if self.places else []
        return sets + (["--set", f"data.sources.earth.landscape_max={self.landscape}"] if self.landscape else [])

    def train_args(self) -> list[str]:
        """``train`` arguments that cap the steps and validate and checkpoint once, at the end ([] uncapped)."""
        if self.steps is None:
            return []
        every = str(self.steps)  # validate and checkpoint once, at the end
        return ["--steps", every, "--set", f"train.val_every={every}", "--set", f"train.ckpt_every={every}"]

    def overrides(self) -> dict[str, Any]:
        """The printed ``--set`` and ``--steps`` arguments as the config overrides the stages run with."""
        args = self.config_sets() + self.train_args()
        pairs = list(zip(args[::2], args[1::2], strict=True))
        out = parse_overrides([value for flag, value in pairs if flag == "--set"])
        if self.steps is not None:
            out.setdefault("train", {})["steps"] = self.steps
        return out
