"""DeepSpeed as training uses it on CPUs (no Ray): nothing is compiled that training does not call."""

from __future__ import annotations

from unigeoclip.train.deepspeed_config import skip_inference_comm_op


def test_training_never_compiles_deepspeeds_inference_only_comm_op() -> None:
    """DeepSpeed's CPU backend builds its shared-memory op at start (minutes of C++ on a fresh node) for an
    all-reduce only inference uses; training's workers skip it, and DeepSpeed falls back as without the op."""
    from deepspeed.comm.torch import build_shm_op

    skip_inference_comm_op()
    assert build_shm_op() is None  # with the op marked compatible, this compiles it (or loads it) and returns it
