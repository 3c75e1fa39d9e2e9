"""The demo's example requests, sent over HTTP to the running service, and their answers in words.

Three questions a user of the service asks: which places does a description fit (text ->
coordinates), what does the terrain near a point look like (coordinates -> elevation
patches), and where was an aerial image taken (image -> geolocation). Hits are labelled
with the place names of their samples (the store's texts) and their distance to the truth.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import UniGeoCLIPError
from ...geo.distance import haversine_km
from ...samples.store import SampleStore

TEXT_QUERY = "A town in Norway, in Northern Europe. People there speak Norwegian."
POINT_QUERY = ("Mont Blanc, Alps", 45.833, 6.865)
GEOLOCATED_IMAGES = 3


@dataclass(frozen=True)
class Answer:
    """One example request and the service's answer (the parsed JSON body)."""

    title: str
    path: str
    body: dict[str, Any]
    response: dict[str, Any]
    seconds: float


def post_json(url: str, body: dict[str, Any], *, timeout_s: float = 60.0) -> dict[str, Any]:
    """POST ``body`` as JSON; the answer's JSON, or an error that carries the service's own message."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            answer: dict[str, Any] = json.loads(reply.read())
            return answer
    except urllib.error.HTTPError as exc:
        raise UniGeoCLIPError(f"{url} answered {exc.code}: {exc.read().decode(errors='replace')}") from None


def wait_until_ready(url: str, *, timeout_s: float = 180.0) -> dict[str, Any]:
    """Poll ``/readyz`` until the encoder and the retriever have loaded the serving version."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=10) as reply:
                ready: dict[str, Any] = json.loads(reply.read())
                return ready
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last = str(exc)
        time.sleep(0.5)
    raise UniGeoCLIPError(f"the service at {url} was not ready after {timeout_s:.0f} s (last answer: {last})")


def place_names(store: SampleStore, sample_ids: Sequence[str]) -> dict[str, str]:
    """sample_id -> the first clause of its text (the earth source's texts start with the place's names)."""
    if not sample_ids:
        return {}
    quoted = ", ".join("'" + s.replace("'", "''") + "'" for s in sample_ids)
    table = store.samples().to_table(columns=["sample_id", "text"], filter=f"sample_id IN ({quoted})")
    return {row["sample_id"]: _first_clause(row["text"] or "") for row in table.to_pylist()}


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    return float(haversine_km(np.array(lat1), np.array(lon1), np.array(lat2), np.array(lon2)))


def _first_clause(text: str, limit: int = 60) -> str:
    head = text.split(". ")[0]
    return head if len(head) <= limit else head[: limit - 3] + "..."


def held_out_images(store: SampleStore, count: int, split: str = "test_year") -> list[dict[str, Any]]:
    """``count`` held-out samples with an aerial tile (and their texts, for names), spread over the split."""
    wanted = f"current AND aerial_present AND split = '{split}'"
    table = store.samples().to_table(columns=["sample_id", "lat_deg", "lon_deg", "aerial", "text"], filter=wanted)
    if table.num_rows == 0:
        raise UniGeoCLIPError(f"the store has no {split} samples with an aerial tile to geolocate")
    order = np.argsort(np.asarray(table.column("sample_id").to_pylist()))
    picks = order[np.linspace(0, len(order) - 1, min(count, len(order))).astype(int)]
    return [table.slice(int(i), 1).to_pylist()[0] for i in picks]


def run_examples(url: str, store: SampleStore, say: Callable[[str], None] = print) -> list[Answer]:
    """Send the example requests, print each request and its answer; returns them for the caller to keep."""
    answers: list[Answer] = []

    def ask(title: str, path: str, body: dict[str, Any], shown: dict[str, Any]) -> dict[str, Any]:
        say(f"\n> {title}\n  POST {path} {json.dumps(shown)}")
        start = time.perf_counter()
        response = post_json(url + path, body)
        answers.append(Answer(title, path, shown, response, time.perf_counter() - start))
        return response

    body = {"query": {"text": TEXT_QUERY}, "targets": ["coords"], "k": 5}
    hits = ask("Which places fit a description? (text -> places)", "/v1/search", body, body)["hits"]
    names = place_names(store, [h["sample_id"] for h in hits])
    for h in hits:
        say(f"  {h['score']:.3f}  {h['lat_deg']:7.2f}, {h['lon_deg']:7.2f}  {names.get(h['sample_id'], '?')}")

    label, lat, lon = POINT_QUERY
    body = {"query": {"coords": {"lat_deg": lat, "lon_deg": lon}}, "targets": ["dsm"], "k": 5}
    hits = ask(f"Elevation patches nearest to {label} (coordinates -> DSM)", "/v1/search", body, body)["hits"]
    names = place_names(store, [h["sample_id"] for h in hits])
    for h in hits:
        km = _km(lat, lon, h["lat_deg"], h["lon_deg"])
        say(f"  {h['score']:.3f}  {km:6.0f} km away  {names.get(h['sample_id'], '?')}")

    for row in held_out_images(store, GEOLOCATED_IMAGES):
        image = {"image_b64": base64.b64encode(row["aerial"]).decode()}
        shown = {"query": {"aerial": {"image_b64": f"<{len(row['aerial'])} bytes of PNG>"}}, "k": 5}
        name = _first_clause(row["text"] or "") or row["sample_id"]
        title = f"Where was this held-out aerial tile taken? ({name})"
        found = ask(title, "/v1/geolocate", {**shown, "query": {"aerial": image}}, shown)
        km = _km(row["lat_deg"], row["lon_deg"], found["lat_deg"], found["lon_deg"])
        say(f"  predicted {found['lat_deg']:.2f}, {found['lon_deg']:.2f}; truth {row['lat_deg']:.2f}, "
            f"{row['lon_deg']:.2f}: {km:.0f} km off (confidence {found['confidence']:.2f})")  # fmt: skip
    return answers
