"""The five modalities and the batch-key contract every part of the platform shares.

A batch is a flat ``dict[str, Tensor]`` so that it travels unchanged through Ray Data,
``iter_torch_batches`` and DeepSpeed. For each modality ``m`` it may hold the input
tensors listed in :data:`INPUT_KEYS` and a boolean presence mask ``f"{m}_present"``
of shape ``(B,)``. A modality whose keys are absent is absent for the whole batch.
"""

from __future__ import annotations

from enum import StrEnum

from .errors import ModalityError


class Modality(StrEnum):
    """One of the five co-located views of a place."""

    AERIAL = "aerial"
    STREET = "street"
    DSM = "dsm"
    TEXT = "text"
    COORDS = "coords"

    @classmethod
    def parse(cls, value: str | Modality) -> Modality:
        """Return the modality named ``value`` or raise a :class:`ModalityError` listing the valid names."""
        try:
            return cls(value)
        except ValueError:
            valid = ", ".join(m.value for m in cls)
            raise ModalityError(f"unknown modality {value!r}; expected one of: {valid}") from None


ALL_MODALITIES: tuple[Modality, ...] = tuple(Modality)

# Input tensors per modality (shapes for a batch of B samples):
#   aerial, street: "<m>"                  float32 (B, 3, H, W), RGB in [0, 1]
#   dsm:            "dsm"                  float32 (B, 1, H, W), surface heights in metres (NaN = no data)
#   text:           "text_input_ids"       int64   (B, L), "text_attention_mask" int64 (B, L)
#   coords:         "coords"               float32 (B, 2), (lat_deg, lon_deg)
# A locked tower's modality may come as "<m>_features" float32 (B, F) instead: the frozen backbone's pooled
# output, read from the store's feature cache (training), which the model then only projects.
INPUT_KEYS: dict[Modality, tuple[str, ...]] = {
    Modality.AERIAL: ("aerial",),
    Modality.STREET: ("street",),
    Modality.DSM: ("dsm",),
    Modality.TEXT: ("text_input_ids", "text_attention_mask"),
    Modality.COORDS: ("coords",),
}


def present_key(modality: Modality) -> str:
    """Name of the ``(B,)`` boolean presence mask of ``modality`` in a batch."""
    return f"{modality.value}_present"


def features_key(modality: Modality) -> str:
    """Name of a locked tower's precomputed ``(B, F)`` features in a batch, in place of its inputs."""
    return f"{modality.value}_features"


def modalities_in(batch: dict[str, object]) -> list[Modality]:
    """Modalities whose inputs are all in ``batch`` (or their locked tower's features), in canonical order."""
    return [m for m in ALL_MODALITIES if features_key(m) in batch or all(k in batch for k in INPUT_KEYS[m])]
