"""Leaderboards: users ranked by a value, standard competition ranking ("1224": tied users
share a rank, and the ranks after a tie skip as many places as it held), in a stable order
(value descending, then uid ascending), with the movement since an earlier standing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Standing:
    uid: int
    value: int
    rank: int


def ranked(values: Mapping[int, int]) -> list[Standing]:
    """Every user's standing, best first."""
    order = sorted(values.items(), key=lambda item: (-item[1], item[0]))
    out: list[Standing] = []
    for position, (uid, value) in enumerate(order, start=1):
        rank = out[-1].rank if out and out[-1].value == value else position
        out.append(Standing(uid, value, rank))
    return out


def window(
    board: list[Standing], top: int | None, around: int | None, spread: int
) -> list[Standing]:
    """The part of a board asked for: the ``top`` first, or ``spread`` places either side of
    user ``around`` (none if that user is not on the board), or all of it."""
    if around is not None:
        at = next((i for i, s in enumerate(board) if s.uid == around), None)
        if at is None:
            return []
        return board[max(0, at - spread) : at + spread + 1]
    return board if top is None else board[:top]
