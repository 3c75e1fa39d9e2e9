"""The retrieval service's typed config: where the store is, the request limits, and each deployment's scaling.

One object travels from the CLI, ``serve_config.yaml`` (``args:``) or a RayService manifest to
``build_app``; every replica gets it as an init argument, so no replica reads a file to configure itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from ..errors import ConfigError
from ..samples.validate import MAX_TEXT_CHARS
from .ratelimit import parse_networks

RETRY_AFTER_S = 1  # every 503 for load (a full queue, a busy decode pool, a call timeout) says: retry in 1 s


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Closed):
    """What one request may ask for; anything beyond is a 4xx that names the limit."""

    max_body_bytes: int = Field(8 * 2**20, gt=0, description="request body, bytes (base64 images included)")
    # 2048 x 2048: what the model can use, a few times the towers' inputs (a 360-degree panorama's 80-degree view
    # at 224 px wants ~1,000 px of width); a 16.7 Mpx image costs 64 MB of RGB and its decoding time for nothing.
    max_image_pixels: int = Field(2048 * 2048, gt=0, description="width x height of one image, read from its header")
    max_dsm_pixels: int = Field(1024 * 1024, gt=0, description="heights in one DSM (array or GeoTIFF)")
    max_text_chars: int = Field(MAX_TEXT_CHARS, gt=0)
    max_k: int = Field(100, ge=1, le=10_000, description="largest k of /v1/search and /v1/geolocate")


class Scaling(_Closed):
    """One deployment's replicas: a fixed ``num_replicas``, or autoscaling between min and max."""

    num_replicas: int | None = Field(None, ge=1, description="fixed replica count (disables autoscaling)")
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(4.0, gt=0)
    max_ongoing_requests: int = Field(32, ge=1)
    max_queued_requests: int = Field(
        128, ge=1, description="requests that may wait for a replica; more are refused at once (a 503 to the client)"
    )
    num_cpus: float = Field(0.5, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    # Measured (benchmarks/bench_serve_autoscale.py, docs/serving.md): replicas report their load every 10 s
    # (Ray's metrics interval), so a deployment reacts 10-15 s after load rises whatever the delay; 10 s more
    # rides out a burst, and 2 minutes of quiet before removing replicas keeps a lull from undoing a scale-up.
    upscale_delay_s: float = Field(10.0, ge=0, description="load above target this long before adding replicas")
    downscale_delay_s: float = Field(120.0, ge=0, description="load below target this long before removing replicas")
    look_back_period_s: float = Field(
        15.0, gt=10, description="window the ongoing-request average is taken over (above Ray's 10 s metrics interval)"
    )
    # A stopping replica sleeps this long, then again while requests are still running in it: Ray's 2 s made
    # every stop (Ctrl-C, a scale-down, a new version) wait 2 s more than its requests. The routers stop sending
    # to it before the first sleep ends (Serve broadcasts the change at once), and what still arrives is
    # refused and retried elsewhere, so a shorter poll loses nothing.
    graceful_shutdown_wait_loop_s: float = Field(
        0.5, gt=0, description="how often a stopping replica checks that its last requests have finished"
    )

    def deployment_options(self) -> dict[str, Any]:
        """Keyword arguments for ``Deployment.options``."""
        actor: dict[str, Any] = {"num_cpus": self.num_cpus}
        if self.num_gpus:
            actor["num_gpus"] = self.num_gpus
        opts: dict[str, Any] = {
            "ray_actor_options": actor,
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "graceful_shutdown_wait_loop_s": self.graceful_shutdown_wait_loop_s,
            # what Serve answers a request its full queue refuses: a 503 that says when to come back
            "backpressure_config": {"status_code": 503, "retry_after_s": RETRY_AFTER_S},
        }
        if self.num_replicas is not None:
            opts["num_replicas"] = self.num_replicas
        else:
            opts["autoscaling_config"] = {
                "min_replicas": self.min_replicas,
                "max_replicas": max(self.max_replicas, self.min_replicas),
                "target_ongoing_requests": self.target_ongoing_requests,
                "upscale_delay_s": self.upscale_delay_s,
                "downscale_delay_s": self.downscale_delay_s,
                "look_back_period_s": self.look_back_period_s,
            }
        return opts


class ServeConfig(_Closed):
    """Everything ``build_app`` needs. ``db`` is the LanceDB URI; queries are encoded with its serving model."""

    db: str = Field(description="LanceDB directory or object-store URI written by `unigeoclip embed`")
    model: Path | None = Field(
        None,
        description="model directory of the serving version, when the path recorded at embedding time is not "
        "readable here; it must be the model the store serves (checked at start-up)",
    )
    store: str | None = Field(
        None,
        description="the sample store the embeddings were made from: GET /v1/items reads stored content (the map "
        "explorer's thumbnails and texts) from it; unset, that route answers 404",
    )
    api_key: SecretStr | None = Field(None, description="required in the X-API-Key header of /v1/* when set")
    api_key_env: str = Field("UNIGEOCLIP_API_KEY", description="environment variable read for the key when unset")
    metrics_token: SecretStr | None = Field(None, description="scrape token GET /metrics requires (Bearer) when set")
    metrics_token_env: str = Field(
        "UNIGEOCLIP_METRICS_TOKEN",
        description="environment variable holding a scrape token: when set, GET /metrics needs it as a Bearer token",
    )
    auth_failure_limit: int = Field(
        20,
        ge=0,
        description="401s one client address may get per auth_failure_window_s from a gateway replica; then every "
        "/v1/* request and /metrics scrape from it is a 429 until the window clears (0: no limit)",
    )
    auth_failure_window_s: float = Field(60.0, gt=0, description="the window auth_failure_limit counts over")
    trusted_proxies: tuple[str, ...] = Field(
        (),
        description="addresses or CIDRs of proxies that append X-Forwarded-For (a load balancer, an ingress); a "
        "request from one is counted under the last hop it names that is not itself a trusted proxy",
    )
    call_timeout_s: float = Field(
        20.0, gt=0, description="longest wait for the encoder or the retriever; then a 503 with Retry-After"
    )
    decode_workers: int = Field(2, ge=1, description="threads per gateway replica that validate and decode requests")
    decode_queue: int | None = Field(
        None,
        ge=0,
        description="requests that may wait for a decode thread; more get a 503 with Retry-After at once. Unset: "
        "every request the gateway replica admits (its max_ongoing_requests) may wait, so only Serve's bounded "
        "queue (max_queued_requests) sheds load and 16 clients are never refused by a pool of 2 threads",
    )
    ready_cache_s: float = Field(2.0, ge=0, description="GET /readyz answers from a state at most this old")
    require_api_key: bool = Field(
        False, description="refuse to start without a key (the RayService sets it: a missing Secret stops the rollout)"
    )
    limits: Limits = Limits()
    max_batch_size: int = Field(32, ge=1, description="queries one encoder call batches")
    batch_wait_timeout_s: float = Field(
        0.0,
        ge=0,
        description="how long a batch waits to fill; 0: a batch is whatever queued while the previous one ran "
        "(no wait at low load, and on CPU fuller batches buy no throughput: benchmarks/bench_serve.py). GPUs, "
        "where fuller batches pay, want a few ms",
    )
    refresh_s: float = Field(1.0, gt=0, description="how often replicas re-read the store's serving alias")
    memory_rows: int = Field(
        200_000, ge=0, description="snapshots up to this many rows are searched exactly in memory (0: never)"
    )
    torch_threads: int = Field(1, ge=1, description="intra-op threads of each encoder replica")
    colocate: bool = Field(
        False,
        description="run the encoder and the retriever inside each gateway replica: two Ray hops fewer per "
        "request (the lowest latency on one machine), but they scale with the gateway and `encoder` / "
        "`retriever` below are unused",
    )
    gateway: Scaling = Scaling(max_replicas=4, num_cpus=0.25, max_ongoing_requests=64)
    encoder: Scaling = Scaling()
    retriever: Scaling = Scaling(num_cpus=0.25)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_parse(cls, cidrs: tuple[str, ...]) -> tuple[str, ...]:
        parse_networks(cidrs)
        return cidrs

    @model_validator(mode="after")
    def _a_batch_can_fill(self) -> Self:
        name = "gateway" if self.colocate else "encoder"  # colocated, the gateway holds the encoder
        holds = getattr(self, name).max_ongoing_requests
        if holds < self.max_batch_size:
            raise ValueError(
                f"{name}.max_ongoing_requests ({holds}) is below max_batch_size ({self.max_batch_size}): a replica "
                "would never hold a full batch; raise it to at least the batch"
            )
        return self

    def resolved_decode_queue(self) -> int:
        """``decode_queue``, else the gateway replica's ``max_ongoing_requests``."""
        return self.gateway.max_ongoing_requests if self.decode_queue is None else self.decode_queue

    def resolved_api_key(self) -> str | None:
        """The configured key, else the one in ``$api_key_env`` (read inside the replica), else None.

        Fails closed: a key that is set but empty is a :class:`ConfigError` (never "no auth"), and so is
        no key at all with ``require_api_key``.
        """
        key = _secret(self.api_key, "api_key", self.api_key_env, "to serve without one (loopback only)")
        if key is None and self.require_api_key:
            raise ConfigError(
                f"this service requires an API key (require_api_key) and ${self.api_key_env} is not set: "
                "create the Secret the manifest reads, or set the variable"
            )
        return key

    def resolved_metrics_token(self) -> str | None:
        """The scrape token (``metrics_token``, else ``$metrics_token_env``; None: /metrics is open); set but empty
        is an error, as for the API key."""
        return _secret(self.metrics_token, "metrics_token", self.metrics_token_env, "to leave /metrics open")

    def check_exposure(self, host: str, *, allow_unauthenticated: bool = False) -> None:
        """Refuse to listen beyond loopback without an API key, unless the operator says so explicitly."""
        if is_loopback(host) or allow_unauthenticated or self.resolved_api_key() is not None:
            return
        raise ConfigError(
            f"serving on {host} without an API key would open /v1/* to every host that reaches it: set "
            f"${self.api_key_env} (or api_key), listen on 127.0.0.1, or pass --allow-unauthenticated"
        )


def _secret(configured: SecretStr | None, field: str, env: str, unset_means: str) -> str | None:
    """A secret from the config, else from ``$env`` (read where it is used: inside the replica), else None;
    set but empty is a :class:`ConfigError` (a blank never means "no secret")."""
    import os

    value: str | None
    if configured is not None:
        value, where = configured.get_secret_value(), field
    else:
        value, where = os.environ.get(env), f"${env}"
    if value is not None and not value.strip():
        raise ConfigError(f"{where} is set but empty: give it a value, or unset it {unset_means}")
    return value


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``localhost`` included); a name that is not an address is not."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
