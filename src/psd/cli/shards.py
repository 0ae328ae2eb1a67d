"""The embedded stores of ``psd up``, and the sharded one: ``psd up --shards N``.

A sharded store is an embedded Redis Cluster of N primaries (psd/embedded_cluster.py), its
nodes under ``<data dir>/cluster/node-<k>``, with the data directory's one password. A cluster
cannot be Celery's broker, so a small standalone server beside it (``<data dir>/broker``, same
password) is the broker, unless one is configured. Started again on the same data directory,
the cluster comes back on its ports with its data (its ``cluster.json``).

A data directory holds one kind of store: the single server keeps its append-only file at its
top, a cluster under ``cluster/``. Starting the other kind on it, or a cluster of another shape,
is refused (saying what would start it) rather than leaving two stores, each with half of the
data, in one place. A first start stopped (killed) while its cluster formed leaves node
directories, a mark that it was forming them, and no ``cluster.json``: no client wrote to
them (psd up serves once the cluster has formed), so the next start removes them and forms
the cluster afresh.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from psd.config import Settings
from psd.embedded import EmbeddedServer, data_dir_password
from psd.embedded_cluster import LAYOUT_FILE, EmbeddedCluster
from psd.errors import StoreError

#: Where, under the data directory, a sharded store's nodes and its broker keep their data.
CLUSTER_DIR = "cluster"
BROKER_DIR = "broker"
#: What the single embedded server leaves at the top of the data directory.
SINGLE_SERVER_MARK = "appendonlydir"
#: Left in the cluster's directory while its first start forms it, removed once it has formed.
FORMING_MARK = "forming"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Embedded:
    """What ``psd up`` started in the data directory: the store's URL, the broker's (empty:
    the store's own server, or the configured broker), the banner's words on where their
    data is, and every server to keep alive, by log name, with the words that name it."""

    url: str
    broker_url: str
    where: str
    servers: dict[str, tuple[EmbeddedServer, str]]
    broker_where: str = ""


def shape_of(data_dir: Path) -> tuple[int, int] | None:
    """The (primaries, replicas) of the cluster the data directory holds, if it holds one
    that formed."""
    path = data_dir / CLUSTER_DIR / LAYOUT_FILE
    if not path.exists():
        return None
    layout = json.loads(path.read_text())
    return int(layout["primaries"]), int(layout["replicas"])


def shape_words(primaries: int, replicas: int) -> tuple[str, str]:
    """The shape in words, and the options that start it."""
    words = f"a cluster of {primaries} primaries"
    option = f"--shards {primaries}"
    if replicas:
        words += f" with {replicas} replica{'s' if replicas > 1 else ''} each"
        option += f" --replicas {replicas}"
    return words, option


def refuse_other_store(data_dir: Path, shards: int, replicas: int) -> None:
    """Raise StoreError, saying what to do, when the data directory holds another kind of
    store than the one asked for (or a cluster of another shape)."""
    shape = shape_of(data_dir)
    if shards <= 1:
        if shape is not None:
            words, option = shape_words(*shape)
            raise StoreError(
                f"{data_dir} holds a sharded store ({words}): start it with "
                f"psd up {option}, or give psd up another --data-dir"
            )
        if (data_dir / CLUSTER_DIR).exists():
            raise StoreError(
                f"{data_dir} holds a sharded store's {CLUSTER_DIR}/ directory: start it with "
                "psd up --shards N, or give psd up another --data-dir"
            )
        return
    if (data_dir / SINGLE_SERVER_MARK).exists():
        raise StoreError(
            f"{data_dir} holds a single-server store: start it with psd up (no --shards), or "
            "give psd up --shards another --data-dir (its data is not moved to the cluster)"
        )
    if shape is not None and shape != (shards, replicas):
        words, option = shape_words(*shape)
        asked, _ = shape_words(shards, replicas)
        raise StoreError(
            f"{data_dir} holds {words}, not {asked}: start it with psd up {option}, or give "
            "psd up another --data-dir for the new shape (a cluster is not reshaped in place)"
        )


def forget_unformed(data_dir: Path) -> None:
    """Remove the cluster directory a first start left when it was stopped before its cluster
    formed. Only with the mark of such a start and no ``cluster.json``: the nodes of a formed
    cluster are never removed, even if its ``cluster.json`` is lost (then they are refused)."""
    cluster_dir = data_dir / CLUSTER_DIR
    mark = cluster_dir / FORMING_MARK
    if (cluster_dir / LAYOUT_FILE).exists():
        mark.unlink(missing_ok=True)  # formed: stopped just before the mark was removed
    elif mark.exists():
        log.warning("removing %s: its cluster never finished forming (stopped)", cluster_dir)
        shutil.rmtree(cluster_dir)


@contextmanager
def forming(cluster_dir: Path) -> Iterator[None]:
    """Mark the cluster's directory while its first start forms it; the mark stays if the
    start fails or is killed, for :func:`forget_unformed`."""
    mark = cluster_dir / FORMING_MARK
    if not (cluster_dir / LAYOUT_FILE).exists():
        cluster_dir.mkdir(parents=True, exist_ok=True)
        mark.touch()
    yield
    mark.unlink(missing_ok=True)


@contextmanager
def sharded(settings: Settings, shards: int, replicas: int) -> Iterator[Embedded]:
    """The embedded cluster (and broker) for as long as the block runs; the caller holds the
    data directory's lock. The broker stops before the cluster: the store last."""
    data_dir = Path(settings.data_dir)
    forget_unformed(data_dir)
    refuse_other_store(data_dir, shards, replicas)
    password = data_dir_password(data_dir)
    with ExitStack() as stack:
        cluster = EmbeddedCluster(
            primaries=shards, replicas=replicas, data_dir=data_dir / CLUSTER_DIR, password=password
        )
        with forming(data_dir / CLUSTER_DIR):
            stack.enter_context(cluster)
        servers = {
            f"node-{k}": (server, f"node {k} of the cluster ({port})")
            for k, (port, server) in enumerate(cluster.servers.items())
        }
        words, _ = shape_words(shards, replicas)
        where = f"(embedded, {words}, data in {data_dir / CLUSTER_DIR})"
        if settings.broker_url:
            yield Embedded(cluster.url, "", where, servers)
            return
        broker = EmbeddedServer(data_dir=data_dir / BROKER_DIR, password=password)
        stack.enter_context(broker)
        servers["broker"] = (broker, "the broker")
        broker_where = f"(embedded, data in {data_dir / BROKER_DIR})"
        yield Embedded(cluster.url, broker.url, where, servers, broker_where)
