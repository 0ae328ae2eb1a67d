"""A write whose reply is lost on the way back counts once.

redis-py sends a command again when the connection drops before the reply arrives, and the
server may have applied it already. Between psd and a real server sits a proxy that forwards
everything but drops the connection instead of passing on the reply to the first script call:
the server has applied it, redis-py retries it on a new connection."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import redis

from psd.batching import CALL_POINTS
from psd.config import Settings
from psd.model import CountPoint, MetricPoint
from psd.pending import LOG_FOLD
from psd.scripts import library, source
from psd.store import Store
from tests.support import segment_cuts_made

T0 = 1458061005

#: A proxy in front of one server loses replies; on a cluster, the retried calls of a
#: failover are tested instead (tests/test_cluster.py).
pytestmark = pytest.mark.standalone


class LosesOneReply:
    """A TCP proxy to ``upstream`` that drops its client's connection, once, where the
    server's reply to a script call (EVALSHA, or FCALL of a Function) would have gone back."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lost = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            awaiting = threading.Event()  # a script call went up, its reply not yet down
            threading.Thread(target=self._up, args=(client, server, awaiting), daemon=True).start()
            threading.Thread(
                target=self._down, args=(server, client, awaiting), daemon=True
            ).start()

    def _up(self, client: socket.socket, server: socket.socket, awaiting: threading.Event) -> None:
        try:
            while data := client.recv(65536):
                if (b"EVALSHA" in data or b"FCALL" in data) and not self.lost.is_set():
                    awaiting.set()
                server.sendall(data)
        except OSError:
            pass
        finally:
            server.close()

    def _down(
        self, server: socket.socket, client: socket.socket, awaiting: threading.Event
    ) -> None:
        try:
            while data := server.recv(65536):
                if awaiting.is_set() and not self.lost.is_set():
                    self.lost.set()  # applied by the server; the client never hears of it
                    client.shutdown(socket.SHUT_RDWR)
                    return
                client.sendall(data)
        except OSError:
            pass
        finally:
            client.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def lossy_store(redis_client: redis.Redis) -> Iterator[tuple[Store, LosesOneReply]]:
    kw = redis_client.connection_pool.connection_kwargs
    settings = Settings(expire=0, count_expire=0)
    # known to the server: the call is the first command sent
    redis_client.function_load(library("write_metric").code, replace=True)
    redis_client.function_load(library("pend").code, replace=True)
    redis_client.script_load(source("write_count"))
    proxy = LosesOneReply((kw["host"], kw["port"]))
    client = redis.Redis(host="127.0.0.1", port=proxy.port, db=kw.get("db", 0))
    yield Store(client, settings), proxy
    client.close()
    proxy.close()


def test_an_increment_whose_reply_was_lost_counts_once(
    lossy_store: tuple[Store, LosesOneReply],
) -> None:
    store, proxy = lossy_store
    result = store.write_metric(MetricPoint("steps", 1, 2, 3, 10, T0, T0, "increment"))
    assert proxy.lost.is_set(), "the reply was not lost: the test proves nothing"
    assert result.status in ("ok", "duplicate")  # the resent call finds it applied
    assert store.sum(1, "steps", None, T0, T0) == 10


def test_a_write_sent_ahead_whose_replies_were_lost_counts_once(
    lossy_store: tuple[Store, LosesOneReply],
) -> None:
    """Every write on its way is sent again, in order, once the connection is found lost
    as the first is read (psd/sentwrites.py)."""
    store, proxy = lossy_store
    points = [
        MetricPoint("steps", 1, 2, 3, n + 1, T0 + 60 * n, T0 + 60 * n, "increment")
        for n in range(900)
    ]
    first, second = store.send_metrics(points[:500]), store.send_metrics(points[500:])
    results = first.results() + second.results()
    assert proxy.lost.is_set(), "the reply was not lost: the test proves nothing"
    assert {r.status for r in results} <= {"ok", "duplicate"}
    assert store.sum(1, "steps", None, T0, T0 + 60 * 900) == sum(range(1, 901))


def test_increments_of_a_batch_whose_reply_was_lost_count_once(
    lossy_store: tuple[Store, LosesOneReply],
) -> None:
    store, proxy = lossy_store
    points = [
        MetricPoint("steps", uid, 2, aid, 5, T0, T0, "increment")
        for uid in (1, 2)
        for aid in range(150)
    ]
    store.write_metrics(points)
    assert proxy.lost.is_set()
    assert [store.sum(uid, "steps", None, T0, T0) for uid in (1, 2)] == [750, 750]


def test_a_ticks_increments_whose_reply_was_lost_count_once(
    lossy_store: tuple[Store, LosesOneReply],
) -> None:
    """A point or two of each of many users: they wait in their logs (pend.lua), and the
    resent call finds each user's appended."""
    store, proxy = lossy_store
    points = [
        MetricPoint("steps", uid, 2, 1, uid, T0 + n, T0 + n, "increment")
        for uid in range(1, 301)
        for n in range(2)
    ]
    results = store.write_metrics(points)
    assert proxy.lost.is_set()
    assert {r.status for r in results} <= {"ok", "duplicate"}
    assert store.redis.exists("{7}:p")  # waiting, not applied
    sums = [store.sum(uid, "steps", None, T0, T0 + 1) for uid in range(1, 301)]
    assert sums == [2 * uid for uid in range(1, 301)]


def test_a_ticks_points_sent_the_direct_way_after_a_lost_reply_count_once(
    lossy_store: tuple[Store, LosesOneReply],
) -> None:
    """The call whose reply was lost answered "direct" for a user whose log takes no points
    (near the limits: a hash there): the resent call says so again, and those points are
    applied the direct way, once."""
    store, proxy = lossy_store
    store.redis.hset("{5}:p", "near", "1")
    points = [MetricPoint("steps", uid, 2, 1, uid, T0, T0, "increment") for uid in range(1, 11)]
    store.write_metrics(points)
    assert proxy.lost.is_set()
    assert store.redis.hlen("{5}:acts") > 0 and not store.redis.exists("{4}:acts")
    assert [store.sum(uid, "steps", None, T0, T0) for uid in range(1, 11)] == list(range(1, 11))


def test_a_log_grown_in_a_call_whose_reply_was_lost_is_applied(
    redis_client: redis.Redis, lossy_store: tuple[Store, LosesOneReply]
) -> None:
    """The call that took a log past the size at which it is applied went back in the reply
    that was lost: the resent call returns it again, and it is applied."""
    store, proxy = lossy_store
    settings = Settings(expire=0, count_expire=0)
    waiting = (
        LOG_FOLD - 1
    ) // 9  # 9 bytes each (entries of numbers): just short of the size applied
    early = [MetricPoint("steps", 1, 2, 1, 1, T0 + n, T0 + n, "increment") for n in range(waiting)]
    for at in range(0, waiting, 8):
        Store(redis_client, settings).write_metrics(early[at : at + 8])
    assert len(redis_client.get("{1}:p") or b"") == 9 * waiting
    assert not redis_client.exists("{1}:acts")
    points = [MetricPoint("steps", 1, 2, 1, 1, T0 + 100, T0 + 100, "increment")]
    store.write_metrics(points)
    assert proxy.lost.is_set()
    store.settle()
    assert redis_client.hlen("{1}:acts") > 0 and len(redis_client.get("{1}:p") or b"") < LOG_FOLD
    assert store.sum(1, "steps", None, T0, T0 + 200) == waiting + 1


def test_a_bulk_write_whose_reply_was_lost_counts_once(
    lossy_store: tuple[Store, LosesOneReply],
) -> None:
    """Runs of a user longer than a call: the write's own key is cut into parts of a call's
    points, named by position, so the resent pipeline finds each part applied."""
    store, proxy = lossy_store
    points = [
        MetricPoint("steps", uid, 2, aid, aid % 7, T0 + aid, T0 + aid, "increment")
        for uid in (1, 2)
        for aid in range(900)
    ]
    store.write_metrics(points)
    assert proxy.lost.is_set()
    expected = sum(aid % 7 for aid in range(900))
    assert [store.sum(uid, "steps", None, T0, T0 + 900) for uid in (1, 2)] == [expected] * 2


def test_a_count_whose_reply_was_lost_counts_once(
    lossy_store: tuple[Store, LosesOneReply],
) -> None:
    store, proxy = lossy_store
    store.write_count(CountPoint("signup", 1, T0))
    assert proxy.lost.is_set()
    assert store.count("signup", T0, T0) == 1


def test_the_key_of_a_write_without_one_is_kept_minutes_not_the_window(
    redis_client: redis.Redis,
) -> None:
    """A key the store made up only guards against a resent call: a day of HTTP increments
    must not leave a day of keys behind. It is a string key of its own, expiring in
    minutes; a task's key goes to the user's record for the whole window."""
    store = Store(redis_client, Settings(expire=0))
    store.write_metric(MetricPoint("steps", 1, 2, 3, 10, T0, T0, "increment"))
    store.write_metric(MetricPoint("steps", 1, 2, 4, 10, T0, T0, "increment"), "task-1")
    store.write_metric(MetricPoint("steps", 1, 2, 5, 10, T0, T0))  # diffadd: no key of its own
    assert {m.decode() for m in redis_client.zrange("{1}:once", 0, -1)} == {"task-1"}
    own = list(redis_client.scan_iter("{1}:own:*"))
    assert len(own) == 1
    assert 0 < redis_client.ttl(own[0]) <= 300
    assert 86_000 < redis_client.ttl("{1}:once") <= 86_400


def test_a_bulk_write_keeps_one_key_of_its_own_per_call_of_a_user(
    redis_client: redis.Redis,
) -> None:
    """A user's run of 1,000 increments goes in calls of CALL_POINTS: three parts of the
    write's own key, not one per WRITE_BATCH points."""
    store = Store(redis_client, Settings(expire=0))
    points = [MetricPoint("steps", 1, 2, 3, 1, T0 + n, T0 + n, "increment") for n in range(1000)]
    assert {r.status for r in store.write_metrics(points)} == {"ok"}
    own = list(redis_client.scan_iter("{1}:own:*"))
    assert len(own) == -(-1000 // CALL_POINTS)
    assert store.sum(1, "steps", None, T0, T0 + 1000) == 1000


def test_a_write_in_segments_whose_reply_was_lost_counts_once(
    lossy_store: tuple[Store, LosesOneReply], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large write sent in segments (psd/sentwrites.py) loses the reply of its first
    call: every segment on its way goes again, in order, and each point counts once."""
    store, proxy = lossy_store
    segmented = segment_cuts_made(monkeypatch)
    points = [
        MetricPoint("steps", uid, 2, aid, aid % 7, T0 + aid, T0 + aid, "increment")
        for uid in (1, 2)
        for aid in range(2_500)
    ]
    results = store.write_metrics(points)
    assert segmented, "not written in segments: the test proves nothing"
    assert proxy.lost.is_set(), "the reply was not lost: the test proves nothing"
    assert {r.status for r in results} <= {"ok", "same", "duplicate"}
    expected = sum(aid % 7 for aid in range(2_500))
    assert [store.sum(uid, "steps", None, T0, T0 + 2_500) for uid in (1, 2)] == [expected] * 2
