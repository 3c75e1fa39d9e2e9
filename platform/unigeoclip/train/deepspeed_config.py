"""The DeepSpeed configuration of a run, derived from the typed train config."""

from __future__ import annotations

from typing import Any

from ..config import TrainConfig


def deepspeed_config(cfg: TrainConfig, *, gpu: bool) -> dict[str, Any]:
    """ZeRO stage, precision (bf16 on GPU, fp32 on CPU), clipping and accumulation.

    The optimizer and scheduler are passed as objects (AdamW + warmup-cosine), so the
    same code runs on CPU, where DeepSpeed's fused optimizers do not exist.
    """
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch,
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": gpu},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def skip_inference_comm_op() -> None:
    """Keep DeepSpeed from compiling its CPU shared-memory op, which only its inference all-reduce uses.

    DeepSpeed's torch backend JIT-compiles ``deepspeed_shm_comm`` (a C++ extension: once per node and
    extension directory, and again whenever its paths change) whenever the accelerator is the CPU.
    Training never calls it: its all-reduce and all-gather are torch.distributed's (gloo). Marked
    incompatible, ``build_shm_op`` returns None, DeepSpeed's own fall-back for platforms without it.
    """
    import deepspeed.ops
    from deepspeed.ops.op_builder import ShareMemCommBuilder

    deepspeed.ops.__compatible_ops__[ShareMemCommBuilder.NAME] = False
