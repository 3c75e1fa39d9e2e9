"""``make demo`` end to end, small: every stage runs, the service answers each example, nothing is left running.

The demo runs on the session's Ray cluster (it must then leave Ray up) with 250 real-Earth
places, 250 landscape samples and a few training steps; `make demo QUICK=1` and the full demo are the same code.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import ray
from ray import serve
from unigeoclip.cli import main
from unigeoclip.demo import DemoOptions, run_demo
from unigeoclip.demo.pipeline import STAGES, port_is_free
from unigeoclip.runtime import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_runs_every_stage_and_answers_every_example(ray_cluster: dict, tmp_path: Path) -> None:
    lines: list[str] = []
    options = DemoOptions(out=tmp_path / "demo", places=250, landscape=250, steps=4, probe_points=250,
                          port=free_port())  # fmt: skip
    seconds = run_demo(options, command=main, say=lines.append)
    said = "\n".join(lines)

    assert len(seconds) == STAGES and all(s > 0 for s in seconds.values())
    assert json.loads((options.out / "timings.json").read_text()) == pytest.approx(seconds)
    # every example was asked and answered with labelled hits / a geolocation error
    assert said.count("POST /v1/search") == 2 and said.count("POST /v1/geolocate") == 3
    assert said.count(" km away ") == 5 and said.count(" km off (confidence ") == 3
    answers = json.loads((options.out / "examples.json").read_text())
    assert [a["path"] for a in answers] == ["/v1/search"] * 2 + ["/v1/geolocate"] * 3
    assert all(a["response"]["model_version"].startswith("earth-") for a in answers)
    report = options.out / "report"
    metrics = json.loads((report / "metrics.json").read_text())
    assert len(metrics["retrieval"]) == 12  # four modalities: every directed pair (of places)
    assert {p.name for p in report.glob("*.png")} >= {"coords_pca_map.png", "retrieval_r1.png", "tsne_modalities.png"}
    # shut down: no Serve app, the port is free again; the session's Ray (not the demo's) stays up
    assert ray.is_initialized() and not serve.status().applications
    deadline = time.monotonic() + 30  # the proxy actor exits shortly after serve.shutdown() returns
    while not port_is_free(options.host, options.port):
        assert time.monotonic() < deadline, f"port {options.port} still taken 30 s after the demo ended"
        time.sleep(0.5)
