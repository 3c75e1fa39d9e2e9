"""Contrastive objectives: all-pairs InfoNCE (the method) and its pivot ablation."""

from .contrastive import ContrastiveLoss, LossOutput, pair_key, training_pairs

__all__ = ["ContrastiveLoss", "LossOutput", "pair_key", "training_pairs"]
