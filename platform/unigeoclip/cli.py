"""The ``unigeoclip`` command: one sub-command per job, each a thin shell over the library.

Every sub-command takes ``--config`` (a preset or a YAML file) and any number of
``--set dotted.key=value`` overrides (values parsed as YAML), and runs on the Ray
cluster at ``--address`` / ``RAY_ADDRESS``, or on a local Ray when there is none.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from .config import Config, load_config
from .errors import UniGeoCLIPError


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["a.b=1", "a.c=[1, 2]"]`` -> ``{"a": {"b": 1, "c": [1, 2]}}``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UniGeoCLIPError(f"--set expects dotted.key=value, got {pair!r}")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return out


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, overrides=parse_overrides(args.set))


def _common(p: argparse.ArgumentParser, default_config: str) -> None:
    p.add_argument(
        "--config", default=default_config, help=f"preset (tiny, small, paper) or YAML file [{default_config}]"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")


def cmd_ingest(args: argparse.Namespace) -> int:
    from .data.ingest import ingest
    from .data.sources import make_source
    from .data.store import SampleStore
    from .runtime import ensure_ray

    cfg = _config(args)
    ensure_ray(args.address)
    summary = ingest(make_source(args.source, cfg), SampleStore(args.store), cfg.data)
    print(summary)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .runtime import ensure_ray
    from .train.trainer import train

    overrides = parse_overrides(args.set)
    train_over = overrides.setdefault("train", {})
    if args.workers is not None:
        train_over["workers"] = args.workers
    if args.steps is not None:
        train_over["steps"] = args.steps
    cfg = load_config(args.config, overrides=overrides)
    ensure_ray(args.address)
    result = train(cfg, args.store, args.out, gpu=args.gpu, resume=args.resume)
    print(f"model: {result.model_dir}")
    val = {k: v for k, v in result.metrics.items() if k == "val_r1"}
    if val:
        print(f"final mean recall@1 on {cfg.train.val_split}: {val['val_r1']:.3f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .data.sources import SOURCE_NAMES

    parser = argparse.ArgumentParser(prog="unigeoclip", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ingest", help="ingest a source into a Lance sample store (idempotent)")
    p.add_argument("--source", required=True, choices=SOURCE_NAMES)
    p.add_argument("--store", required=True, help="sample store directory or URI")
    _common(p, "small")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("train", help="train on a sample store with Ray Train + DeepSpeed")
    p.add_argument("--store", required=True, help="sample store directory or URI")
    p.add_argument("--out", required=True, help="run directory (checkpoints, metrics, exported model)")
    p.add_argument("--workers", type=int, default=None, help="Ray Train workers [train.workers]")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps [train.steps]")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker, bf16, NCCL")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    _common(p, "small")
    p.set_defaults(func=cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except (UniGeoCLIPError, FileNotFoundError) as exc:
        print(f"unigeoclip {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
