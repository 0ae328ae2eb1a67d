"""A store's TCP connections keep their timeout in the kernel (psd.connect.
KernelTimeoutConnection): a call the server does not answer still ends, and one it answers
goes on as before."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from psd.connect import KernelTimeoutConnection, client_from_url, is_cluster_url


def test_a_server_that_does_not_answer_ends_the_call_at_the_timeout() -> None:
    """A listener that takes the connection and never answers: the call ends after about
    the timeout, with the error redis-py gives a lost connection."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        client = client_from_url(
            f"redis://127.0.0.1:{port}/0", socket_timeout=0.3, retry=Retry(NoBackoff(), 0)
        )
        raised: list[BaseException] = []

        def call() -> None:
            try:
                client.ping()
            except BaseException as exc:  # what it raises is the point
                raised.append(exc)

        started = time.monotonic()
        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        caller.join(timeout=10)
        took = time.monotonic() - started
        assert not caller.is_alive(), "the call never ended"
        assert len(raised) == 1
        assert isinstance(raised[0], redis.ConnectionError | redis.TimeoutError), raised
        assert 0.25 < took < 5, took


def test_a_store_client_keeps_its_timeout_in_the_kernel(redis_url: str) -> None:
    if is_cluster_url(redis_url):
        pytest.skip("a cluster's node clients are redis-py's own")
    client = client_from_url(redis_url)
    assert client.ping()
    conn = client.connection_pool.get_connection()
    try:
        assert isinstance(conn, KernelTimeoutConnection)
        sock = conn._sock
        assert sock is not None
        assert sock.gettimeout() is None  # no poll before each send and receive
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16) != bytes(16)
    finally:
        client.connection_pool.release(conn)
    client.close()


def test_other_schemes_keep_redis_py_connections() -> None:
    client = client_from_url("unix:///nonexistent.sock")
    assert client.connection_pool.connection_class is not KernelTimeoutConnection
    client = client_from_url("rediss://127.0.0.1:1/0")
    assert client.connection_pool.connection_class is not KernelTimeoutConnection
