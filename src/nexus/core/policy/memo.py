"""Bounded memo tables for compiled authorization views: the oldest entry goes first when full.

Dropping one entry at a time keeps a working set larger than the bound mostly cached, where
clearing the whole table would make every request a miss. `OrderedDict` pops its oldest entry in
constant time (a plain dict's first key gets slower to find as deletions pile up at its front).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def memo_table() -> OrderedDict[K, V]:
    return OrderedDict()


def remember(table: OrderedDict[K, V], key: K, value: V, limit: int) -> V:
    """Store `value` under `key`, evicting the oldest entry once `table` holds `limit`; returns `value`."""
    if len(table) >= limit:  # filled by one thread, or under its owner's lock: never empty here
        table.popitem(last=False)
    table[key] = value
    return value
