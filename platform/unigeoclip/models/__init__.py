"""The towers and the five-tower model."""

from .unigeoclip import UniGeoCLIP

__all__ = ["UniGeoCLIP"]
