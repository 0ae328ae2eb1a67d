"""Connecting to the store: one Redis (or Valkey) server, or a Redis Cluster.

A cluster is named by its own URL scheme, ``redis+cluster://`` (``rediss+cluster://`` for
TLS), followed by one or more of its nodes: ``redis+cluster://[:password@]host:port[,host:port...]/``.
A scheme rather than a separate setting, because the URL alone then says what psd talks to,
wherever a URL is taken (``PSD_REDIS_URL``, ``psd migrate --from``, ``psd doctor``), and a
standalone URL keeps meaning exactly what it meant. Any node will do: the client learns the
others, and which slots each serves, from the first one that answers. A cluster has one
database, so the URL names none.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import time
from typing import Any
from urllib.parse import parse_qs, parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import hiredis
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import Connection, HiredisRespSerializer, parse_url
from redis.exceptions import BusyLoadingError, RedisClusterException

from psd.errors import InvalidInput, StoreError

CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}

#: This process's id, kept up to date in a forked child: ``os.getpid()`` is a system call,
#: and every script call asks whether its connections are its process's own.
_PID = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))


def process_id() -> int:
    """This process's id, without a system call."""
    return _PID[0]


def masked(url: str) -> str:
    """A URL fit for a log or an error: its passwords replaced. One runs to the last "@"
    before the host (redis-py reads ``redis://:p@ss@host``'s as ``p@ss``), or is a query's
    ``password=``; a ``sentinel://`` broker URL has one a sentinel, ";" between them."""
    if url.startswith("sentinel://"):
        return ";".join(_masked(part) for part in url.split(";"))
    return _masked(url)


def _masked(url: str) -> str:
    url = re.sub(r"(://[^:/@]*:)[^/?#]*@", r"\1***@", url, count=1)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", url)


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def cluster_nodes(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The ``(host, port)`` of each node a cluster URL names, and the connection options
    (username, password, TLS) it gives. Raises :class:`InvalidInput` for a URL that names no
    node, a node without a port, or a database."""
    scheme, _, rest = url.partition("://")
    tls = CLUSTER_SCHEMES.get(scheme.lower())
    if tls is None:
        raise InvalidInput(f"not a cluster URL (redis+cluster://host:port,...): {masked(url)!r}")
    where, _, path = rest.partition("/")
    if path.strip("/") not in ("", "0"):
        raise InvalidInput(f"a cluster has one database; the URL names {path!r}: {masked(url)!r}")
    options: dict[str, Any] = {"ssl": True} if tls else {}
    auth, at, hosts = where.rpartition("@")
    if at:
        user, colon, password = auth.partition(":")
        if colon:
            options["password"] = unquote(password)
        if user:
            options["username"] = unquote(user)
    nodes = []
    for part in filter(None, hosts.split(",")):
        parsed = urlsplit(f"//{part}")
        try:
            port = parsed.port
        except ValueError:
            port = None
        if not parsed.hostname or port is None:
            raise InvalidInput(f"a cluster node is host:port, not {part!r}: {masked(url)!r}")
        nodes.append((parsed.hostname, port))
    if not nodes:
        raise InvalidInput(f"a cluster URL names at least one node: {masked(url)!r}")
    return nodes, options


def check_url(url: str) -> None:
    """Refuse, as :class:`InvalidInput`, a URL that names no store (``127.0.0.1:6379``
    without its scheme, a database that is no number, a cluster's database), without
    connecting: redis-py's own refusal is a ValueError, and a database it cannot read it
    takes for 0. A URL that is no string (None, where a setting was left unset) too."""
    if not isinstance(url, str):
        raise InvalidInput(f"a store URL is a string, not {type(url).__name__}")
    if is_cluster_url(url):
        cluster_nodes(url)
        return
    try:
        found = parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise InvalidInput(f"not a store URL, {masked(url)!r}: {exc}") from exc
    parts = urlsplit(url)
    if parts.scheme == "unix" and not found.get("path"):
        raise InvalidInput(f"a unix:// URL names its socket (unix:///path): {masked(url)!r}")
    if parts.scheme != "unix" and not re.fullmatch(r"/?[0-9]*/?", parts.path):
        raise InvalidInput(f"a database is a number, not {parts.path[1:]!r}: {masked(url)!r}")


def default_broker(url: str) -> str:
    """The Celery broker URL of the store's own server (when broker_url is empty): the
    store's URL as it is, but for a unix socket, which kombu names ``redis+socket://`` (it
    has no transport "unix"), its database as the virtual host, its credentials before the
    path (kombu reads none from the query)."""
    parts = urlsplit(url)
    if parts.scheme != "unix":
        return url
    query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    user = parts.username or query.get("username", "")
    password = parts.password or query.get("password", "")
    auth = quote(unquote(user), safe="")
    if password:
        auth += ":" + quote(unquote(password), safe="")
    at = "@" if auth else ""
    return f"redis+socket://{auth}{at}{parts.path}?virtual_host={query.get('db', '0')}"


def sentinel_broker(url: str) -> tuple[str, str]:
    """A ``sentinel://`` broker URL as kombu takes it, and the master its sentinels watch:
    psd reads the master from the URL (``?master_name=``, on any of its sentinels:
    ``sentinel://h1:26379/0?master_name=mymaster;sentinel://h2:26379``), where kombu reads
    it from its transport options alone and refuses a query it does not know on the first."""
    parts, names = [], []
    for part in url.split(";"):
        split = urlsplit(part)
        query = parse_qsl(split.query, keep_blank_values=True)
        names += [value for name, value in query if name == "master_name"]
        rest = urlencode([(name, value) for name, value in query if name != "master_name"])
        parts.append(urlunsplit(split._replace(query=rest)))
    if not names or not names[-1]:
        raise InvalidInput(
            "a sentinel:// broker names the master its sentinels watch: "
            f"...?master_name=<name> ({masked(url)!r})",
            "broker_url",
        )
    return ";".join(parts), names[-1]


def client_from_url(url: str, patient: bool = False, **kwargs: Any) -> redis.Redis | RedisCluster:
    """A client of the store ``url`` names: :class:`redis.Redis` for a server,
    :class:`redis.cluster.RedisCluster` for a cluster URL. ``kwargs`` go to the client;
    ``patient``: a server over TCP that refuses a connection is tried again for a while
    (:class:`PatientConnection`). Raises :class:`InvalidInput` for a URL that names no store
    (:func:`check_url`), and :class:`StoreError` for a cluster none of whose named nodes
    answers (a cluster client asks one for the others as it is made)."""
    check_url(url)
    if not is_cluster_url(url):
        packer: Any = CommandPacker  # redis-py 8.2 gave its base an untyped __init__
        if url.split("://", 1)[0].lower() == "redis":  # TCP without TLS
            connection = PatientConnection if patient else KernelTimeoutConnection
            kwargs.setdefault("connection_class", connection)
        return redis.Redis.from_url(url, command_packer=packer(), **kwargs)
    nodes, options = cluster_nodes(url)
    startup = [ClusterNode(host, port) for host, port in nodes]  # type: ignore[no-untyped-call]
    try:
        return RedisCluster(startup_nodes=startup, **options, **kwargs)
    except RedisClusterException as exc:
        raise StoreError(f"the cluster {masked(url)} did not answer: {exc}") from exc


def send_call(conn: Any, command: tuple[Any, ...]) -> None:
    """Send one command on a redis-py connection, packed by hiredis as it is. The
    connection's own packer (unless it is a :class:`CommandPacker`: a client psd made) first
    passes every argument through redis-py's encoder, a Python call each, and a stream's
    call names seven keys a user: that pass was a third of the Python a streamed point cost
    when the store was given a client made elsewhere. An argument hiredis refuses takes the
    connection's own way, which says what is wrong with it."""
    try:
        packed = [hiredis.pack_command(command)]
    except TypeError:
        packed = conn.pack_command(*command)
    conn.send_packed_command(packed)


class CommandPacker(HiredisRespSerializer):
    """redis-py's hiredis packer without its pass over every argument (it copies those that
    are a bytearray or a memoryview, which psd never sends) before hiredis packs them. A write
    call names ten keys for each of its users, and that pass was an eighth of the Python a
    worker's task spends on a point. The same bytes go out: hiredis packs what it is given,
    and what it refuses, or a command name of two words (``SCRIPT LOAD``), takes redis-py's
    way."""

    def pack(self, *args: Any) -> list[bytes]:
        head = args[0]
        if isinstance(head, str) and " " not in head:
            try:
                return [hiredis.pack_command(args)]
            except TypeError:
                pass
        return super().pack(*args)  # type: ignore[no-any-return]


class KernelTimeoutConnection(Connection):
    """A TCP connection whose timeout the kernel keeps (``SO_RCVTIMEO``, ``SO_SNDTIMEO``)
    rather than Python. A Python socket with a timeout polls before each send and each
    receive: two system calls a round trip, ~2.4 µs of the client's CPU (a one-user read
    costs it ~58). The same timeout still ends a call the server does not answer, as a
    ``ConnectionError`` (the receive's ``EAGAIN``) rather than a ``TimeoutError``: psd
    retries and reports both alike. Where redis-py sets a timeout of its own on the socket
    (a read given one), Python keeps that one, and the timeout holds either way."""

    def _connect(self) -> socket.socket:
        sock: socket.socket = super()._connect()  # type: ignore[no-untyped-call]
        timeout = self.socket_timeout
        if timeout:
            whole = int(timeout)
            interval = struct.pack("@ll", whole, int((timeout - whole) * 1_000_000))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, interval)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, interval)
            sock.settimeout(None)
        return sock


class PatientConnection(KernelTimeoutConnection):
    """A connection that waits for a restarting store, for :attr:`PATIENCE` seconds: one its
    port refuses is tried again (``psd up`` starts a dead store again at once, on its port),
    and one made while the store replays its data is used once the store answers. A request
    then waits for the store rather than being answered 503 at once. Only the connecting
    waits: nothing of a request was sent yet, so nothing can be applied twice."""

    PATIENCE = 5.0

    def _connect(self) -> socket.socket:
        self.waits = Waits(self.PATIENCE)
        while True:
            try:
                return super()._connect()
            except ConnectionRefusedError:
                if not self.waits.wait():
                    raise

    def on_connect_check_health(self, check_health: bool = True) -> None:
        super().on_connect_check_health(check_health=check_health)
        while True:
            try:
                self.send_command("PING")  # type: ignore[no-untyped-call]
                self.read_response()
                return
            except BusyLoadingError:  # still reading its data: it answers once done
                if not self.waits.wait():
                    raise


class Waits:
    """Pauses, doubling from 50 ms to half a second, until ``patience`` seconds are spent."""

    def __init__(self, patience: float) -> None:
        self.deadline, self.pause = time.monotonic() + patience, 0.05

    def wait(self) -> bool:
        """Pause and say True, or say False when the next pause would pass the deadline."""
        if time.monotonic() + self.pause > self.deadline:
            return False
        time.sleep(self.pause)
        self.pause = min(self.pause * 2, 0.5)
        return True
