"""How a one-user read reaches the server: its sum.lua call, kept per range shape, is the call
that psd.sumcall builds; psd.scriptcall sends it as redis-py would (same replies, same errors,
connections the server closed opened again, each thread and process on its own)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from psd import scriptcall
from psd.config import Settings
from psd.connect import client_from_url, send_call
from psd.errors import StoreError
from psd.keys import PENDING, count_plan, count_prefix, metric_prefix, read_plan
from psd.model import MetricPoint
from psd.reads import nested_reply
from psd.scriptcall import ScriptCaller
from psd.store import Store
from psd.sumcall import Series, SumRequest, lone_call, one_series_call, sum_call

NOW = int(time.time())
RANGES = [
    (NOW - 4, NOW),  # seconds of one hour
    (NOW - 3 * 3600 - 17, NOW - 5),  # windows at both edges
    (NOW - 86400 + 1, NOW),
    (NOW - 30 * 86400, NOW - 7200),
    (0, 253402300799),  # every year: read whole
]


@pytest.fixture
def server(redis_client: redis.Redis) -> redis.Redis:
    if isinstance(redis_client, RedisCluster):
        pytest.skip("one server's connections")
    return redis_client


#: ids that do not depend on the clock: every pytest-xdist process must collect the same tests
RANGE_IDS = ["seconds", "windows-at-both-edges", "a-day", "a-month", "every-year"]


@pytest.mark.parametrize("t1, t2", RANGES, ids=RANGE_IDS)
def test_a_one_series_call_is_the_call_lone_call_builds(t1: int, t2: int) -> None:
    for plan, prefix, things in (
        (read_plan(t1, t2), metric_prefix(42), (1,)),
        (read_plan(t1, t2), metric_prefix(7), (2, 1, 5)),
        (count_plan(t1, t2), count_prefix("signup"), (0,)),
    ):
        for atid in (None, 3):
            for want in (False, True):
                for legacy in (False, True):
                    with_state = want or bool(plan.windows)
                    series = [Series(0, prefix, with_state)]
                    request = SumRequest(things, atid, [plan], series, want, legacy_hours=legacy)
                    suffixes, args = one_series_call(plan, things, atid, want, with_state, legacy)
                    keys, built = lone_call(request)
                    assert ([prefix + s for s in suffixes], list(args)) == (keys, built)


def test_a_lone_call_answers_as_the_general_one(server: redis.Redis) -> None:
    """A user's one thing is read from a flat argument by a path of its own: the same sums
    as the general call's, for every type and for one, over hours packed, open and plain,
    windows of changes and of single changes."""
    store = Store(server, Settings())
    hour = NOW - NOW % 3600
    points = [
        MetricPoint("steps", 5, atid, aid, value, ts, ts, "increment")
        for atid, aid, value, ts in (
            *((3, 1, 7, hour - h * 1800 + 11) for h in range(60)),  # one activity, many changes
            *((4, 2, 5, hour - h * 86400 - 900) for h in range(40)),  # another, a day apart
            *((3, 100 + h, 2, hour - h * 5000 + 3) for h in range(30)),  # single changes
        )
    ]
    store.write_metrics(points)
    store.write_metrics([MetricPoint("distance", 5, 3, 9, 4, NOW - 30, NOW - 30)])
    ranges = [*RANGES, (NOW - 3600 + 17, NOW), (hour - 7200, hour - 1), (NOW - 40 * 86400, NOW)]
    sums = set()
    for t1, t2 in ranges:
        plan = read_plan(t1, t2)
        for atid in (None, 3, 4):
            request = SumRequest((1,), atid, [plan], [Series(0, metric_prefix(5), True)])
            keys, lone = lone_call(request)
            general_keys, general = sum_call(request)
            assert lone != general
            assert general_keys == [metric_prefix(5) + PENDING]  # the script makes the rest
            # a lone call answers its sum alone, a general one its series' (psd/lua/sum.lua)
            answer = nested_reply(store.scripts.sum(keys, lone), 1)
            assert answer == nested_reply(store.scripts.sum(general_keys, general), 1)
            sums.add(answer[0][0][1])
    assert len(sums) > 10


def test_a_lone_head_kept_by_the_script_answers_for_every_range_of_its_hours(
    server: redis.Redis,
) -> None:
    """The script keeps the heads of lone calls it unpacked (their whole hours: psd/lua/sum.lua's
    lone_heads), 256 at most, then drops them all: ranges of the same whole hours with windows
    of their own, and more heads than it keeps, twice over, answer as the general call."""
    store = Store(server, Settings())
    base = NOW - NOW % 3600 - 20 * 86400
    points = [
        MetricPoint("steps", 5, 3, ts // 86400, 1 + ts % 7, ts, ts, "increment")
        for ts in range(base + 11, NOW, 1200)
    ]
    store.write_metrics(points)
    ranges = [
        (base + 3600 * h + s, base + 3600 * (h + 30) + 2 * s)
        for h in range(300)
        for s in (17, 1500)
    ]
    for _ in range(2):
        for t1, t2 in ranges:
            request = SumRequest(
                (1,), None, [read_plan(t1, t2)], [Series(0, metric_prefix(5), True)]
            )
            keys, lone = lone_call(request)
            general_keys, general = sum_call(request)
            assert (
                store.scripts.sum(keys, lone)
                == nested_reply(store.scripts.sum(general_keys, general), 1)[0][0][1]
            )


def test_script_calls_answer_as_redis_py(server: redis.Redis) -> None:
    store = Store(server, Settings())
    store.write_metrics([MetricPoint("steps", 5, 3, 1, 9, NOW - 60, NOW - 60)])
    caller = ScriptCaller(server)
    assert caller.lean
    for t1, t2 in RANGES:
        plan = read_plan(t1, t2)
        suffixes, args = one_series_call(plan, (1,), None, True, True, False)
        keys = [metric_prefix(5) + s for s in suffixes]
        assert caller(store.scripts.sum, keys, args) == store.scripts.sum(keys, args, client=server)
    with pytest.raises(redis.ResponseError) as lean:
        caller(store.scripts.sum, ["{5}:r"], [b"not msgpack"])
    with pytest.raises(redis.ResponseError) as plain:
        store.scripts.sum(["{5}:r"], [b"not msgpack"], client=server)
    assert type(lean.value) is type(plain.value)
    assert str(lean.value).split(":")[0] == str(plain.value).split(":")[0]
    assert caller(store.scripts.sum, keys, args) is not None  # the connection is still usable


def test_clients_it_cannot_call_go_through_redis_py(server: redis.Redis) -> None:
    one = redis.Redis(connection_pool=server.connection_pool, single_connection_client=True)
    for client in (server.pipeline(), one):
        assert not ScriptCaller(client).lean
    one.close()


def test_a_connection_the_server_closed_is_opened_again(server: redis.Redis) -> None:
    """Without retries, as the embedded server's clients are: the call finds the closed
    connection, opens it again and is sent again."""
    url = "redis://{host}:{port}/{db}".format(**server.connection_pool.connection_kwargs)
    client = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0))
    store = Store(client, Settings())
    store.write_metrics([MetricPoint("steps", 5, 3, 1, 9, NOW - 60, NOW - 60)])
    assert store.sum(5, "steps", None, NOW - 3600, NOW) == 9
    server.client_kill_filter(_type="normal", skipme=True)
    assert store.sum(5, "steps", None, NOW - 3600, NOW) == 9
    client.close()


def test_a_call_cut_short_leaves_no_reply_for_the_next(
    server: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception raised between a call's sending and its reply (a Celery task's time
    limit, an interrupt) must not leave that reply for the next call on the connection."""
    store = Store(server, Settings())
    points = [(5, 1, 9), (6, 2, 4)]
    store.write_metrics(
        [MetricPoint("steps", u, 3, a, v, NOW - 60, NOW - 60) for u, a, v in points]
    )
    assert store.sum(5, "steps", None, NOW - 3600, NOW) == 9  # a connection kept idle

    def cut_short(conn: object, command: tuple[object, ...]) -> None:
        send_call(conn, command)
        raise KeyboardInterrupt

    monkeypatch.setattr(scriptcall, "_round_trip", cut_short)
    with pytest.raises(KeyboardInterrupt):
        store.sum(5, "steps", None, NOW - 3600, NOW)
    monkeypatch.undo()
    assert store.sum(6, "steps", None, NOW - 3600, NOW) == 4


def test_a_call_that_times_out_is_not_sent_again() -> None:
    """A call on an idle connection that the server does not answer in time fails once: it
    is not taken for a connection the server closed, sent again on a new one and waited out
    again (a stopped server still takes connections; none is opened while it is stopped)."""
    from psd.embedded import EmbeddedServer, server_binary

    with EmbeddedServer(binary=server_binary(prefer_path=True), persist=False) as stopped:
        client = client_from_url(stopped.url, socket_timeout=0.3, retry=Retry(NoBackoff(), 0))
        store = Store(client, Settings())
        assert store.sum(5, "steps", None, NOW - 3600, NOW) == 0  # a connection kept idle
        watch = redis.Redis.from_url(stopped.url)
        opened = watch.info("stats")["total_connections_received"]
        assert stopped.process is not None
        os.kill(stopped.process.pid, signal.SIGSTOP)
        try:
            with pytest.raises(StoreError):
                store.sum(5, "steps", None, NOW - 3600, NOW)
        finally:
            os.kill(stopped.process.pid, signal.SIGCONT)
        time.sleep(0.2)  # the server takes any connection made while it was stopped
        assert watch.info("stats")["total_connections_received"] == opened
        client.close()


def test_a_server_gone_is_a_store_error(server: redis.Redis) -> None:
    from psd.embedded import EmbeddedServer, server_binary

    with EmbeddedServer(binary=server_binary(prefer_path=True), persist=False) as gone:
        store = Store.from_url(gone.url)
        assert store.sum(1, "steps", None, 0, 10) == 0
    with pytest.raises(StoreError):
        store.sum(1, "steps", None, 0, 10)


def test_threads_read_on_connections_of_their_own(server: redis.Redis) -> None:
    store = Store(server, Settings())
    points = [MetricPoint("steps", uid, 3, uid, uid, NOW - 60, NOW - 60) for uid in range(1, 9)]
    store.write_metrics(points)
    wrong: list[tuple[int, int]] = []

    def read(uid: int) -> None:
        for _ in range(200):
            got = store.sum(uid, "steps", None, NOW - 3600, NOW)
            if got != uid:
                wrong.append((uid, got))

    threads = [threading.Thread(target=read, args=(uid,)) for uid in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
    assert len(store.nodes.calls.idle) <= len(threads)


def test_a_store_dropped_gives_its_connections_back(server: redis.Redis) -> None:
    """A store keeps the connections its script calls took; many stores made on one client
    one after the other (a test's, a script's) must not exhaust its pool."""
    url = "redis://{host}:{port}/{db}".format(**server.connection_pool.connection_kwargs)
    client = redis.Redis.from_url(url, max_connections=5)
    for uid in range(1, 21):
        store = Store(client, Settings())
        store.write_metric(MetricPoint("steps", uid, 3, uid, uid, NOW - 60, NOW - 60))
        assert store.sum(uid, "steps", None, NOW - 3600, NOW) == uid
        del store
    assert len(client.connection_pool._in_use_connections) == 0
    client.close()


def test_a_forked_process_reads_on_connections_of_its_own(server: redis.Redis) -> None:
    """Parent and child read different users at once: a connection the two shared would
    hand one the other's reply (or leave one waiting for a reply the other took)."""
    url = "redis://{host}:{port}/{db}".format(**server.connection_pool.connection_kwargs)
    store = Store(redis.Redis.from_url(url, socket_timeout=10), Settings())
    points = [MetricPoint("steps", uid, 3, uid, uid + 4, NOW - 60, NOW - 60) for uid in (5, 6)]
    store.write_metrics(points)
    assert store.sum(5, "steps", None, NOW - 3600, NOW) == 9  # a connection kept
    readable, writable = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child)
        try:
            answers = [store.sum(6, "steps", None, NOW - 3600, NOW) for _ in range(300)]
            os.write(writable, b"ok" if answers == [10] * 300 else b"wrong")
        finally:
            os._exit(0)
    answers = [store.sum(5, "steps", None, NOW - 3600, NOW) for _ in range(300)]
    os.waitpid(child, 0)
    os.close(writable)
    assert (os.read(readable, 16), answers) == (b"ok", [9] * 300)
    store.redis.close()
