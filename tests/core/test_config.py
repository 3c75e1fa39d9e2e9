from pathlib import Path

import pytest
from unigeoclip import ConfigError, Modality, UniGeoCLIP, load_config
from unigeoclip.config import preset_names


@pytest.mark.parametrize("name", preset_names())
def test_presets_load_and_roundtrip_through_yaml(name: str, tmp_path: Path) -> None:
    cfg = load_config(name)
    assert cfg.name == name
    cfg.save(tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


def test_tiny_model_is_well_under_a_million_parameters() -> None:
    model = UniGeoCLIP.from_config(load_config("tiny"))
    assert sum(p.numel() for p in model.parameters()) < 500_000
    assert load_config("tiny").model.aerial.image_size == 32


def test_paper_preset_matches_the_paper() -> None:
    mc = load_config("paper").model
    assert mc.embed_dim == 768
    assert mc.coords.sigmas == (1.0, 16.0, 256.0, 4096.0)
    assert (mc.coords.num_registers, mc.coords.num_heads, mc.coords.depth) == (4, 12, 12)
    assert (mc.aerial.hidden_size, mc.aerial.num_layers, mc.aerial.num_heads) == (768, 12, 12)
    assert mc.modalities == tuple(Modality)


def test_unknown_key_is_an_error_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("base: tiny\nmodel:\n  aerial:\n    hiden_size: 64\n")
    with pytest.raises(ConfigError, match=r"unknown key 'model\.aerial\.hiden_size'"):
        load_config(path)


def test_base_inheritance_overrides_only_what_is_given(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("base: tiny\nname: mine\nmodel:\n  coords:\n    depth: 0\n")
    cfg = load_config(path)
    tiny = load_config("tiny")
    assert cfg.name == "mine" and cfg.model.coords.depth == 0
    assert cfg.model.aerial == tiny.model.aerial


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"loss": {"mode": "pivot"}}, "needs loss.pivot"),
        ({"model": {"aerial": {"image_size": 30}}}, "not a multiple of patch_size"),
        ({"model": {"coords": {"sigmas": []}}}, "non-empty"),
        ({"model": {"modalities": ["aerial", "sonar"]}}, "model.modalities"),
        ({"model": {"embed_dim": 0}}, "model.embed_dim"),
    ],
)
def test_invalid_values_are_explained(override: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", overrides=override)


def test_missing_config_lists_presets() -> None:
    with pytest.raises(ConfigError, match="tiny, small, paper"):
        load_config("tinyy")


def test_config_is_frozen() -> None:
    cfg = load_config("tiny")
    with pytest.raises(ValueError):
        cfg.model.embed_dim = 64  # type: ignore[misc]


def test_modality_parse_names_the_valid_values() -> None:
    assert Modality.parse("dsm") is Modality.DSM
    with pytest.raises(ValueError, match="aerial, street, dsm, text, coords"):
        Modality.parse("lidar")


def test_val_split_is_one_of_the_three_splits() -> None:
    from unigeoclip.samples.splits import SPLITS

    assert SPLITS == ("train", "test_year", "test_region")
    assert load_config("tiny", overrides={"train": {"val_split": "test_region"}}).train.val_split == "test_region"
    with pytest.raises(ConfigError, match=r"train\.val_split: Input should be 'train', 'test_year' or 'test_region'"):
        load_config("tiny", overrides={"train": {"val_split": "test"}})


def test_a_checkpoint_reference_is_a_run_directory_and_an_optional_step(tmp_path: Path) -> None:
    from unigeoclip.errors import CheckpointError, InputError
    from unigeoclip.train.checkpoint import load_checkpoint, parse_checkpoint_ref

    assert parse_checkpoint_ref("runs/a@250") == (Path("runs/a"), 250)
    assert parse_checkpoint_ref("runs/a") == (Path("runs/a"), None)
    assert parse_checkpoint_ref("runs/x@y@12") == (Path("runs/x@y"), 12)
    with pytest.raises(InputError, match="RUN_DIR@STEP with STEP a number"):
        parse_checkpoint_ref("runs/a@last")
    with pytest.raises(CheckpointError, match="holds no kept checkpoint"):
        load_checkpoint(tmp_path)
