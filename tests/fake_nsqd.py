"""A small nsqd for the tests, in threads of the test process, with a tiny nsqlookupd.

No nsqd binary can be installed where the suite runs, so this speaks the public TCP protocol
(https://nsq.io/clients/tcp_protocol_spec.html) as far as a consumer needs: the "  V2" magic,
IDENTIFY with feature negotiation, SUB, RDY, FIN, REQ with its delay, TOUCH, NOP, CLS,
heartbeats, and nsqd's hold on a closed connection's in-flight messages (in flight until
their timeout, then delivered again). One topic, one channel, no persistence. It records
what happened to every message id for tests to assert on.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlsplit

RESPONSE, ERROR, MESSAGE = 0, 1, 2
#: nsqd's --msg-timeout: how long a message stays in flight unanswered, its connection
#: closed or not, before nsqd delivers it again.
MSG_TIMEOUT_MS = 60_000


@dataclass
class Message:
    id: str
    body: bytes
    timestamp_ns: int
    attempts: int = 0


@dataclass(eq=False)
class Client:
    """One consumer connection: what it may receive (RDY) and what it holds."""

    sock: socket.socket
    rdy: int = 0
    subscribed: bool = False
    closing: bool = False
    in_flight: set[str] = field(default_factory=set)
    write_lock: threading.Lock = field(default_factory=threading.Lock)


class FakeNsqd:
    """``with FakeNsqd() as nsqd``: listens on free ports of 127.0.0.1 (``tcp_address``,
    and ``lookupd_address`` for nsqlookupd's ``GET /lookup``). ``time_scale`` shrinks REQ
    delays and message timeouts so tests need not wait out a real backoff; ``rdy_lag``
    (seconds) is how long a RDY takes to reach nsqd's delivery, which goes on at the old
    count meanwhile (a network's and nsqd's own delay)."""

    def __init__(self, topic: str = "psd", time_scale: float = 1.0, rdy_lag: float = 0.0) -> None:
        self.topic = topic
        self.time_scale = time_scale
        self.rdy_lag = rdy_lag
        self.finished: list[str] = []  # ids, in FIN order, once per FIN
        self.requeued: list[tuple[str, int]] = []  # (id, delay in ms)
        self.deliveries: list[tuple[str, int]] = []  # (id, attempts) of each delivery
        self.held_at_close: list[str] = []  # ids a connection held unanswered as it closed
        self.nops = 0
        self._changed = threading.Condition()
        self._messages: dict[str, Message] = {}
        self._ready: deque[str] = deque()
        self._deferred: list[tuple[float, str]] = []
        self._rdy_changes: list[tuple[float, Client, int]] = []  # (due, client, count)
        self._replies: list[tuple[Client, bytes]] = []  # after the messages taken before
        self._clients: list[Client] = []
        self._ids = itertools.count(1)
        self._stopped = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _Lookup)
        self._http.nsqd = self  # type: ignore[attr-defined]
        self._threads = [
            threading.Thread(target=self._accept, daemon=True),
            threading.Thread(target=self._dispatch, daemon=True),
            threading.Thread(target=self._http.serve_forever, args=(0.05,), daemon=True),
        ]

    @property
    def tcp_port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def tcp_address(self) -> str:
        return f"127.0.0.1:{self.tcp_port}"

    @property
    def http_port(self) -> int:
        return int(self._http.socket.getsockname()[1])

    @property
    def lookupd_address(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def __enter__(self) -> FakeNsqd:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopped.set()
        self._http.shutdown()
        self._http.server_close()
        with self._changed:
            clients = list(self._clients)
            self._changed.notify_all()
        for client in clients:
            _close(client.sock)
        for thread in self._threads:
            thread.join(5)
        self._listener.close()

    # ---- the test-facing API ----

    def publish(self, body: bytes) -> str:
        """Queue a message on the topic; returns its id (16 hex digits, as nsqd's)."""
        with self._changed:
            message_id = f"{next(self._ids):016x}"
            self._messages[message_id] = Message(message_id, body, time.time_ns())
            self._ready.append(message_id)
            self._changed.notify_all()
        return message_id

    def redeliver(self, message_id: str) -> None:
        """Deliver a message again, as nsqd does when the consumer's FIN never reached it
        (its message timeout passed), even if it was FINished meanwhile."""
        with self._changed:
            self._ready.append(message_id)
            self._changed.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
        """Wait until ``predicate`` (reading this server's state) holds; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.05))  # not every change notifies
            return True

    def consumers(self) -> int:
        """Connections subscribed and ready for a message."""
        with self._changed:
            return sum(1 for c in self._clients if c.subscribed and c.rdy > 0)

    def connections(self) -> int:
        with self._changed:
            return len(self._clients)

    def heartbeat(self) -> None:
        """Send every connection a heartbeat (a consumer must answer NOP)."""
        with self._changed:
            clients = list(self._clients)
        for client in clients:
            self._send(client, RESPONSE, b"_heartbeat_")

    # ---- the server ----

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client = Client(sock)
            with self._changed:
                self._clients.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: Client) -> None:
        """Read one connection's commands until it closes."""
        stream = client.sock.makefile("rb")
        try:
            if stream.read(4) != b"  V2":
                return
            while line := stream.readline():
                command, *params = line.rstrip(b"\n").decode().split(" ")
                if not self._command(client, command, params, stream):
                    return
        except (OSError, ValueError, IndexError):  # closed, or a command nsqd would refuse
            return
        finally:
            self._disconnect(client)
            stream.close()

    def _command(self, client: Client, command: str, params: list[str], stream: BinaryIO) -> bool:
        """Apply one command and answer it; False: the connection must close (nsqd closes
        it after E_INVALID)."""
        if command == "IDENTIFY":
            (size,) = struct.unpack(">i", stream.read(4))
            json.loads(stream.read(size))
            features = {
                "max_rdy_count": 2500,
                "version": "1.3.0",
                "max_msg_timeout": 900000,
                "msg_timeout": 60000,
                "tls_v1": False,
                "deflate": False,
                "snappy": False,
                "auth_required": False,
                "sample_rate": 0,
            }
            reply: tuple[int, bytes] | None = (RESPONSE, json.dumps(features).encode())
        else:
            with self._changed:
                reply = self._apply(client, command, params)
                self._changed.notify_all()
        if reply is not None:
            self._send(client, *reply)
        return reply != (ERROR, b"E_INVALID")

    def _apply(self, client: Client, command: str, params: list[str]) -> tuple[int, bytes] | None:
        """A command's effect (under the lock), and nsqd's answer when it gives one."""
        if command == "SUB":
            client.subscribed = params[:1] == [self.topic]
            return (RESPONSE, b"OK") if client.subscribed else (ERROR, b"E_BAD_TOPIC")
        if command == "RDY":
            if self.rdy_lag:
                due = time.monotonic() + self.rdy_lag
                self._rdy_changes.append((due, client, int(params[0])))
            else:
                client.rdy = int(params[0])
            return None
        if command == "CLS":  # no message after its answer: sent by the delivery thread
            client.closing = True
            self._replies.append((client, b"CLOSE_WAIT"))
            return None
        if command in ("NOP", "TOUCH"):
            self.nops += command == "NOP"
            return None
        if command not in ("FIN", "REQ"):
            return ERROR, b"E_INVALID"
        message_id = params[0]
        if message_id not in client.in_flight:
            return ERROR, f"E_{command}_FAILED".encode()
        client.in_flight.discard(message_id)
        if command == "FIN":
            self.finished.append(message_id)
        else:
            delay_ms = int(params[1])
            self.requeued.append((message_id, delay_ms))
            due = time.monotonic() + delay_ms / 1000 * self.time_scale
            self._deferred.append((due, message_id))
        return None

    def _dispatch(self) -> None:
        """Deliver ready messages to connections with RDY to spare; bring REQueued ones back
        once their delay has passed."""
        while not self._stopped.is_set():
            with self._changed:
                now = time.monotonic()
                for change in list(self._rdy_changes):
                    if change[0] <= now:
                        self._rdy_changes.remove(change)
                        change[1].rdy = change[2]
                for due, message_id in sorted(self._deferred):
                    if due <= now:
                        self._deferred.remove((due, message_id))
                        self._ready.append(message_id)
                sends = self._take_sends()
                replies, self._replies = self._replies, []
                if not sends and not replies:
                    self._changed.wait(0.02)
                    continue
            for client, data in sends:
                self._send(client, MESSAGE, data)
            for client, data in replies:
                self._send(client, RESPONSE, data)

    def _take_sends(self) -> list[tuple[Client, bytes]]:
        sends = []
        for client in self._clients:
            while self._ready and client.subscribed and not client.closing:
                if len(client.in_flight) >= client.rdy:
                    break
                message = self._messages[self._ready.popleft()]
                message.attempts += 1
                client.in_flight.add(message.id)
                self.deliveries.append((message.id, message.attempts))
                header = struct.pack(">qH", message.timestamp_ns, message.attempts)
                sends.append((client, header + message.id.encode() + message.body))
        return sends

    def _send(self, client: Client, frame_type: int, data: bytes) -> None:
        frame = struct.pack(">ii", len(data) + 4, frame_type) + data
        try:
            with client.write_lock:
                client.sock.sendall(frame)
        except OSError:
            _close(client.sock)  # its reader thread sees the end and disconnects it

    def _disconnect(self, client: Client) -> None:
        """As nsqd: what the connection held stays in flight until its timeout, then is
        delivered again."""
        with self._changed:
            if client in self._clients:
                self._clients.remove(client)
            due = time.monotonic() + MSG_TIMEOUT_MS / 1000 * self.time_scale
            for message_id in sorted(client.in_flight):
                self.held_at_close.append(message_id)
                self._deferred.append((due, message_id))
            client.in_flight.clear()
            self._changed.notify_all()
        _close(client.sock)


class _Lookup(BaseHTTPRequestHandler):
    """nsqlookupd's ``GET /lookup?topic=...``: the fake nsqd is the topic's only producer."""

    def do_GET(self) -> None:
        nsqd: FakeNsqd = self.server.nsqd  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        if url.path != "/lookup" or parse_qs(url.query).get("topic") != [nsqd.topic]:
            self._reply(404, {"message": "TOPIC_NOT_FOUND"})
            return
        producer = {
            "broadcast_address": "127.0.0.1",
            "hostname": "fake-nsqd",
            "remote_address": nsqd.tcp_address,
            "tcp_port": nsqd.tcp_port,
            "http_port": nsqd.http_port,
            "version": "1.3.0",
        }
        self._reply(200, {"channels": [], "producers": [producer]})

    def _reply(self, status: int, doc: dict[str, Any]) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest shows stderr of failing tests, and these lines would be noise."""


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed, or never connected
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
