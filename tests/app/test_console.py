"""A command's console: its progress lines and summaries on stdout; what Ray and the libraries print, in a log file.

The routing is checked in real processes (a pytest process's stdout is not file descriptor 1): a small
script for the mechanism itself, then the ``unigeoclip`` command attached to the session's Ray, once
quiet and once ``--verbose``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray
from unigeoclip.obs.progress import PROGRESS_LOGGER, Rate

ROOT = Path(__file__).resolve().parents[2]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_rate_prints_its_first_line_once_work_has_run_then_one_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=PROGRESS_LOGGER)
    t = FakeClock()
    rate = Rate("ingest", 1000, "items", first_s=10, every_s=60, clock_s=t)
    t.now += 30  # start-up: nothing done yet, nothing printed, and not counted in the rate
    rate.update(0)
    rate.update(100)  # the first units: the rate is measured from here
    t.now += 9
    rate.update(190)
    assert caplog.messages == []
    t.now += 1
    rate.update(200)  # 100 items in 10 s
    assert caplog.messages == ["ingest: 200/1,000 items (20%) | 10.0 items/s | eta 1 m 20 s"]
    t.now += 59
    rate.update(790)
    assert len(caplog.messages) == 1
    t.now += 1
    rate.update(800, "3 rejected")  # 700 in 70 s; 200 to go
    assert caplog.messages[-1] == "ingest: 800/1,000 items (80%) | 10.0 items/s | eta 0 m 20 s | 3 rejected"
    assert rate.lines == 2


def test_a_rate_from_start_prints_while_nothing_is_done_and_counts_its_rate_from_its_creation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=PROGRESS_LOGGER)
    t = FakeClock()
    rate = Rate("serve", 3, "deployments", first_s=3, every_s=5, from_start=True, clock_s=t)
    t.now += 2
    rate.update(0, "starting: the controller")
    assert caplog.messages == []
    t.now += 1
    rate.update(0, "starting: the controller")  # nothing done, but the wait itself is worth a line
    assert caplog.messages == ["serve: 0/3 deployments (0%) | starting: the controller"]
    t.now += 4
    rate.update(2, "starting: QueryEncoder")
    assert len(caplog.messages) == 1
    t.now += 3
    rate.update(2, "starting: QueryEncoder")  # 2 in the 10 s since the Rate was made
    expected = "serve: 2/3 deployments (67%) | 0.2 deployments/s | eta 0 m 05 s | starting: QueryEncoder"
    assert caplog.messages[-1] == expected


ROUTED = """
import logging, os, sys, warnings
from pathlib import Path
from unigeoclip.app.console import Console
from unigeoclip.obs.progress import say, warn

console = Console("probe")
say("before the work: console")
console.route(Path(sys.argv[1]))
print("print(): file")
sys.stderr.write("sys.stderr: file\\n")
os.write(1, b"fd 1 (a C library, a child process): file\\n")
os.write(2, b"fd 2 (Ray's core worker): file\\n")
logging.getLogger("ray.data").warning("a Ray logger: file")
warnings.warn("a Python warning: file")
say("a progress line: console and file")
warn("a library warning: console and file")
os.system("echo 'a child process: file'")
console.close()
print("after close: console")
"""


def test_routing_sends_everything_but_the_commands_own_lines_to_the_log_file(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "probe.log"
    done = subprocess.run([sys.executable, "-c", ROUTED, str(log)], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "before the work: console",
        f"log: {log} (Ray, Ray Data, Ray Train, DeepSpeed and Serve; --verbose shows them here)",
        "a progress line: console and file",
        "a library warning: console and file",
        "after close: console",
    ]
    assert done.stderr == ""
    filed = log.read_text()
    filed_lines = [
        "print(): file", "sys.stderr: file", "fd 1 (a C library", "fd 2 (Ray's core worker)", "a Ray logger: file",
        "a Python warning: file", "a child process: file", "INFO unigeoclip.progress: a progress line",
        "WARNING unigeoclip.progress: a library warning",
    ]  # fmt: skip
    for text in filed_lines:
        assert text in filed, text
    assert "console" not in filed.replace("console and file", "")


@pytest.mark.integration
def test_the_command_files_rays_output_and_verbose_shows_it(ray_cluster: dict, tmp_path: Path) -> None:
    """`unigeoclip ingest` on the session's Ray: quiet, then again with --verbose (the store has it all by then)."""
    store = tmp_path / "store"
    env = os.environ | {"RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    command = [sys.executable, "-m", "unigeoclip.app.cli", "ingest", "--source", "synthetic", "--config", "tiny",
               "--store", str(store)]  # fmt: skip
    quiet = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    log = store / "logs" / "unigeoclip-ingest.log"
    console = quiet.stdout.splitlines()
    assert console[0].startswith(f"log: {log} ") and console[1].startswith("ingest ") and "written: " in console[2]
    assert len(console) <= 10 and quiet.stderr == "", quiet.stdout + quiet.stderr  # the summary, nothing of Ray's
    filed = log.read_text()
    assert "Progress bars disabled" in filed, filed  # Ray Data's logger, told that the command prints its own
    assert "INFO unigeoclip.progress: ingest " in filed  # the summary too, with a time

    verbose_log = tmp_path / "verbose.log"
    verbose = subprocess.run([*command, "--verbose", "--log-file", str(verbose_log)], capture_output=True, text=True,
                             env=env, cwd=ROOT, timeout=300)  # fmt: skip
    assert verbose.returncode == 0, verbose.stdout + verbose.stderr
    shown = verbose.stdout + verbose.stderr
    assert "Running Dataset" in shown and "log: " not in shown, shown  # Ray Data's own progress, no log file
    assert not verbose_log.exists()
    assert log.read_text() == filed


def test_an_error_names_the_log_file(tmp_path: Path) -> None:
    """A refused run prints its error on stderr with the log file's path, and files the error there too."""
    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "unigeoclip.app.cli", "evaluate", "--model", str(tmp_path / "no-model"), "--store",
         str(tmp_path / "no-store"), "--out", str(out)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    log = out / "logs" / "unigeoclip-evaluate.log"
    assert done.returncode == 2
    assert done.stdout.splitlines() == [f"log: {log} (Ray, Ray Data, Ray Train, DeepSpeed and Serve; --verbose shows "
                                        "them here)"]  # fmt: skip
    error, hint = done.stderr.splitlines()
    assert error.startswith("unigeoclip evaluate: error: ") and "not a UniGeoCLIP model directory" in error
    assert hint == f"  log of Ray and the libraries: {log}"
    assert f"ERROR unigeoclip: {error}" in log.read_text()
