"""A local Ray's Serve settings: the fast ingress, on ports that another Serve on the machine does not hold."""

from __future__ import annotations

import socket
from pathlib import Path

from unigeoclip.runtime import FAST_SERVE_INGRESS, SERVE_NODE_PORTS, free_port, use_fast_serve_ingress


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
