"""What a model is fed: its modalities, their input sizes, its tokenizer, and how training augments them.

One :class:`PreprocessSpec` is cut from a model's config and handed to everything that makes model
inputs (the training reader, the embedding job, the evaluation, the service), so none of them needs the
whole :class:`~unigeoclip.config.Config` or re-derives a size from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import AugmentConfig, Config, TextTowerConfig
from ..modality import Modality


@dataclass(frozen=True)
class PreprocessSpec:
    """The inputs of one model (frozen; pickles to Ray actors with the configs it holds)."""

    modalities: tuple[Modality, ...]
    aerial_size: int  # side of the square aerial input, pixels
    street_size: int
    dsm_size: int
    text: TextTowerConfig  # the tokenizer and its fixed length
    augment: AugmentConfig  # training's augmentation; the canonical view reads its middle field of view

    @classmethod
    def of(cls, cfg: Config, *, modalities: tuple[Modality, ...] | None = None) -> PreprocessSpec:
        """The spec of ``cfg``'s model; ``modalities`` narrows it (``()``: none), default the model's."""
        mc = cfg.model
        return cls(
            modalities=mc.modalities if modalities is None else tuple(modalities),
            aerial_size=mc.aerial.image_size,
            street_size=mc.street.image_size,
            dsm_size=mc.dsm.image_size,
            text=mc.text,
            augment=cfg.data.augment,
        )

    def canonical_fov_deg(self, projection: str, fov_deg: float) -> float:
        """The field of view of the canonical (unaugmented) street view: a panorama's is the middle of
        training's range, a photo keeps its own."""
        if projection == "equirectangular":
            lo, hi = self.augment.street_fov_deg
            return (lo + hi) / 2
        return fov_deg
