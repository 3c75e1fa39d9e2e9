"""Compare two evaluation reports figure by figure (timings left out): issue 24's "same figures" check.

python notes/issue24/compare_metrics.py BEFORE/metrics.json AFTER/metrics.json
"""

import json
import sys
from pathlib import Path
from typing import Any

TIMINGS = ("seconds", "seconds_total")


def strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    if type(a) is not type(b):
        return [f"{path}: {a!r} != {b!r}"]
    if isinstance(a, dict):
        return [d for k in sorted(set(a) | set(b)) for d in differences(a.get(k), b.get(k), f"{path}/{k}")]
    if isinstance(a, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


if __name__ == "__main__":
    found = differences(*(strip(json.loads(Path(p).read_text())) for p in sys.argv[1:3]))
    print("\n".join(found))
    print(f"differences: {len(found)}" + (" | identical" if not found else ""))
