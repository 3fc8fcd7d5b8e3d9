"""The one bounded cache of the shipper's own making (``functools.lru_cache`` serves functions).

Each use names the benchmark that shows it pays (STYLE.md: "a cache is a claim about speed").
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Bounded(dict[K, V]):
    """A dict that forgets everything when it is full. For values that repeat in runs (a log's
    seconds, its minutes, its days) a rare refill costs less than LRU bookkeeping on every
    look-up; reads are plain dict reads."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: K, value: V) -> V:
        if len(self) >= self.size:
            self.clear()
        self[key] = value
        return value
