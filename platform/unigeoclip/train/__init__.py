"""Distributed training: Ray Train workers, each running a DeepSpeed engine over the five towers."""
