"""One table row per evaluated run: the figures issue 22 asks for, with the seed spread of grouped runs.

python notes/issue22/summary.py /work/data/reports/base-s0 /work/data/reports/base-s1 ...
Runs named NAME-sK are grouped by NAME: each figure is printed as mean ± half the range.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def figures(report: Path) -> dict[str, float]:
    m = json.loads((report / "metrics.json").read_text())
    probes = m["probes"]["features"]
    ours = next(v for k, v in probes.items() if k.startswith("unigeoclip"))
    ret = m["retrieval"]
    ratios = [r["recall_over_chance"]["1"] for r in ret.values()]
    out = {
        "probe": ours["mean_r2"],
        "geoclip": probes.get("geoclip", {}).get("mean_r2", float("nan")),
        "pairs20": float(sum(x >= 20 for x in ratios)),
        "pairs": float(len(ratios)),
        "r1": float(m["retrieval_mean_recall"]["1"]),
        "a2c_km": ret["aerial->coords"]["geo"]["median_km"],
        "t2c_km": ret["text->coords"]["geo"]["median_km"],
    }
    for k, v in m.get("groups", {}).items():  # places / landscape apart, where the store has both
        out[f"probe_{k}"] = v.get("probe", float("nan"))
    runs = report.parent.parent / "runs"
    timing = runs / f"{report.name}.time"
    if timing.is_file():
        out["train_s"] = float(re.search(r"train_s=(\d+)", timing.read_text()).group(1))
    log = runs / report.name / "metrics.jsonl"
    if log.is_file():  # the steady rate: the median over the logged steps (step 0 and the final report excluded)
        rates = [json.loads(line).get("samples_per_s", 0.0) for line in log.read_text().splitlines()[1:-1]]
        out["samples_s"] = float(np.median([r for r in rates if r > 0])) if rates else float("nan")
    return out


def main(paths: list[str]) -> None:
    groups: dict[str, list[dict[str, float]]] = defaultdict(list)
    for p in paths:
        name = re.sub(r"-s\d+$", "", Path(p).name)
        groups[name].append(figures(Path(p)))
    keys = ["probe", "geoclip", "pairs20", "r1", "a2c_km", "t2c_km", "train_s", "samples_s"]
    print("| run | seeds | " + " | ".join(keys) + " |")
    print("|" + " --- |" * (len(keys) + 2))
    for name, rows in groups.items():
        cells = []
        for k in keys:
            vals = np.array([r.get(k, np.nan) for r in rows], float)
            mean, half = np.nanmean(vals), (np.nanmax(vals) - np.nanmin(vals)) / 2
            digits = 0 if k.endswith(("km", "_s", "20")) else 3
            cells.append(f"{mean:.{digits}f}" + (f" ± {half:.{digits}f}" if len(rows) > 1 else ""))
        print(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
