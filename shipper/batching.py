"""Documents → bulk requests: ids, daily index names and the NDJSON bodies of ``_bulk``. Pure.

* ``document_id(doc)`` — deterministic: a hash of host, session id, session start, transaction
  and recipient, so that a document sent again after a crash overwrites itself;
* ``index_name(prefix, doc)`` — ``<prefix>-YYYY.MM.DD`` of the document's own ``@timestamp``,
  in UTC (PRODUCT.md, "Output");
* ``prepare(doc, prefix) -> BulkItem`` — one document's action and source lines;
* ``BatchBuilder(prefix, max_docs, max_bytes)`` — documents → ``BulkBatch``es, one request
  body each, which ``shipper.opensearch.BulkShipper.ship_batch`` posts as they are.
"""

from __future__ import annotations

import array
import functools
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, overload


def document_id(doc: dict[str, Any]) -> str:
    """Deterministic id: a hash of host, session id, session start, transaction and recipient,
    so re-sending a document after a crash overwrites it instead of duplicating it. (The five
    fields are read directly, for documents of ``build_documents``' shape: five ``get_field``
    calls were a third of ``prepare``, bench/docs_bench.py.)"""
    smtp = doc.get("smtp") or {}
    to = (doc.get("email") or {}).get("to") or {}
    parts: tuple[Any, ...] = ((doc.get("host") or {}).get("name"), smtp.get("session_id"),
             (doc.get("event") or {}).get("start"), smtp.get("transaction"), to.get("address"))
    if smtp.get("queue_id") is not None:
        # A log joined by queue ID (Postfix) writes a message's receipt (inbound) and its
        # delivery (outbound) under one queue ID, time and recipient, and a recipient's last
        # deferral and the expiry that rejects it in one attempt: the direction and the
        # verdict tell them apart. Documents without a queue ID (Xeams) keep the five parts.
        parts = (*parts, smtp.get("direction"), smtp.get("verdict"))
    key = "\x1f".join(["" if p is None else str(p) for p in parts])
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def index_name(prefix: str, doc: dict[str, Any]) -> str:
    """``<prefix>-YYYY.MM.DD`` from the document's own ``@timestamp``, in UTC."""
    stamp = doc["@timestamp"]
    day = _hour_day(stamp[:13], stamp[23:]) if len(stamp) == 29 and _AFTER_HOUR(stamp, 13) else None
    return f"{prefix}-{day or _day(stamp)}"


# what follows the hour in a timestamp as build_documents writes it (fromisoformat checks the rest)
_AFTER_HOUR = re.compile(r":[0-5][0-9]:[0-5][0-9]\.[0-9]{3}[+-]").match


def _day(stamp: str) -> str:
    return f"{datetime.fromisoformat(stamp).astimezone(UTC):%Y.%m.%d}"


@functools.lru_cache(maxsize=4096)
def _hour_day(hour: str, offset: str) -> str | None:
    """The UTC day of every time of a local hour ("2024-03-21T23" and "-04:00"), or None when
    the day changes within it (an offset such as +05:45 moves midnight to a quarter past) or
    this is no timestamp as ``build_documents`` writes them. A day per document made from its
    text was a fifth of ``prepare`` (bench/docs_bench.py)."""
    try:
        first, last = _day(f"{hour}:00:00.000{offset}"), _day(f"{hour}:59:59.999{offset}")
    except ValueError:
        return None
    return first if first == last else None


@dataclass(frozen=True, slots=True)
class BulkItem:
    """One document, serialised once: the action line and the source line, with newlines."""

    index: str
    id: str
    action: bytes
    source: bytes

    @property
    def size(self) -> int:
        return len(self.action) + len(self.source)


try:  # optional: about 30x faster than json for our documents (a fifth of backfill's CPU otherwise)
    import orjson
except ImportError:  # pragma: no cover - depends on the installation
    orjson = None  # type: ignore[assignment]  # the optional-import idiom: a module or None


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON; the same bytes with or without orjson."""
    if orjson is not None:
        try:
            return orjson.dumps(obj)
        except TypeError:  # e.g. an int beyond 64 bits: let json say what it makes of it
            pass
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def prepare(doc: dict[str, Any], prefix: str) -> BulkItem:
    """Serialise a document for ``_bulk``: ``index`` (overwrite = idempotent) with its own id
    into the daily index of its own ``@timestamp``."""
    idx = index_name(prefix, doc)
    doc_id = document_id(doc)
    return BulkItem(idx, doc_id, _action(idx, doc_id), dumps(doc) + b"\n")


def _action(idx: str, doc_id: str) -> bytes:
    """``dumps({"index": {"_index": idx, "_id": doc_id}}) + b"\\n"``, from the part before the id
    (made once per index) and the id, which ``document_id`` makes of hex digits: nothing in it to
    escape (bench/docs_bench.py: a serialisation per document was a tenth of ``prepare``)."""
    if not (doc_id.isascii() and doc_id.isalnum()):  # not one of ours: the general way
        return dumps({"index": {"_index": idx, "_id": doc_id}}) + b"\n"
    return _action_head(idx) + doc_id.encode("ascii") + b'"}}\n'


@functools.lru_cache(maxsize=1024)
def _action_head(idx: str) -> bytes:
    return b'{"index":{"_index":' + dumps(idx) + b',"_id":"'


class BulkBatch(Sequence[BulkItem]):
    """Items of one bulk request, serialised back to back into the request body: backfill's
    worker hands the sender one bytes object per batch (not four objects per document to
    pickle, unpickle and join again), and the sender posts it as it is. The items are cut out
    of it only when one is needed alone: for a retry or a dead letter.

    ``bounds`` holds, for item ``i``, where its action line starts (``2 * i``) and where its
    source line starts (``2 * i + 1``); the last entry is the end of the body."""

    __slots__ = ("body", "bounds", "ids", "indices")

    def __init__(self, body: bytes, indices: Sequence[str], ids: Sequence[str], bounds: Sequence[int]) -> None:
        self.body = body
        self.indices = indices
        self.ids = ids
        self.bounds = bounds

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, i: int) -> BulkItem: ...

    @overload
    def __getitem__(self, i: slice) -> list[BulkItem]: ...

    def __getitem__(self, i: int | slice) -> BulkItem | list[BulkItem]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        b = self.bounds
        return BulkItem(self.indices[i], self.ids[i], self.body[b[2 * i]:b[2 * i + 1]],
                        self.body[b[2 * i + 1]:b[2 * i + 2]])

    def __iter__(self) -> Iterator[BulkItem]:
        return (self[i] for i in range(len(self)))

    def payload(self) -> tuple[bytes, list[str], list[str], array.array[int]]:
        """What to pickle: plain objects (``BulkBatch(*payload)`` makes it again)."""
        return self.body, list(self.indices), list(self.ids), array.array("q", self.bounds)


class BatchBuilder:
    """Serialises documents into ``BulkBatch``es of at most ``max_docs`` documents and
    ``max_bytes`` bytes (one larger than ``max_bytes`` travels alone), as ``batches`` groups
    ``prepare``'s items, with the same bytes."""

    def __init__(self, prefix: str, max_docs: int, max_bytes: int) -> None:
        self.prefix = prefix
        self.max_docs = max_docs
        self.max_bytes = max_bytes
        self._start()

    def _start(self) -> None:
        self._parts: list[bytes] = []
        self._indices: list[str] = []
        self._ids: list[str] = []
        self._bounds: list[int] = []
        self._size = 0

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, doc: dict[str, Any]) -> BulkBatch | None:
        """Add a document; returns the batch it did not fit into any more, if so."""
        idx = index_name(self.prefix, doc)
        doc_id = document_id(doc)
        action = _action(idx, doc_id)
        source = dumps(doc)
        size = len(action) + len(source) + 1
        full = None
        if self._ids and (len(self._ids) >= self.max_docs or self._size + size > self.max_bytes):
            full = self.flush()
        bounds = self._bounds
        start = self._size
        bounds.append(start)
        bounds.append(start + len(action))
        self._parts += (action, source, b"\n")
        self._indices.append(idx)
        self._ids.append(doc_id)
        self._size = start + size
        return full

    def flush(self) -> BulkBatch | None:
        """The batch so far (None if empty); the next document starts a new one."""
        if not self._ids:
            return None
        self._bounds.append(self._size)
        batch = BulkBatch(b"".join(self._parts), self._indices, self._ids, self._bounds)
        self._start()
        return batch


def batches(items: Iterable[BulkItem], max_docs: int, max_bytes: int) -> Iterator[list[BulkItem]]:
    """Group items into bulk requests of at most ``max_docs`` items and ``max_bytes`` bytes
    (an item larger than ``max_bytes`` travels alone rather than never)."""
    batch: list[BulkItem] = []
    size = 0
    for item in items:
        if batch and (len(batch) >= max_docs or size + item.size > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += item.size
    if batch:
        yield batch


