"""A model from any kept DeepSpeed checkpoint of a run, through DeepSpeed's own fp32 consolidation.

``RUN_DIR/ray/train/checkpoint_*/`` are the checkpoints Ray Train keeps (``train.keep_checkpoints``),
each a DeepSpeed save tagged ``step<N>``. :func:`load_checkpoint` rebuilds the run's model from its
saved ``unigeoclip.yaml`` and fills its parameters with DeepSpeed's consolidation of the ZeRO shards
(``zero_to_fp32``), so the project never unpickles a checkpoint itself; DeepSpeed does, which is why
the run directory passes the same trust check as ``train --resume`` first. Buffers (the coordinate
encoder's Fourier matrices) come from the config, as they were made, not from the checkpoint.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from ..config import load_config
from ..errors import CheckpointError, InputError
from ..models import UniGeoCLIP
from .trainer import RUN_NAME, check_run_dir_trust, run_config

_TAG = re.compile(r"^step(\d+)$")


def kept_steps(run_dir: str | Path) -> dict[int, Path]:
    """The steps a run kept a checkpoint of, each with the DeepSpeed save directory that holds it."""
    found: dict[int, Path] = {}
    for tag_dir in Path(run_dir, "ray", RUN_NAME).glob("checkpoint_*/step*"):
        match = _TAG.match(tag_dir.name)
        if match and tag_dir.is_dir():
            found[int(match.group(1))] = tag_dir.parent
    return dict(sorted(found.items()))


def parse_checkpoint_ref(ref: str) -> tuple[Path, int | None]:
    """``RUN_DIR@STEP`` -> (run directory, step); ``RUN_DIR`` alone -> its latest kept step (None)."""
    run, sep, step = ref.rpartition("@") if "@" in ref else (ref, "", "")
    if sep and not step.isdigit():
        raise InputError(f"--checkpoint expects RUN_DIR or RUN_DIR@STEP with STEP a number, got {ref!r}")
    return Path(run), int(step) if sep else None


def load_checkpoint(run_dir: str | Path, step: int | None = None) -> UniGeoCLIP:
    """The run's model as it was at ``step`` (None: the latest kept checkpoint), in eval mode on the CPU."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    run_dir = Path(run_dir)
    steps = kept_steps(run_dir)
    if not steps:
        raise CheckpointError(f"{run_dir} holds no kept checkpoint (looked in {run_dir / 'ray' / RUN_NAME})")
    step = max(steps) if step is None else step
    if step not in steps:
        raise CheckpointError(f"{run_dir} kept no checkpoint of step {step}; it has steps {sorted(steps)}")
    check_run_dir_trust(run_dir)  # DeepSpeed unpickles what it loads
    cfg = load_config(run_config(run_dir))
    if cfg.train.zero_stage == 0:
        raise CheckpointError(
            f"{run_dir} was trained without ZeRO (train.zero_stage 0), whose checkpoints DeepSpeed cannot "
            "consolidate: use the exported model directory (RUN_DIR/model), or train with zero_stage >= 1"
        )
    with contextlib.redirect_stdout(io.StringIO()):  # DeepSpeed prints each file it reads
        state = get_fp32_state_dict_from_zero_checkpoint(str(steps[step]), tag=f"step{step}")
    model = UniGeoCLIP.from_config(cfg)
    params = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    wanted = dict(model.named_parameters())
    missing, unexpected = set(wanted) - set(params), set(params) - set(model.state_dict())
    if missing or unexpected:
        raise CheckpointError(
            f"step {step} of {run_dir} does not fit the run's config: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    model.load_state_dict({k: v for k, v in params.items() if k in wanted}, strict=False)
    return model.eval()
