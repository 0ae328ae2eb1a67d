"""A ``rediss://`` broker: psd's transport over TLS (a message taken is never nowhere,
psd/workers/transport.py), the server's certificate checked as redis-py checks the
store's, where kombu alone would check nothing. The server is ``redis-server`` from the
PATH (a TLS build, as Debian's): without one the tests skip, unless
PSD_REQUIRE_REDIS_SERVER=1 (CI)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import trustme
from kombu.exceptions import OperationalError

from psd.config import Settings
from psd.embedded import EmbeddedServer, free_port
from psd.errors import StoreError
from psd.store import Store
from psd.workers import transport
from tests.support import make_app, running_worker, wait_for
from tests.test_workers import T0, point


def _unavailable(reason: str) -> None:
    if os.environ.get("PSD_REQUIRE_REDIS_SERVER") == "1":
        pytest.fail(f"{reason}, but PSD_REQUIRE_REDIS_SERVER=1")
    pytest.skip(f"{reason} (set PSD_REQUIRE_REDIS_SERVER=1 to require it)")


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[EmbeddedServer, int, Path]]:
    """A server with a plain port (the store, and the test's own looks) and a TLS port
    whose certificate a CA of the test's own signed; yields it, the TLS port, the CA."""
    binary = shutil.which("redis-server")
    if binary is None:
        _unavailable("no redis-server on the PATH")
    where = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    ca_file, server_file = where / "ca.pem", where / "server.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(server_file))
    tls_port = free_port()
    args = ("--tls-port", str(tls_port), "--tls-cert-file", str(server_file))
    args += ("--tls-key-file", str(server_file), "--tls-ca-cert-file", str(ca_file))
    args += ("--tls-auth-clients", "no")
    server = EmbeddedServer(binary=Path(binary), persist=False, extra_args=args)
    try:
        server.start()
    except StoreError as exc:
        _unavailable(f"redis-server serves no TLS here ({exc})")
    try:
        yield server, tls_port, ca_file
    finally:
        server.stop()


def test_a_rediss_broker_takes_messages_through_psds_transport(
    tls_server: tuple[EmbeddedServer, int, Path],
) -> None:
    server, tls_port, ca_file = tls_server
    broker = f"rediss://127.0.0.1:{tls_port}/1?ssl_ca_certs={ca_file}"
    settings = Settings(
        redis_url=server.url, broker_url=broker, queue=f"q-{uuid.uuid4().hex[:6]}", expire=0
    )
    app = make_app(settings)
    store = Store.from_url(server.url, settings)
    with app.connection_for_write() as conn:
        assert isinstance(conn.transport, transport.Transport)
    plain = redis.Redis.from_url(server.url)
    plain.config_resetstat()
    with running_worker(app):
        app.tasks["psd.write_metric"].delay(**point(value=7, mode="increment"))
        assert wait_for(lambda: store.sum(1, "steps", None, T0, T0) == 7)
    taken = plain.info("commandstats").get("cmdstat_blmove", {}).get("calls", 0)
    assert taken > 0  # into the queue's in-flight list, never nowhere


def test_a_rediss_broker_checks_the_servers_certificate(
    tls_server: tuple[EmbeddedServer, int, Path],
) -> None:
    """The server's certificate is signed by a CA the system does not know: refused, as
    redis-py refuses it for a rediss:// store."""
    server, tls_port, _ = tls_server
    settings = Settings(redis_url=server.url, broker_url=f"rediss://127.0.0.1:{tls_port}/1")
    app = make_app(settings)
    with app.connection_for_write() as conn, pytest.raises(OperationalError, match="certif"):
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0)
