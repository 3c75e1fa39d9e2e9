"""The ``unigeoclip`` command: one sub-command per job, each a thin shell over the library.

Every sub-command takes ``--config`` (a preset or a YAML file) and any number of
``--set dotted.key=value`` overrides (values parsed as YAML), and runs on the Ray
cluster at ``--address`` / ``RAY_ADDRESS``, or on a local Ray when there is none.
Each prints its own progress and summary; what Ray and the libraries print goes to a
log file beside its output (``--log-file``; ``--verbose`` keeps it on the console).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ..config import Config, load_config, parse_overrides, preset_names
from ..errors import UniGeoCLIPError
from .console import Console, default_log_file, stop_event, wait_for


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, overrides=parse_overrides(args.set))


def _start(args: argparse.Namespace, console: Console, root: str | None) -> None:
    """The command's work begins: Ray's output to the log file beside ``root`` (or ``--log-file``), then Ray."""
    _route(args, console, root)
    _ray(args)


def _ray(args: argparse.Namespace) -> None:
    from ..cluster.runtime import ensure_ray

    ensure_ray(args.address, data_progress=args.verbose)


def _route(args: argparse.Namespace, console: Console, root: str | None) -> None:
    console.route(Path(args.log_file) if args.log_file else default_log_file(root, args.command))


def _output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verbose", action="store_true",
                   help="Ray's, Ray Data's, Ray Train's, DeepSpeed's and Serve's own output on the console, as they "
                   "print it (no log file)")  # fmt: skip
    p.add_argument("--log-file", default=None, metavar="PATH",
                   help="where that output goes otherwise [OUTPUT/logs/unigeoclip-<command>.log beside the "
                   "command's local output directory, else the temp directory]")  # fmt: skip


def _common(p: argparse.ArgumentParser, default_config: str) -> None:
    p.add_argument(
        "--config", default=default_config, help=f"preset ({', '.join(preset_names())}) or YAML file [{default_config}]"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")


def cmd_ingest(args: argparse.Namespace, console: Console) -> int:
    """Runs ``unigeoclip ingest``: ``--source`` into the sample store at ``--store``; prints the run's summary."""
    from ..ingest.aside import PlanAside
    from ..ingest.pipeline import ingest
    from ..samples.store import SampleStore
    from ..sources.registry import make_source

    cfg = _config(args)
    _route(args, console, args.store)
    planning = PlanAside(make_source(args.source, cfg))  # on another core while Ray starts here
    try:
        _ray(args)
        summary = ingest(planning, SampleStore(args.store), cfg.data, plan=cfg.ingest, lease_wait_s=args.wait_for_lease)
    finally:
        planning.cancel()  # a no-op once its plan was taken
    console.say(str(summary))
    return 0


def cmd_train(args: argparse.Namespace, console: Console) -> int:
    """Runs ``unigeoclip train`` on ``--store`` into ``--out``, or continues a run (``--resume``, ``--auto-resume``)."""
    from ..train.trainer import has_run, train

    overrides = parse_overrides(args.set)
    train_over = overrides.setdefault("train", {})
    if args.workers is not None:
        train_over["workers"] = args.workers
    if args.steps is not None:
        train_over["steps"] = args.steps
    cfg = load_config(args.config, overrides=overrides)
    resume = args.resume or (args.auto_resume and has_run(args.out))
    _start(args, console, args.out)
    if args.auto_resume:
        console.say(f"{'resuming the run' if resume else 'starting a new run'} in {args.out} (--auto-resume)")
    result = train(cfg, args.store, args.out, gpu=args.gpu, resume=resume)
    console.say(result.summary(cfg.train.val_split))
    return 0


def _embed_options(args: argparse.Namespace) -> Any:
    from dataclasses import replace

    from ..embed import EmbedOptions
    from ..modality import Modality
    from ..vectors import DEFAULT_POLICY

    modalities = tuple(Modality.parse(m.strip()) for m in args.modalities.split(",")) if args.modalities else None
    index = DEFAULT_POLICY if args.index_min_rows is None else replace(DEFAULT_POLICY, min_rows=args.index_min_rows)
    return EmbedOptions(
        modalities=modalities, gpu=args.gpu, actors=args.actors, min_actors=args.min_actors,
        max_actors=args.max_actors, batch_size=args.batch_size,
        commit_rows=args.commit_rows, commit_seconds=args.commit_seconds, publish=not args.no_publish, index=index,
        pushgateway=args.pushgateway, metrics_textfile=args.metrics_textfile, lease_wait_s=args.wait_for_lease,
    )  # fmt: skip


def cmd_embed(args: argparse.Namespace, console: Console) -> int:
    """Runs ``unigeoclip embed`` or ``reembed`` (``args.command``); exit status 1 when some rows failed to embed."""
    from ..embed import embed, reembed

    options = _embed_options(args)
    _start(args, console, args.db)
    if args.command == "embed":
        summary = embed(args.model, args.store, args.db, model_version=args.model_version, options=options)
    else:
        summary = reembed(args.store, args.db, model_dir=args.model, model_version=args.model_version, options=options)
    console.say(str(summary))
    return 0 if not summary.failed else 1


def cmd_refresh(args: argparse.Namespace, console: Console) -> int:
    """Runs ``unigeoclip refresh``: ingests ``--source``, then re-embeds into ``--db``; 1 when some rows failed."""
    from ..embed import refresh
    from ..samples.store import SampleStore
    from ..sources.registry import make_source

    cfg = _config(args)
    options = _embed_options(args)
    _start(args, console, args.db)
    summary = refresh(make_source(args.source, cfg), SampleStore(args.store), args.db, cfg.data, plan=cfg.ingest,
                      options=options)  # fmt: skip
    console.say(str(summary))
    return 0 if not summary.embed.failed else 1


def _embed_args(p: argparse.ArgumentParser, *, model_required: bool, serving_model: bool = True) -> None:
    """``serving_model=False``: no --model / --model-version (the job embeds with the serving model only)."""
    if serving_model:
        model_help = "model directory (save_pretrained / `unigeoclip train` output)"
        if not model_required:
            model_help += (
                "; default: the serving version's model. A new model is embedded beside it and serves once complete"
            )
        p.add_argument("--model", required=model_required, help=model_help)
    p.add_argument("--store", required=True, help="sample store directory or URI")
    p.add_argument("--db", required=True, help="LanceDB directory or object-store URI (s3://, gs://, az://)")
    if serving_model:
        p.add_argument(
            "--model-version", default=None, help="version name [derived: <config name>-<hash of the model>]"
        )
    p.add_argument("--modalities", default=None, help="comma-separated subset to embed [every tower of the model]")
    p.add_argument("--gpu", action="store_true", help="GPU actors (one per GPU) fed by CPU decoding actors")
    p.add_argument(
        "--actors", type=int, default=None, help="a fixed number of model actors [an autoscaling pool, see below]"
    )
    p.add_argument("--min-actors", type=int, default=1, help="model actors the autoscaling pool starts with [1]")
    p.add_argument(
        "--max-actors", type=int, default=None, help="the most model actors, one CPU (GPU) each [as the cluster grows]"
    )
    p.add_argument("--batch-size", type=int, default=128, help="samples per actor call [128]")
    p.add_argument("--commit-rows", type=int, default=20_000, help="rows per upsert commit [20000]")
    p.add_argument("--commit-seconds", type=float, default=60.0, help="commit at least this often [60]")
    p.add_argument("--no-publish", action="store_true", help="embed a new version without making it serve")
    p.add_argument("--index-min-rows", type=int, default=None, help="rows from which to build the ANN index")
    p.add_argument("--pushgateway", default=None, help="Prometheus Pushgateway URL [$UNIGEOCLIP_PUSHGATEWAY]")
    p.add_argument(
        "--metrics-textfile", default=None, help="textfile for the figures when there is no gateway [DB/metrics/]"
    )
    _lease_arg(p)
    if serving_model:  # (the refresh command has --address from _common)
        p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    p.set_defaults(func=cmd_embed)


def _lease_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--wait-for-lease", type=float, default=0.0, metavar="SECONDS",
        help="another run is writing to the same store or database: wait this long for it, then refuse [0: refuse "
        "at once, naming it]",
    )  # fmt: skip


def cmd_evaluate(args: argparse.Namespace, console: Console) -> int:
    """Runs ``unigeoclip evaluate``: a ``--model`` or kept ``--checkpoint`` on ``--store`` -> a report in ``--out``."""
    import time

    from ..eval.report import printed_summary, write_report
    from ..eval.suite import PEERS, EvalOptions, evaluate, parse_ensemble
    from ..geo.bbox import BBox

    bbox = None
    if args.map_bbox:
        try:
            values = [float(v) for v in args.map_bbox.split(",")]
        except ValueError:
            wanted = "lat_min,lon_min,lat_max,lon_max"
            raise UniGeoCLIPError(f"--map-bbox expects {wanted}, got {args.map_bbox!r}") from None
        bbox = BBox.parse(values, what="--map-bbox")
    peers = tuple(p for p in PEERS if not (p == "geoclip" and args.no_geoclip))
    options = EvalOptions(
        split=args.split, ensembles=tuple(parse_ensemble(e) for e in args.ensemble), max_samples=args.max_samples,
        db=args.db, model_version=args.model_version, geocell_level=args.geocell_level,
        probe_block_level=args.probe_block_level, probe_max_points=args.probe_points, peers=peers,
        ablation_models=tuple(Path(a) for a in args.ablation), map_bbox=bbox, pictures=not args.no_pictures,
    )  # fmt: skip
    model_dir = args.model
    _route(args, console, args.out)  # no Ray here, but DeepSpeed, transformers and the peers' libraries print
    if args.checkpoint:
        from ..train.checkpoint import load_checkpoint, parse_checkpoint_ref

        run_dir, step = parse_checkpoint_ref(args.checkpoint)
        model = load_checkpoint(run_dir, step)
        model_dir = model.save_pretrained(Path(args.out) / "checkpoint-model")  # what the report evaluated
        console.say(f"evaluating {args.checkpoint}: its weights are in {model_dir}")
    start = time.perf_counter()
    result = evaluate(model_dir, args.store, args.out, options)
    report = write_report(result, args.out)
    console.say(printed_summary(report, result.samples, time.perf_counter() - start))
    return 0


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="model directory (save_pretrained / `unigeoclip train` output)")
    kept = "a kept training checkpoint instead (the latest without @STEP), consolidated by DeepSpeed"
    which.add_argument("--checkpoint", metavar="RUN_DIR[@STEP]", help=kept)
    p.add_argument("--store", required=True, help="sample store directory or URI")
    p.add_argument("--out", required=True, help="report directory (report.md, metrics.json, PNGs)")
    p.add_argument("--db", default=None, help="read the split's embeddings from this LanceDB instead of encoding")
    p.add_argument("--model-version", default=None, help="with --db: the version to read [derived from --model]")
    p.add_argument("--split", default="test_year", help="split to evaluate: test_year or test_region [test_year]")
    extra = "an extra ensemble, e.g. aerial+text->coords (repeatable); 'all others -> T' always runs"
    p.add_argument("--ensemble", action="append", default=[], metavar="Q1+Q2->T", help=extra)
    other = "another model to compare, e.g. trained with --set model.coords.depth=0 (repeatable)"
    p.add_argument("--ablation", action="append", default=[], metavar="MODEL_DIR", help=other)
    p.add_argument("--max-samples", type=int, default=None, help="evaluate only the first N samples of the split")
    p.add_argument("--geocell-level", type=int, default=None, help="S2 level of the geocell gallery [auto]")
    p.add_argument("--probe-points", type=int, default=5000, help="at most this many store locations probed [5000]")
    p.add_argument("--probe-block-level", type=int, default=None, help="S2 level of the probes' spatial blocks [auto]")
    p.add_argument("--map-bbox", default=None, help="lat_min,lon_min,lat_max,lon_max of the PCA map [the store's]")
    p.add_argument("--no-geoclip", action="store_true", help="leave GeoCLIP out of the probes and the map")
    p.add_argument("--no-pictures", action="store_true", help="numbers only")
    p.set_defaults(func=cmd_evaluate)


def cmd_serve(args: argparse.Namespace, console: Console) -> int:
    """Serve on this machine's Ray (or --address) until Ctrl-C or SIGTERM; ``serving/serve_config.yaml`` is the
    cluster way."""
    from ray import serve

    from ..cluster.runtime import shutdown
    from ..serve import ServeConfig, start_service

    fields: dict[str, Any] = yaml.safe_load(Path(args.serve_config).read_text()) if args.serve_config else {}
    fields |= {"db": args.db} | {k: v for k in ("model", "store") if (v := getattr(args, k))}
    if args.colocate:
        fields["colocate"] = True
    cfg = ServeConfig.model_validate(fields)
    cfg.check_exposure(args.host, allow_unauthenticated=args.allow_unauthenticated)  # before anything starts
    if args.detach and not (args.address or os.environ.get("RAY_ADDRESS")):
        raise UniGeoCLIPError(
            "--detach leaves the service running on a cluster after this command ends, so it needs one: give "
            "--address or RAY_ADDRESS (or submit it: ray job submit -- python jobs/serve.py --detach ...)"
        )
    _start(args, console, args.db)
    stop = stop_event()  # after ray.init (which installs its own SIGTERM handler), before the deployments
    url = start_service(cfg, host=args.host, port=args.port, proxy_location=args.proxy_location)
    key = "required in X-API-Key" if cfg.resolved_api_key() else f"none (set ${cfg.api_key_env} to require one)"
    if args.detach:
        where = {"HeadOnly": "the head node", "Disabled": "no node (HTTP off)"}.get(args.proxy_location, "every node")
        console.say(f"deployed {cfg.db} at {url} on {where} (OpenAPI: /docs); API key: {key}; it keeps running: "
                    "`serve status` shows it, `serve shutdown` stops it")  # fmt: skip
        return 0
    console.say(f"serving {cfg.db} at {url} (map explorer: {url}/, OpenAPI: /docs); API key: {key}; Ctrl-C or "
                "SIGTERM stops")  # fmt: skip
    try:
        wait_for(stop)
    finally:  # nothing this command started outlives it: the deployments, its local Ray, their HAProxy
        serve.shutdown()
        shutdown()
    console.say("stopped")
    return 0


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", required=True, help="LanceDB directory or URI (its serving model version is served)")
    p.add_argument("--model", default=None, help="the serving version's model directory, if not where it was embedded")
    p.add_argument("--store", default=None,
                   help="the sample store the embeddings were made from: GET /v1/items and the map explorer's "
                   "thumbnails and texts read it")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="address to listen on [127.0.0.1]")
    p.add_argument("--port", type=int, default=8000, help="HTTP port [8000]")
    p.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="serve beyond loopback (--host) without an API key; refused otherwise",
    )
    p.add_argument("--serve-config", default=None, help="YAML of ServeConfig fields (limits, scaling, batching)")
    p.add_argument("--colocate", action="store_true",
                   help="one deployment: the gateway encodes and searches in its own process (lowest latency on "
                   "one machine; the encoder and retriever no longer scale on their own)")  # fmt: skip
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--proxy-location", default=None, choices=("EveryNode", "HeadOnly", "Disabled"),
                   help="where Serve answers HTTP [EveryNode]; HeadOnly for one entry point")  # fmt: skip
    p.add_argument(
        "--detach", action="store_true", help="deploy onto the cluster and return, leaving the service running there"
    )
    p.set_defaults(func=cmd_serve)


def cmd_demo(args: argparse.Namespace, console: Console) -> int:
    """Runs ``unigeoclip demo``: the whole pipeline on this machine in ``--out`` (a smoke run with ``--quick``)."""
    from .demo import DemoOptions, run_demo

    out = Path(args.out or ("data/demo-quick" if args.quick else "data/demo"))
    log_file = Path(args.log_file) if args.log_file else None
    kwargs = {"host": args.host, "port": args.port, "keep_serving": args.keep_serving, "verbose": args.verbose}
    options = (DemoOptions.quick(out, log_file=log_file, **kwargs) if args.quick
               else DemoOptions(out, log_file=log_file, **kwargs))  # fmt: skip
    run_demo(options, say=console.say, console=console)
    return 0


def _demo_args(p: argparse.ArgumentParser) -> None:
    where = "the demo's directory: its store is kept, the rest made afresh [data/demo; data/demo-quick with --quick]"
    p.add_argument("--out", default=None, help=where)
    p.add_argument("--quick", action="store_true", help="smoke run: 400 places, 30 training steps (a few minutes)")
    p.add_argument("--host", default="127.0.0.1", help="address the service listens on [127.0.0.1]")
    p.add_argument("--port", type=int, default=8000, help="HTTP port of the service [8000]")
    p.add_argument("--keep-serving", action="store_true",
                   help="after the examples and the report, keep the service and its map explorer up until Ctrl-C "
                   "or SIGTERM")  # fmt: skip
    p.set_defaults(func=cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    """The ``unigeoclip`` argument parser: one sub-parser per sub-command, its handler in ``func``."""
    from ..sources.registry import SOURCE_NAMES

    parser = argparse.ArgumentParser(prog="unigeoclip", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ingest", help="ingest a source into a Lance sample store (idempotent)")
    p.add_argument("--source", required=True, choices=SOURCE_NAMES)
    p.add_argument("--store", required=True, help="sample store directory or URI")
    _lease_arg(p)
    _common(p, "small")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("train", help="train on a sample store with Ray Train + DeepSpeed")
    p.add_argument("--store", required=True, help="sample store directory or URI")
    p.add_argument("--out", required=True, help="run directory (checkpoints, metrics, exported model)")
    p.add_argument("--workers", type=int, default=None, help="Ray Train workers [train.workers]")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps [train.steps]")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker, bf16, NCCL")
    resume = p.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    resume.add_argument(
        "--auto-resume",
        action="store_true",
        help="continue the run in --out if it holds one, else start it (for cluster jobs that are retried)",
    )
    _common(p, "small")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("embed", help="embed a sample store into LanceDB with a trained model (idempotent)")
    _embed_args(p, model_required=True)
    p = sub.add_parser("reembed", help="embed new or changed samples for the serving model version (scheduled)")
    _embed_args(p, model_required=False)

    p = sub.add_parser("refresh", help="scheduled: ingest a source (new imagery), then re-embed and publish it")
    p.add_argument("--source", required=True, choices=SOURCE_NAMES)
    _embed_args(p, model_required=False, serving_model=False)
    _common(p, "small")
    p.set_defaults(func=cmd_refresh)

    p = sub.add_parser("evaluate", help="retrieval, ensembles, geocells, probes and pictures of a model -> a report")
    _evaluate_args(p)
    p = sub.add_parser("serve", help="the retrieval service (Ray Serve) over an embedding store")
    _serve_args(p)
    p = sub.add_parser("demo", help="the whole pipeline on the real-Earth sample, on this machine (make demo)")
    _demo_args(p)
    for command in sub.choices.values():
        _output_args(command)
    return parser


SUBMITTED_JOB = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray's job supervisor in a submitted job's driver


def main(argv: Sequence[str] | None = None) -> int:
    """The ``unigeoclip`` entry point: the exit status (2, the message on stderr, on a library error; 130 on
    Ctrl-C). Any error is printed with the path of the command's log file."""
    args = build_parser().parse_args(argv)
    if SUBMITTED_JOB in os.environ:  # a Ray job (ray job submit, a RayJob): its output is the job's log, which the
        args.verbose = True  # cluster keeps and `ray job logs` / kubectl show; nothing is moved to a file
    console = Console(args.command, verbose=args.verbose)
    try:
        code: int = args.func(args, console)
        return code
    except (UniGeoCLIPError, FileNotFoundError) as exc:
        message = f"unigeoclip {args.command}: error: {exc}"
        console.filed(message)
        console.close()
        print(message + console.error_hint(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        console.filed("interrupted (Ctrl-C)")
        console.close()
        print(f"unigeoclip {args.command}: interrupted" + console.error_hint(), file=sys.stderr)
        return 130
    except BaseException:  # a bug or Ray's own error: its traceback follows on stderr, the log file holds the rest
        console.filed(f"failed:\n{traceback.format_exc()}")
        console.close()
        print(f"unigeoclip {args.command}: failed" + console.error_hint(), file=sys.stderr)
        raise
    finally:
        console.close()


if __name__ == "__main__":
    sys.exit(main())
