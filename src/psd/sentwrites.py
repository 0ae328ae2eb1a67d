"""Writes sent ahead: a bulk load's calls on their way to the server while psd builds the
next write (``Store.send_metrics``).

``Store.write_metrics`` returns once the server has answered: a load of many blocks (a
user's days at a time: ``psd import``) has the server wait while psd reads a block's replies
and builds the next one's calls, and psd wait while the server applies them. A write sent
ahead returns once its calls are sent (psd/scripts.py's :class:`SentCalls`: each as it is
built, on a connection of its own) and reads its replies when asked for its results, so the
next write is built while the server applies this one. One server, whose writes wait for no
replica; anywhere else a write sent ahead is applied before it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from psd.nodes import Builder, Cutter, Nodes
from psd.scripts import SentCalls, streamable

#: A call's reply, read into each of its points' results.
PerPoint = Callable[[Any, list[int]], list[Any]]


class SentWrite:
    """A write on its way: :meth:`results` reads its replies (once) and answers what
    ``Store.write_metrics`` would have."""

    def __init__(self, finish: Callable[[], list[Any]]) -> None:
        self._finish: Callable[[], list[Any]] | None = finish
        self._results: list[Any] = []

    def results(self) -> list[Any]:
        """Each point's result (``WriteResult``), in order; a Redis error raises here."""
        if self._finish is not None:
            finish, self._finish = self._finish, None
            self._results = finish()
        return self._results


def sendable(nodes: Nodes) -> bool:
    """Whether a write's calls can be sent ahead on these nodes: one server, through a
    connection pool, its writes waiting for no replica."""
    return not nodes.cluster and not nodes.replicas and streamable(nodes.client)


def send_calls(
    nodes: Nodes, items: list[int], cut: Cutter, build: Builder, per_point: PerPoint
) -> Callable[[], dict[int, Any]]:
    """The calls of ``items`` sent (``sendable`` nodes), and what reads their replies: each
    point's result by index."""
    calls = cut(items)
    sent = SentCalls(nodes.client, (build(call) for call in calls))

    def replies() -> dict[int, Any]:
        results: dict[int, Any] = {}
        for indexes, reply in zip(calls, sent.replies(), strict=True):
            if isinstance(reply, BaseException):
                raise reply
            results.update(zip(indexes, per_point(reply, indexes), strict=True))
        return results

    return replies
