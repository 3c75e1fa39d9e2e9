"""``ray_cluster.local.yaml`` started as ``make cluster-up`` starts it, for tests and benchmarks.

A 0-CPU head whose real Ray autoscaler adds and removes local worker nodes (Ray's fake multi-node
provider), on free ports, with its own temp dir and token (token authentication on, as Ray 2.60
defaults to), in a session of its own so that stopping it stops exactly its processes. Jobs go
through ``ray job submit`` and the cluster is observed through the dashboard's state API, as a user
would: the process using this class never joins the cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class JobFailed(AssertionError):
    pass


class LocalCluster:
    def __init__(self, *, config: Path = ROOT / "ray_cluster.local.yaml", idle_timeout_minutes: float | None = None,
                 system_config: dict[str, Any] | None = None):  # fmt: skip
        self.dir = Path(tempfile.mkdtemp(prefix="ugc-", dir="/tmp"))  # short: Ray's socket paths have a limit
        self.config = yaml.safe_load(config.read_text())
        if idle_timeout_minutes is not None:
            self.config["idle_timeout_minutes"] = idle_timeout_minutes
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.token = self.dir / "auth_token"
        self.token.write_text(secrets.token_hex(32))
        self.head: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "head.log"
        self.system_config = system_config or {}
        # Ray's head lists every node's metrics port here for Prometheus (file_sd), as the autoscaler adds them.
        self.prometheus_targets = self.dir / "ray" / "prom_metrics_service_discovery.json"

    @property
    def env(self) -> dict[str, str]:
        """What a client (``ray job submit``, the state API) needs to reach the cluster."""
        return os.environ | {
            "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
            "RAY_ADDRESS": self.dashboard,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(self.token),
        }

    def start(self, timeout_s: float = 120) -> float:
        """Start the head (no worker nodes); returns the seconds until the job API answered."""
        import ray

        self.config["provider"]["gcs_address"] = f"{ray.util.get_node_ip_address()}:{self.gcs_port}"
        path = self.dir / "cluster.yaml"
        path.write_text(yaml.safe_dump(self.config))
        env = self.env | {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
        env.pop("RAY_ADDRESS")
        command = [
            str(VENV_BIN / "ray"), "start", "--head", "--block", "--num-cpus=0", f"--port={self.gcs_port}",
            f"--dashboard-port={self.dashboard_port}", "--dashboard-host=127.0.0.1",
            f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
            f"--autoscaling-config={path}", f"--temp-dir={self.dir / 'ray'}", "--disable-usage-stats",
        ]  # fmt: skip
        if self.system_config:
            command.append(f"--system-config={json.dumps(self.system_config)}")
        start = time.monotonic()
        with self.log.open("wb") as log:
            self.head = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_for(lambda: self._answers(), timeout_s, "the head's job API")
        return time.monotonic() - start

    def _answers(self) -> bool:
        assert self.head is not None
        if self.head.poll() is not None:
            raise RuntimeError(f"the head exited ({self.head.returncode}):\n{self.log.read_text()[-3000:]}")
        from ray.util.state.exception import RayStateApiException

        try:
            self.nodes()
        except (OSError, RayStateApiException):  # not up yet: connection refused, 5xx while the dashboard starts
            return False
        return True

    def _state(self) -> Any:
        """Ray's state API client for this cluster, with its token."""
        from ray.util.state.api import StateApiClient

        return StateApiClient(address=self.dashboard, headers={"Authorization": f"Bearer {self.token.read_text()}"})

    def nodes(self, *, workers_only: bool = True) -> list[Any]:
        """The alive nodes (state API, with the cluster's token), without the head unless asked."""
        from ray.util.state.common import ListApiOptions, StateResource

        options = ListApiOptions(limit=1000)
        found = self._state().list(StateResource.NODES, options=options, raise_on_missing_output=False)
        return [n for n in found if n.state == "ALIVE" and not (workers_only and n.is_head_node)]

    def actors(self, class_prefix: str) -> list[Any]:
        """The alive actors whose class name starts with ``class_prefix`` (Serve's replicas: ``ServeReplica:``)."""
        from ray.util.state.common import ListApiOptions, StateResource

        options = ListApiOptions(limit=10_000)
        found = self._state().list(StateResource.ACTORS, options=options, raise_on_missing_output=False)
        return [a for a in found if a.state == "ALIVE" and a.class_name.startswith(class_prefix)]

    def wait_for(self, condition: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.5) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = condition()
            if got:
                return got
            time.sleep(every_s)
        raise TimeoutError(f"no {what} after {timeout_s:.0f} s; head log: {self.log}")

    def submit(self, *entrypoint: str, timeout_s: float = 900, working_dir: Path = ROOT,
               env: dict[str, str] | None = None) -> str:  # fmt: skip
        """``ray job submit --working-dir ROOT -- python ...``: the job's output, or :class:`JobFailed`.

        ``env``: environment variables of the job (its runtime environment)."""
        command = [str(VENV_BIN / "ray"), "job", "submit", f"--working-dir={working_dir}"]
        if env:
            command.append(f"--runtime-env-json={json.dumps({'env_vars': env})}")
        command += ["--", *entrypoint]
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout_s, check=False)
        if done.returncode != 0 or not re.search(r"Job '\S+' succeeded", done.stdout + done.stderr):  # not STOPPED
            what = " ".join(entrypoint)
            raise JobFailed(f"{what} failed ({done.returncode}):\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}")
        return done.stdout

    def stop(self) -> None:
        """Kill every process of the cluster (they all share the head's session), then its files."""
        if self.head is not None:
            sid = self.head.pid
            for _ in range(20):
                members = [int(p) for p in os.listdir("/proc") if p.isdigit() and _session_of(int(p)) == sid]
                if not members:
                    break
                for pid in members:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.25)
            self.head.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def _session_of(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return int(fields[3])  # after the state: ppid, pgrp, session
