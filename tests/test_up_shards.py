"""``psd up --shards N``: the embedded store is a Redis Cluster of N primaries in the data
directory, with a broker server beside it, all real processes. It serves writes and
multi-user reads, its keys on every primary; a node SIGKILLed is started again with its data;
a restart on the same data directory keeps the data; a data directory holding another shape
of store is refused, saying what to do; SIGKILLed, psd up leaves no node running, and killed
while its cluster first forms, it forms it afresh at the next start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import redis

from psd.cli.shards import forget_unformed
from psd.embedded import EmbeddedServer, data_dir_password, free_port
from psd.embedded_cluster import EmbeddedCluster
from tests.support import alive, psd_command, wait_for
from tests.test_cli import NOW, _get
from tests.test_orphans import kill_leaves_nothing
from tests.test_up import Up, descendants

USERS = range(1, 13)


def write_user(up: Up, uid: int, aid: int, value: int, queued: bool = False) -> str:
    """One activity's value (a write of the same activity replaces it)."""
    body = {"thing": "steps", "uid": uid, "atid": 2, "aid": aid, "value": value}
    body.update(ts1=NOW - 60, ts2=NOW)
    target = up.url + "/v1/write" + ("?async=1" if queued else "")
    return _get(target, json.dumps(body).encode(), {"Content-Type": "application/json"}, 10)


def sums(up: Up) -> dict[int, int]:
    """Every user's steps, from one multi-user read through the API."""
    form = ("things=steps&ids=" + ",".join(map(str, USERS))).encode()
    answer = json.loads(_get(up.url + f"/v1/mumt_query/all/{NOW - 60}/{NOW}", form, timeout=10))
    return {int(uid): row["steps"] for uid, row in answer["data"].items()}


def sums_or_none(up: Up) -> dict[int, int] | None:
    try:
        return sums(up)
    except OSError:  # a 503 while a node is down
        return None


def node_ports(data_dir: Path) -> list[int]:
    layout = json.loads((data_dir / "cluster" / "cluster.json").read_text())
    return [int(port) for port, _bus in layout["nodes"]]


def node_pid(up: Up, port: int) -> int | None:
    """The pid of the server on ``port`` below psd up (its title ends ``HOST:PORT [cluster]``)."""
    found = [
        pid
        for pid, args in descendants(up.proc.pid).items()
        if "valkey-server" in args and f"127.0.0.1:{port} " in args + " "
    ]
    return found[0] if found else None


def broker_pid(up: Up) -> int:
    """The pid of the broker server below psd up (the one server not in the cluster)."""
    tree = descendants(up.proc.pid).items()
    return next(pid for pid, args in tree if "valkey-server" in args and "[cluster]" not in args)


def keys_on(data_dir: Path, port: int) -> int:
    client = redis.Redis(port=port, password=data_dir_password(data_dir))
    try:
        return int(client.dbsize())
    finally:
        client.close()


def up_shards(data_dir: Path, *options: str) -> Up:
    up = Up(data_dir, free_port(), "--shards", "3", *options)
    assert wait_for(up.ready, timeout=90), up.log.read_text()
    return up


def test_a_cluster_of_3_serves_keeps_its_nodes_alive_and_its_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    up = up_shards(data_dir)
    try:
        for uid in USERS:
            assert write_user(up, uid, 1, 10 * uid) == "ok"
        assert json.loads(write_user(up, 1, 2, 1, queued=True)) == {"queued": 1}
        expected = {uid: 10 * uid for uid in USERS} | {1: 11}
        assert wait_for(lambda: sums(up) == expected, timeout=30)  # the worker, on its broker
        ports = node_ports(data_dir)
        assert len(ports) == 3 and all(keys_on(data_dir, port) for port in ports)
        log = up.log.read_text()
        assert "a cluster of 3 primaries, data in" in log and "redis+cluster://:***@" in log
        assert f"(embedded, data in {data_dir / 'broker'})" in log
        assert (data_dir / "store.url").read_text().startswith("redis+cluster://")
        doctor = subprocess.run(
            psd_command("doctor"),
            env={**clean_env(), "PSD_DATA_DIR": str(data_dir)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "ok   broker redis://:***@127.0.0.1:" in doctor.stdout, doctor.stdout

        pid = node_pid(up, ports[0])
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: node_pid(up, ports[0]) not in (None, pid), timeout=30)
        assert wait_for(lambda: "restarted on 127.0.0.1" in up.log.read_text())
        assert "exited (killed by SIGKILL)" in up.log.read_text()
        assert wait_for(lambda: sums_or_none(up) == expected, timeout=30)
        assert write_user(up, 2, 2, 1) == "ok"

        broker = broker_pid(up)
        os.kill(broker, signal.SIGKILL)
        assert wait_for(lambda: "broker | restarted on 127.0.0.1" in up.log.read_text())
        assert broker_pid(up) != broker
        # the worker is back on the restarted broker: a queued write is applied
        assert json.loads(write_user(up, 3, 2, 1, queued=True)) == {"queued": 1}
        expected |= {2: 21, 3: 31}
        assert wait_for(lambda: sums(up) == expected, timeout=30)
        tree = descendants(up.proc.pid)
    finally:
        code = up.stop()
    assert code == 0, up.log.read_text()
    assert not [pid for pid in tree if alive(pid)]

    again = up_shards(data_dir)
    try:
        assert sums(again) == expected
        assert node_ports(data_dir) == ports  # the same cluster, on its own ports
    finally:
        assert again.stop() == 0, again.log.read_text()


def test_psd_up_sigkilled_leaves_no_node_and_no_broker(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    up = up_shards(data_dir)
    try:
        assert write_user(up, 1, 1, 5) == "ok"
        tree = descendants(up.proc.pid)
        servers = [args for args in tree.values() if "valkey-server" in args]
        assert len(servers) == 4, servers  # 3 primaries and the broker
        broker = int(next(a for a in servers if "[cluster]" not in a).split()[-1].rsplit(":")[1])
        kill_leaves_nothing(up.proc, [up.port, broker, *node_ports(data_dir)])
    finally:
        up.proc.kill()


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PSD_")}


def refused(data_dir: Path, *options: str) -> str:
    """``psd up OPTIONS`` on ``data_dir``, which must refuse to start: what it said."""
    command = psd_command(
        "up", "--data-dir", str(data_dir), "--bind", f"127.0.0.1:{free_port()}", *options
    )
    done = subprocess.run(command, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode != 0, done.stdout + done.stderr
    assert "psd is up" not in done.stdout
    return " ".join(done.stderr.split())


def test_a_data_directory_keeps_the_shape_of_its_store(tmp_path: Path) -> None:
    sharded = tmp_path / "sharded"
    with EmbeddedCluster(primaries=2, data_dir=sharded / "cluster", node_timeout=1000):
        pass  # a cluster of 2 formed there, as psd up --shards 2 leaves it
    said = refused(sharded, "--shards", "3")
    assert "holds a cluster of 2 primaries, not a cluster of 3 primaries" in said
    assert "psd up --shards 2" in said
    said = refused(sharded)
    assert "holds a sharded store (a cluster of 2 primaries)" in said
    assert "start it with psd up --shards 2" in said
    assert "holds a cluster of 2 primaries, not a cluster of 2 primaries with 1 replica each" in (
        refused(sharded, "--shards", "2", "--replicas", "1")
    )

    single = tmp_path / "single"
    with EmbeddedServer(data_dir=single):
        pass  # its append-only file, as psd up leaves it
    said = refused(single, "--shards", "3")
    assert "holds a single-server store: start it with psd up (no --shards)" in said
    assert not (single / "cluster").exists()

    assert "--replicas needs --shards" in refused(tmp_path / "other", "--replicas", "1")
    command = psd_command("up", "--data-dir", str(tmp_path / "other"), "--shards", "2")
    env = {**clean_env(), "PSD_REDIS_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "unset PSD_REDIS_URL" in done.stderr


def test_psd_up_killed_while_its_cluster_forms_starts_again(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = Up(data_dir, free_port(), "--shards", "2")
    try:
        assert wait_for(lambda: "listening on 127.0.0.1" in first.log.read_text(), timeout=60)
        os.kill(first.proc.pid, signal.SIGSTOP)  # it forms the cluster: held there
        assert "embedded cluster of" not in first.log.read_text()  # still forming
        tree = descendants(first.proc.pid)
        first.proc.kill()
        first.proc.wait()
        assert wait_for(lambda: not any(alive(pid) for pid in tree), timeout=10)
    finally:
        first.proc.kill()
    assert list((data_dir / "cluster").glob("node-*/nodes.conf"))
    assert not (data_dir / "cluster" / "cluster.json").exists()
    again = Up(data_dir, free_port(), "--shards", "2")
    try:
        assert wait_for(again.ready, timeout=90), again.log.read_text()
        assert "never finished forming" in again.log.read_text()
        assert write_user(again, 1, 1, 5) == "ok"
    finally:
        assert again.stop() == 0, again.log.read_text()


def test_the_nodes_of_a_formed_cluster_are_never_removed(tmp_path: Path) -> None:
    """Its cluster.json lost, a formed cluster is refused as before, not formed afresh."""
    cluster_dir = tmp_path / "cluster"
    with EmbeddedCluster(primaries=2, data_dir=cluster_dir, node_timeout=1000):
        pass
    (cluster_dir / "cluster.json").unlink()
    forget_unformed(tmp_path)
    assert len(list(cluster_dir.glob("node-*/nodes.conf"))) == 2
    assert "never finished forming" in refused(tmp_path, "--shards", "2")
    assert len(list(cluster_dir.glob("node-*/nodes.conf"))) == 2
