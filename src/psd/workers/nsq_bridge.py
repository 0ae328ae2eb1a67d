"""The NSQ bridge: ``python -m psd.workers.nsq_bridge`` (``psd nsq-bridge``).

The 2016 service's producers publish to NSQ. The bridge turns each message into
the write task every other sender uses (``psd.write_metric`` / ``psd.write_count``) and
FINishes it only once the broker has that task: a crash or a broker outage loses nothing,
nsqd delivers the message again, and its id (the task's id and idempotency key) makes the
worker apply it once. A message that can never be applied (invalid, or a point past the
retention) goes to the dead-letter list instead of being retried for ever.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from functools import partial
from typing import Any

import nsq

from psd import dlq, logs
from psd.config import Settings, load_settings
from psd.connect import client_from_url, masked
from psd.dlq import DeadLetter
from psd.errors import InvalidInput, PastRetention
from psd.jsonfields import MESSAGE, loads, padded_thing
from psd.metrics import POINTS, REJECTED
from psd.model import CountPoint, MetricPoint, parse_count, parse_metric
from psd.store import Store
from psd.workers.app import create_app

log = logging.getLogger("psd.nsq_bridge")

#: Each command of the original's messages: the task it becomes and its payload's parser.
COMMANDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "metric": ("psd.write_metric", parse_metric),
    "count": ("psd.write_count", parse_count),
}
#: A message whose task could not be published comes back after this many seconds per
#: attempt, at most MAX_REQUEUE_SECONDS.
REQUEUE_SECONDS, MAX_REQUEUE_SECONDS = 5, 300
#: How long a shutdown waits for the publishes under way before closing anyway.
DRAIN_SECONDS = 30.0

#: The task a message becomes: its name and its point.
TaskCall = tuple[str, MetricPoint | CountPoint]


def delivery_key(message: nsq.Message) -> str:
    """The key of a message, the same on every delivery of it: the task's id and idempotency
    key, and the dead letter's delivery. Its nsqd's address and its id (an id is unique only
    within its nsqd: :class:`Reader`)."""
    return f"nsq-{getattr(message, 'nsqd', '')}-{str(message.id, 'ascii')}"


class Reader(nsq.Reader):  # type: ignore[misc]
    """pynsq's reader, each message told which nsqd it came from. nsqd makes a message's id
    of a clock, a counter and its node id, which defaults to a hash of the host's name: two
    nsqd of one host (or of two hosts, one time in 1,024) give two messages one id, and the
    second was taken for a redelivery of the first. A message is delivered again only by
    the nsqd that has it, at the address the reader knows it by."""

    def _handle_message(self, conn: Any, message: nsq.Message) -> Any:
        message.nsqd = str(conn)
        return super()._handle_message(conn, message)


def read_message(body: bytes, delivery: str) -> TaskCall | DeadLetter:
    """The task a message becomes and its point, or its dead letter. Read as the original's
    consumer read it (keys whatever their case, a metric's thing as sent:
    psd/jsonfields.py), then validated by the model's parsers, so that nothing the worker
    would refuse reaches the broker; a letter has the kind of its payload when it had one
    (its keys folded), so that ``psd dlq retry`` can apply it once fixed."""

    def dead(kind: str, payload: Any, reason: str) -> DeadLetter:
        return DeadLetter(kind, payload, reason, "nsq", delivery)

    try:
        doc = loads(body, MESSAGE)
    except ValueError as exc:  # UnicodeDecodeError included
        return dead("message", body.decode("utf-8", "replace"), f"not JSON: {exc}")
    except RecursionError:  # nested deeper than Python's parser goes: no message of psd's
        return dead("message", body[:1000].decode("utf-8", "replace"), "JSON nested too deep")
    if not isinstance(doc, dict):
        return dead("message", doc, "not a JSON object")
    command = doc.get("command")
    if not isinstance(command, str) or command not in COMMANDS:
        return dead("message", doc, f"unknown command {command!r} (known: metric, count)")
    task, parse = COMMANDS[command]
    payload = doc.get(command)
    if not isinstance(payload, dict):
        return dead("message", doc, f"a {command} message needs a {command!r} object")
    try:
        padded = padded_thing(payload) if command == "metric" else ""
        if padded:
            raise InvalidInput(padded, "thing")
        point = parse(payload)
    except InvalidInput as exc:
        return dead(command, payload, str(exc))
    return task, point


class Bridge:
    """Forwards messages on one publishing thread (kombu producers are not thread-safe, and
    a publish blocks) and answers nsqd on the IOLoop once that thread is done with each."""

    def __init__(self, settings: Settings) -> None:
        self.celery = create_app(settings)
        self.redis = client_from_url(settings.redis_url)
        self.store = Store(self.redis, settings)
        self.publisher = ThreadPoolExecutor(1, thread_name_prefix="nsq-publish")
        self.loop = asyncio.get_running_loop()
        self.pending: set[asyncio.Future[None]] = set()
        self.stopping = self.closed = False

    def handle(self, message: nsq.Message) -> None:
        """pynsq's message handler, on the IOLoop: it must not block, so it hands over."""
        if self.closed:  # came after the close: nsqd delivers it again after its timeout
            message.enable_async()
            return
        if self.stopping:  # sent before nsqd saw our RDY 0: another consumer may take it
            message.requeue(backoff=False, delay=0)
            return
        message.enable_async()
        body, delivery = message.body, delivery_key(message)
        future = self.loop.run_in_executor(self.publisher, self.forward, body, delivery)
        self.pending.add(future)
        future.add_done_callback(partial(self.settle, message))

    def forward(self, body: bytes, delivery: str) -> None:
        """Publish the message's task or keep its dead letter (on the publishing thread).
        Raises when neither happened: the message must then not be FINished."""
        read = read_message(body, delivery)
        if isinstance(read, DeadLetter):
            self.dead(read, "invalid")
            return
        task, point = read
        try:  # the worker would refuse it too (and does, should it pass the retention queued)
            self.store.check_kept([point])
        except PastRetention as exc:
            kind = "metric" if isinstance(point, MetricPoint) else "count"
            self.dead(DeadLetter(kind, asdict(point), str(exc), "nsq", delivery), "retention")
            return
        kwargs = {**asdict(point), "idempotency_key": delivery}
        # returns once the broker has it (Redis: LPUSH done; RabbitMQ: publish confirmed)
        self.celery.send_task(task, kwargs=kwargs, task_id=delivery)
        POINTS.labels("nsq").inc()

    def dead(self, letter: DeadLetter, reason: str) -> None:
        """Keep a message's letter; a message delivered again after its letter was kept
        (the bridge stopped before it FINished it) is neither kept nor counted again."""
        (new,) = dlq.add(self.redis, [letter], window=self.store.settings.idempotency_window)
        if new:
            REJECTED.labels("nsq", reason).inc()
        kept = "dead letter" if new else "dead letter kept before"
        log.warning("%s: %s: %s", letter.delivery, kept, letter.reason)

    def settle(self, message: nsq.Message, future: asyncio.Future[None]) -> None:
        """FIN what the broker (or the dead-letter list) now holds; REQ the rest with backoff,
        which also slows pynsq down while the broker or the store is away."""
        self.pending.discard(future)
        if self.closed:  # a publish outlived the drain: nsqd delivers it again after its timeout
            return
        error = future.exception()
        if error is None:
            message.finish()
            return
        delay = min(REQUEUE_SECONDS * message.attempts, MAX_REQUEUE_SECONDS)
        log.warning("%s requeued for %d s: %s", delivery_key(message), delay, error)
        message.requeue(backoff=True, delay=delay)

    async def drain(self, reader: nsq.Reader) -> None:
        """Stop taking messages, let the publishes under way finish and be answered, then
        close. nsqd keeps what a closed connection left unanswered in flight until its
        timeout (a minute by default), and only then gives it to another consumer: each
        connection is asked to send no more (CLS) first, and every message sent before
        nsqd's answer is answered (REQ) before the close."""
        self.stopping = True
        reader.set_max_in_flight(0)
        await close_wait(reader)
        if self.pending:
            _, late = await asyncio.wait(set(self.pending), timeout=DRAIN_SECONDS)
            if late:
                log.warning("closing with %d publishes under way: nsqd will resend", len(late))
        deadline = self.loop.time() + 5
        while self.loop.time() < deadline and any(
            conn.in_flight > 0 or (conn.stream and conn.stream.writing())
            for conn in reader.conns.values()
        ):  # closing a stream drops what it has not written yet, FINs included
            await asyncio.sleep(0.01)
        self.closed = True
        # pynsq logs the close it is asked for as an ERROR ("failed to unpack size")
        logging.getLogger("nsq").setLevel(logging.CRITICAL)
        reader.close()
        self.publisher.shutdown(wait=False, cancel_futures=True)
        self.celery.close()
        self.redis.close()


async def close_wait(reader: nsq.Reader, timeout: float = 5.0) -> None:
    """Send CLS on every connection and wait for nsqd's CLOSE_WAIT (or the connection's
    end): nsqd stops sending with it, so the messages of the connection have then been read
    (and handed to :meth:`Bridge.handle`), but for one nsqd was already sending, which the
    drain still waits for. A connection not yet subscribed is closed by nsqd instead,
    holding nothing."""
    answered: set[int] = set()
    conns = [conn for conn in reader.conns.values() if not conn.closed()]
    for conn in conns:

        def on_response(conn: Any = conn, data: bytes = b"", **_: Any) -> None:
            if data == b"CLOSE_WAIT":
                answered.add(id(conn))

        conn.on("response", on_response)
        try:
            conn.send(b"CLS\n")
        except Exception:  # closed meanwhile: nothing more will come on it
            answered.add(id(conn))
    deadline = asyncio.get_running_loop().time() + timeout
    while any(id(conn) not in answered and not conn.closed() for conn in conns):
        if asyncio.get_running_loop().time() > deadline:
            log.warning("no CLOSE_WAIT from nsqd within %.0f s: closing anyway", timeout)
            return
        await asyncio.sleep(0.01)


async def serve(settings: Settings) -> None:
    """Consume until SIGTERM or SIGINT, then drain."""
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    bridge = Bridge(settings)
    if settings.nsqd_tcp_addresses:
        source = f"nsqd {', '.join(settings.nsqd_tcp_addresses)}"
        addresses = {"nsqd_tcp_addresses": list(settings.nsqd_tcp_addresses)}
    else:
        source = f"nsqlookupd {', '.join(settings.nsqlookupds)}"
        addresses = {"lookupd_http_addresses": list(settings.nsqlookupds)}
    reader = Reader(
        topic=settings.nsq_topic,
        channel=settings.nsq_channel,
        message_handler=bridge.handle,
        max_in_flight=settings.nsq_max_in_flight,
        max_tries=0,  # never give up: pynsq's default FINishes a message after 5 attempts
        max_backoff_duration=30,  # resume within half a minute of the broker coming back
        **addresses,
    )
    broker = masked(bridge.celery.conf.broker_url)
    log.info(
        "consuming NSQ topic %r, channel %r, from %s into queue %r on %s",
        settings.nsq_topic,
        settings.nsq_channel,
        source,
        settings.queue,
        broker,
    )
    await stop.wait()
    log.info("stopping: finishing the publishes under way")
    await bridge.drain(reader)
    log.info("stopped")


def main() -> int:
    settings = load_settings()
    logs.setup(settings.log_format)
    logging.getLogger("nsq").setLevel(logging.WARNING)  # pynsq logs each heartbeat at INFO
    if not settings.redis_url:
        log.error("psd nsq-bridge needs the store's Redis for dead letters: set PSD_REDIS_URL")
        return 2
    if not (settings.nsqd_tcp_addresses or settings.nsqlookupds):
        log.error("nothing to consume: set PSD_NSQLOOKUPDS or PSD_NSQD_TCP_ADDRESSES")
        return 2
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
