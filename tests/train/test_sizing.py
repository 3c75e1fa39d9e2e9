"""Sizing for an autoscaling cluster: resource plans, actor pool bounds, device placement (Ray not started)."""

from __future__ import annotations

from typing import Any

import pytest
import ray
from unigeoclip.cluster import runtime
from unigeoclip.config import Config, IngestConfig, TrainConfig, load_config
from unigeoclip.embed import EmbedOptions
from unigeoclip.errors import ConfigError
from unigeoclip.train.trainer import resource_plan


def test_decoders_follow_the_workers_unless_fixed() -> None:
    assert TrainConfig(workers=2, decoders_per_worker=0.5).decoder_count == 1
    assert TrainConfig(workers=3, decoders_per_worker=0.5).decoder_count == 2  # rounded up
    assert TrainConfig(workers=8, decoders_per_worker=4).decoder_count == 32
    assert TrainConfig(workers=8, decoders=3).decoder_count == 3
    assert load_config("paper").updated({"train": {"workers": 8}}).train.decoder_count == 32


def test_the_plan_holds_every_worker_and_decoder_with_their_resources() -> None:
    tc = TrainConfig(workers=2, cpus_per_worker=0.75, decoders_per_worker=1, cpus_per_decoder=0.5,
                     worker_resources={"accelerator": 1})  # fmt: skip
    plan = resource_plan(tc, gpu=False)
    assert plan == [{"CPU": 0.75, "accelerator": 1}] * 2 + [{"CPU": 0.5}] * 2
    assert resource_plan(tc, gpu=True)[0] == {"CPU": 0.75, "GPU": 1.0, "accelerator": 1}
    assert runtime.describe_bundles(plan) == "2 x {CPU: 0.75, accelerator: 1} + 2 x {CPU: 0.5}"


def test_missing_resources_names_what_the_totals_lack() -> None:
    plan = [{"CPU": 1.0, "accelerator": 1.0}] * 2 + [{"CPU": 0.5}]
    assert runtime.missing_resources(plan, {"CPU": 4.0, "accelerator": 2.0}) == {}
    assert runtime.missing_resources(plan, {"CPU": 2.0}) == {"CPU": 0.5, "accelerator": 2.0}


def test_a_local_ray_refuses_a_plan_it_cannot_hold_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "_started_here", True)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    with pytest.raises(runtime.ResourcesUnavailableError, match=r"2 CPU \(1 CPU missing\): lower it"):
        runtime.wait_for_resources([{"CPU": 1.5}] * 2, timeout_s=60, what="training", hint="lower it")


def _bounds(pool: Any) -> tuple[int, int]:
    return pool.min_size, pool.max_size


def test_pools_autoscale_between_the_bounds_on_a_cluster_that_can_grow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "_started_here", False)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {})  # zero worker nodes: the bounds do not depend on it
    assert _bounds(runtime.actor_pool(1, None, 40)) == (1, 40)
    assert _bounds(runtime.actor_pool(2, 8, 40)) == (2, 8)
    assert _bounds(runtime.actor_pool(4, 8, 3)) == (3, 3)  # never more actors than work
    assert _bounds(EmbedOptions(min_actors=2, max_actors=6).model_pool(10)) == (2, 6)
    assert _bounds(EmbedOptions(actors=3).model_pool(10)) == (3, 3)


def test_pools_are_fixed_at_what_a_local_ray_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "_started_here", True)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0, "GPU": 1.0})
    assert _bounds(runtime.actor_pool(1, None, 40)) == (2, 2)
    assert _bounds(runtime.actor_pool(1, None, 40, needs={"CPU": 0.5})) == (4, 4)
    assert _bounds(runtime.actor_pool(1, 3, 40, needs={"CPU": 0.5})) == (3, 3)
    assert _bounds(EmbedOptions(gpu=True).model_pool(10)) == (1, 1)  # one GPU, not one actor per chunk


def test_bad_pool_bounds_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="below --min-actors"):
        EmbedOptions(min_actors=4, max_actors=2)
    with pytest.raises(ConfigError, match=">= 1"):
        EmbedOptions(actors=0)
    with pytest.raises(ValueError, match=r"ingest.max_actors \(1\) is below ingest.min_actors \(2\)"):
        IngestConfig(min_actors=2, max_actors=1)
    assert Config().ingest == IngestConfig()


class _Cuda:
    def __init__(self, available: bool) -> None:
        self.available = available

    def is_available(self) -> bool:
        return self.available


@pytest.mark.parametrize(("gpu_ids", "cuda", "expected"), [([], True, "cpu"), ([0], True, "cuda"), ([], False, "cpu")])
def test_an_actor_uses_the_gpu_ray_gave_it(monkeypatch: pytest.MonkeyPatch, gpu_ids: list[int], cuda: bool,
                                           expected: str) -> None:  # fmt: skip
    import torch

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: gpu_ids)
    monkeypatch.setattr(torch, "cuda", _Cuda(cuda))
    assert runtime.actor_device() == expected


def test_a_gpu_torch_cannot_use_is_an_error_not_a_silent_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [0])
    monkeypatch.setattr(torch, "cuda", _Cuda(False))
    with pytest.raises(ConfigError, match="install a CUDA build of torch"):
        runtime.actor_device()


def _record_devices(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Spy on model loading: note the device asked for, load on the CPU (there is no CUDA here)."""
    from unigeoclip.models.unigeoclip import UniGeoCLIP

    asked: list[str] = []
    original = UniGeoCLIP.from_pretrained.__func__  # type: ignore[attr-defined]

    def spy(cls: Any, directory: Any, *, device: str = "cpu") -> Any:
        asked.append(str(device))
        return original(cls, directory, device="cpu")

    monkeypatch.setattr(UniGeoCLIP, "from_pretrained", classmethod(spy))
    return asked


def test_embedding_and_serving_models_load_on_the_device_of_their_actor(
    monkeypatch: pytest.MonkeyPatch, tiny_model: Any, tmp_path: Any
) -> None:
    import threading
    from collections import OrderedDict
    from types import SimpleNamespace

    from unigeoclip.embed import rows
    from unigeoclip.serve import encoder
    from unigeoclip.vectors.versions import model_fingerprint

    model_dir = tiny_model.save_pretrained(tmp_path / "model")
    asked = _record_devices(monkeypatch)
    monkeypatch.setattr(rows, "actor_device", lambda: "cuda")
    rows.EncodeRows(model_dir=str(model_dir), model_version="v1", fingerprint=model_fingerprint(str(model_dir)),
                    modalities=["coords"], run_id="r")  # fmt: skip
    rows.EncodeRows(model_dir=str(model_dir), model_version="v1", fingerprint=model_fingerprint(str(model_dir)),
                    modalities=["coords"], run_id="r", device="cpu")  # fmt: skip
    monkeypatch.setattr(encoder, "actor_device", lambda: "cuda")
    monkeypatch.setattr(encoder, "model_dir_for", lambda db, version, override: str(model_dir))
    replica = encoder.QueryEncoder.__new__(encoder.QueryEncoder)
    replica.db, replica.cfg, replica._lock, replica.models = (
        None,
        SimpleNamespace(model=None),
        threading.Lock(),
        OrderedDict(),
    )
    replica._load("v1")
    assert asked == ["cuda", "cpu", "cuda"]


def test_bad_embedding_options_name_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="decoders must be >= 1"):
        EmbedOptions(decoders=0)
    with pytest.raises(ConfigError, match="cpus_per_actor must be > 0"):
        EmbedOptions(cpus_per_actor=0)


def test_the_resource_wait_never_spins_below_rays_one_second_granularity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray's placement-group wait takes whole seconds: every call asks for at least 1 s."""
    import importlib

    pg_module = importlib.import_module("ray.util.placement_group")

    asked: list[float] = []

    class NeverReady:
        def wait(self, timeout_seconds: float) -> bool:
            asked.append(timeout_seconds)
            return False

    monkeypatch.setattr(runtime, "_started_here", False)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 0.0})
    monkeypatch.setattr(pg_module, "placement_group", lambda bundles, strategy: NeverReady())
    monkeypatch.setattr(pg_module, "remove_placement_group", lambda pg: None)
    monkeypatch.setattr(runtime.time, "monotonic", iter(range(0, 10_000, 1)).__next__)
    with pytest.raises(
        runtime.ResourcesUnavailableError, match=r"waited \d+ s for 1 x \{CPU: 1\}.*0 CPU \(1 CPU missing\)"
    ):
        runtime.wait_for_resources([{"CPU": 1.0}], timeout_s=5.5, what="training", hint="h", progress_every_s=2)
    assert asked and min(asked) >= 1 and all(isinstance(a, int) for a in asked)


def test_resume_refuses_a_run_directory_others_could_have_written(tmp_path: Any) -> None:
    """Resuming unpickles DeepSpeed's checkpoints: a world-writable file, or one of another user, stops it."""
    import os

    from unigeoclip import load_config
    from unigeoclip.errors import CheckpointError
    from unigeoclip.train.trainer import RUN_NAME, prepare_run

    cfg = load_config("tiny")
    run = tmp_path / "run"
    prepare_run(cfg, run, resume=False)
    ckpt = run / "ray" / RUN_NAME / "checkpoint_000001"
    ckpt.mkdir(parents=True)
    (ckpt / "mp_rank_00_model_states.pt").write_bytes(b"pickled")
    os.chmod(run, 0o755)
    assert prepare_run(cfg, run, resume=True) == cfg  # this user's, not world-writable: resumes
    os.chmod(ckpt / "mp_rank_00_model_states.pt", 0o666)
    with pytest.raises(CheckpointError, match=r"writable by every user.*chmod -R o-w"):
        prepare_run(cfg, run, resume=True)
    os.chmod(ckpt / "mp_rank_00_model_states.pt", 0o644)
    if os.geteuid() == 0:  # chown needs root: CI runs as root
        os.chown(ckpt, 12345, 12345)
        with pytest.raises(CheckpointError, match="belongs to user 12345"):
            prepare_run(cfg, run, resume=True)
        os.chown(ckpt, 0, 0)
    assert prepare_run(cfg, run, resume=True) == cfg


def test_resume_ignores_ingest_only_source_settings_but_not_the_model_or_the_data_it_reads(tmp_path: Any) -> None:
    """data.sources only say where ingest finds samples; a resumed run reads the store, so they may change."""
    from unigeoclip import load_config
    from unigeoclip.errors import ConfigError
    from unigeoclip.train.trainer import RUN_NAME, prepare_run

    cfg = load_config("tiny")
    run = tmp_path / "run"
    prepare_run(cfg, run, resume=False)
    (run / "ray" / RUN_NAME).mkdir(parents=True)
    other_source = cfg.updated({"data": {"sources": {"earth": {"max_places": 7}}}, "train": {"steps": 99}})
    resumed = prepare_run(other_source, run, resume=True)
    assert resumed.train.steps == 99 and resumed.data == cfg.data, "the saved config, with only the steps raised"
    for change in ({"data": {"dsm_px": 48}}, {"data": {"splits": {"region_fraction": 0.5}}},
                   {"model": {"embed_dim": 16}}):  # fmt: skip
        with pytest.raises(ConfigError, match=r"only train\.steps and the ingest-only data\.sources may change"):
            prepare_run(cfg.updated(change), run, resume=True)
