"""OpenSearch at the edge: the client factory, error translation, and the bulk shipper.

Public API (used by ``setup``, ``backfill``, ``trace`` and the daemon):

* ``make_client(opensearch_settings) -> OpenSearch``
* ``translate_errors(opensearch_settings, action)`` — a context manager that turns
  opensearch-py exceptions into ``ConnectionFailed`` / ``RequestRefused`` with a message
  naming the URL and the reason, never a secret.
* ``BulkShipper(client, settings, dead_letter_path, *, max_retries=..., stop=None)``
  with ``ship(docs) -> ShipResult``: blocks until every document is acknowledged by
  OpenSearch or dead-lettered (refused for good); retries 429/5xx/connection failures per
  document with exponential backoff and jitter; raises ``ConnectionFailed`` after
  ``max_retries`` rounds (``None`` = retry forever, for the daemon) or ``ShippingStopped``
  (a ``ConnectionFailed``) as soon as ``stop`` is set while it waits.
* ``PipelinedShipper`` — ``submit(doc)`` / ``close() -> ShipResult``: one sender thread
  ships full batches while the caller goes on parsing (backfill).
* ``prepare(doc, prefix) -> BulkItem`` (one document's action and source lines), and
  ``BatchBuilder(prefix, max_docs, max_bytes)``: documents → ``BulkBatch``es, the same bytes
  as ``batches`` of ``prepare``'s items but one body per bulk request, which
  ``BulkShipper.ship_batch`` posts as it is (backfill's worker sends ``BulkBatch.payload()``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import queue
import random
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import EllipsisType
from typing import Any, Literal

import opensearchpy
from opensearchpy import OpenSearch

from shipper.batching import BatchBuilder, BulkBatch, BulkItem, batches, dumps
from shipper.errors import ConnectionFailed, RequestRefused, ShipperError
from shipper.settings import PASSWORD_ENV, OpenSearchSettings

log = logging.getLogger(__name__)

# Only what we read from a bulk response: less JSON for OpenSearch to write and for us to parse.
BULK_FILTER_PATH = "errors,items.*.status,items.*.error"


# --------------------------------------------------------------------------- connection


def display_url(url: str) -> str:
    """The URL without user info, for messages (``https://u:p@h:9200`` → ``https://h:9200``)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def display_hosts(opensearch_settings: OpenSearchSettings) -> str:
    return ", ".join(display_url(h) for h in opensearch_settings.hosts)


def _host_dict(url: str) -> tuple[dict[str, Any], tuple[str, str] | None]:
    """A host entry for opensearch-py, and the credentials found in the URL (kept out of it:
    opensearch-py would otherwise keep them in the host dict, which its repr prints)."""
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    scheme = parts.scheme or "http"
    host: dict[str, Any] = {
        "host": parts.hostname or "localhost",
        "port": parts.port or 9200,
        "use_ssl": scheme == "https",
    }
    if parts.path and parts.path != "/":
        host["url_prefix"] = parts.path
    creds = None
    if parts.username:
        creds = (urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))
    return host, creds


# Seconds a host that failed is left out of the round robin before it is tried again (doubled
# for each failure in a row). opensearch-py's 60 s would leave a restarted node unused for
# minutes; a retry of a host still down costs one refused connection, or one `timeout` behind a
# firewall that drops packets, and then the request goes to the next host anyway.
DEAD_TIMEOUT = 10.0


def make_client(opensearch_settings: OpenSearchSettings, **overrides: Any) -> OpenSearch:
    """An opensearch-py client from the ``opensearch`` section of the settings; the password is
    read now (``OpenSearchSettings.password()``: a ConfigError if its file went missing or was
    opened up to others).

    Several hosts (a cluster's nodes, each able to coordinate a bulk request) are used in
    turn, and a request that gets no answer from one is sent to the next; everything else is
    retried by ``BulkShipper``, with backoff (docs/opensearch.md, "Several hosts"):

    - the pool takes the hosts round robin (opensearch-py's ``RoundRobinSelector``), starting
      from a random one (``randomize_hosts``), so that several shippers spread their load;
    - a connection refused, reset or timed out marks the host dead and the same request goes to
      the next live host at once (``max_retries`` = hosts - 1, ``retry_on_timeout``): each host
      is tried once per request. Re-sending a bulk request that timed out is harmless: document
      ids are deterministic, a second write overwrites;
    - a dead host is tried again after ``DEAD_TIMEOUT`` seconds, doubling with each failure in a
      row (opensearch-py's ``timeout_cutoff``: at most 32 times);
    - an answer with an HTTP status is never re-sent by the transport (``retry_on_status=()``):
      a 503 during a failover means the cluster, not the node, is not ready, and another node
      at once would say the same; ``BulkShipper`` waits and retries;
    - no sniffing: the nodes' publish addresses (what ``_nodes/http`` returns) are often not
      reachable from the mail server (containers, NAT, a load balancer in front, TLS names), and
      behind a load balancer the configured URL is the one to use. The hosts are the list given.
    """
    s = opensearch_settings
    hosts: list[dict[str, Any]] = []
    url_creds = None
    for url in s.hosts:
        host, creds = _host_dict(url)
        hosts.append(host)
        url_creds = url_creds or creds
    auth = (s.username, s.password() or "") if s.username else url_creds
    kwargs: dict[str, Any] = {
        "hosts": hosts,
        "http_auth": auth,
        "verify_certs": s.verify_certs,
        "ssl_show_warn": False,  # one warning of ours at start instead of one per request
        "ca_certs": _str_or_none(s.ca_certs),
        "client_cert": _str_or_none(s.client_cert),
        "client_key": _str_or_none(s.client_key),
        "timeout": s.timeout,
        "http_compress": s.bulk.compression,
        "max_retries": max(len(hosts) - 1, 0),
        "retry_on_status": (),
        "retry_on_timeout": len(hosts) > 1,
        "dead_timeout": DEAD_TIMEOUT,
        "randomize_hosts": True,
        "sniff_on_start": False,
        "sniff_on_connection_fail": False,
        "sniffer_timeout": None,
    }
    _quiet_library_logger()
    if not s.verify_certs and any(h["use_ssl"] for h in hosts):
        log.warning("opensearch.verify_certs is false: the server's TLS certificate is not checked")
    kwargs.update(overrides)
    return OpenSearch(**kwargs)


def _quiet_library_logger() -> None:
    """opensearch-py logs every failed request as a WARNING with a traceback; we explain the
    failure ourselves in one line, so its records are shown only when debugging (-vv)."""
    library = logging.getLogger("opensearch")
    if library.level == logging.NOTSET and logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        library.setLevel(logging.ERROR)


def _str_or_none(value: Path | None) -> str | None:
    return None if value is None else str(value)


_TLS_REASON = re.compile(r"certificate verify failed: ([^()\]']+?)\s*(?:\(_ssl|\)|'|$)")


def _connection_reason(exc: BaseException) -> str:
    text = str(exc)
    chain = [exc]
    info = getattr(exc, "info", None)
    if isinstance(info, BaseException):
        chain.append(info)
        text += " " + str(info)
    if isinstance(exc, opensearchpy.ConnectionTimeout):
        return "timed out"
    lowered = text.lower()
    if "connection refused" in lowered or "errno 111" in lowered:
        return "connection refused"
    if "name or service not known" in lowered or "nodename nor servname" in lowered or (
        "temporary failure in name resolution" in lowered
    ):
        return "host name could not be resolved"
    if "timed out" in lowered:
        return "timed out"
    if "connection reset" in lowered or "remote end closed" in lowered:
        return "connection closed by the server (http:// URL for an https:// endpoint?)"
    if "wrong version number" in lowered or "record layer failure" in lowered:
        return "TLS handshake failed (https:// URL for a plain http:// endpoint?)"
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _tls_verify_reason(exc: BaseException) -> str | None:
    text = str(exc) + " " + str(getattr(exc, "info", ""))
    if "CERTIFICATE_VERIFY_FAILED" not in text and "certificate verify failed" not in text:
        return None
    match = _TLS_REASON.search(text)
    return match.group(1).strip() if match else "certificate verify failed"


def describe_exception(exc: Exception, where: str, action: str = "") -> ShipperError:
    """Our error for an opensearch-py exception (``where`` is the display URL list)."""
    doing = f" ({action})" if action else ""
    if isinstance(exc, opensearchpy.ConnectionError):  # includes SSLError and ConnectionTimeout
        reason = _tls_verify_reason(exc)
        if reason is not None:
            return ConnectionFailed(
                f"TLS certificate of {where} could not be verified: {reason}",
                hint="set opensearch.ca_certs to the CA bundle that signed the server's certificate "
                "(or, not recommended, opensearch.verify_certs: false)",
            )
        reason = _connection_reason(exc)
        hint = None
        if reason in ("connection refused", "host name could not be resolved"):
            hint = "is OpenSearch running there? Set opensearch.hosts (or --opensearch URL); the local node starts with deploy/opensearch-local/start"
        return ConnectionFailed(f"cannot reach OpenSearch at {where}: {reason}{doing}", hint=hint)
    if isinstance(exc, opensearchpy.TransportError) and isinstance(exc.info, dict) and (
        error_type(exc.info.get("error")) in CLUSTER_STATE_ERRORS
    ):
        # A 403 write block is the cluster's state, not the user's permissions.
        return ConnectionFailed(f"OpenSearch at {where} is unavailable ({exc.status_code}){doing}: {_error_reason(exc)}")
    if isinstance(exc, opensearchpy.AuthenticationException):
        return ConnectionFailed(
            f"OpenSearch at {where} refused the credentials (401 Unauthorized){doing}",
            hint="check opensearch.username and the password "
            f"(opensearch.password_file, opensearch.password_env or {PASSWORD_ENV})",
        )
    if isinstance(exc, opensearchpy.AuthorizationException):
        return ConnectionFailed(
            f"OpenSearch at {where} denied permission (403 Forbidden){doing}: {_error_reason(exc)}",
            hint="grant the user the permissions smtp-shipper needs (see the README)",
        )
    if isinstance(exc, opensearchpy.TransportError):
        status = exc.status_code
        if isinstance(status, int) and (status == 429 or status >= 500):
            return ConnectionFailed(f"OpenSearch at {where} is unavailable ({status}){doing}: {_error_reason(exc)}")
        return RequestRefused(f"OpenSearch at {where} refused the request ({status}){doing}: {_error_reason(exc)}")
    return ShipperError(f"OpenSearch client failure{doing}: {exc}")


def _error_reason(exc: opensearchpy.TransportError) -> str:
    info = exc.info
    if isinstance(info, dict):
        error = info.get("error")
        if isinstance(error, dict):
            root = (error.get("root_cause") or [error])[0]
            return f"{root.get('type', '?')}: {root.get('reason', '')}".strip()
        if error:
            return str(error)
    return str(exc.error)


@contextlib.contextmanager
def translate_errors(opensearch_settings: OpenSearchSettings, action: str = "") -> Iterator[None]:
    """Run a block of client calls; opensearch-py exceptions leave it as our errors."""
    try:
        yield
    except opensearchpy.exceptions.OpenSearchException as exc:
        raise describe_exception(exc, display_hosts(opensearch_settings), action) from None


def resolve_replicas(setting: int | Literal["auto"], client: OpenSearch) -> int:
    """``auto``: 0 on a one-node cluster (a replica could never be allocated), else 1."""
    if setting == "auto":
        nodes = client.cluster.health()["number_of_data_nodes"]
        return 0 if int(nodes) <= 1 else 1
    return int(setting)


# Refusals about the cluster's state rather than the document: retried like a 5xx, never
# dead-lettered, whatever their status. A cluster block is 503 while no cluster manager is
# elected or the state is not recovered, 429 for the read-only block after a full disk, and 403
# for a write block set by hand (`index.blocks.write`), which the operator lifts: the documents
# wait for it instead of landing in the dead-letter file. A shard not found (404) is a primary
# that moved or failed over between routing and arrival.
CLUSTER_STATE_ERRORS = frozenset({"cluster_block_exception", "shard_not_found_exception"})


def retryable(status: int, error: Any) -> bool:
    """Whether a bulk item (or a whole request) refused with ``status`` and ``error`` (the
    ``error`` object of the response) is sent again: 429, 5xx (``no_shard_available_action_
    exception``, ``unavailable_shards_exception``, ``cluster_manager_not_discovered_exception``
    and every other 503 of a failover among them), and ``CLUSTER_STATE_ERRORS``. Anything else
    — a mapping rejection (400 ``mapper_parsing_exception``), a strict mapping's unknown field —
    is refused for good: sending it again cannot help."""
    return status == 429 or status >= 500 or error_type(error) in CLUSTER_STATE_ERRORS


def error_type(error: Any) -> str:
    """The ``type`` of an OpenSearch error object (a response's ``error``, or its root cause)."""
    if isinstance(error, dict):
        root = (error.get("root_cause") or [error])[0]
        if isinstance(root, dict) and root.get("type"):
            return str(root["type"])
        return str(error.get("type", ""))
    return ""


def backoff_delay(retry: int, initial: float, maximum: float, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number ``retry`` (0-based): ``initial * 2**retry`` capped at
    ``maximum``, then "equal jitter" — a random point in its upper half — so that many
    shippers hit by the same 429 do not come back in lockstep, yet never retry at once."""
    ceiling = min(maximum, initial * (2 ** min(retry, 62)))
    return float(ceiling / 2 + rand() * ceiling / 2)


# --------------------------------------------------------------------------- shipping


@dataclass
class ShipResult:
    acknowledged: int = 0
    dead_lettered: int = 0
    retried: int = 0  # documents re-sent (one per document per retry round)
    requests: int = 0
    bytes_sent: int = 0
    dead_letter_ids: list[str] = field(default_factory=list)
    # Where the sender's time went: in bulk requests (retries and back-off included), and
    # waiting for the parser to fill the next batch (set by the pipelines that have a parser
    # upstream). Together they tell which side limited a run (``sender_time``).
    bulk_seconds: float = 0.0
    parser_wait_seconds: float = 0.0

    def add(self, other: ShipResult) -> None:
        self.acknowledged += other.acknowledged
        self.dead_lettered += other.dead_lettered
        self.retried += other.retried
        self.requests += other.requests
        self.bytes_sent += other.bytes_sent
        self.dead_letter_ids.extend(other.dead_letter_ids)
        self.bulk_seconds += other.bulk_seconds
        self.parser_wait_seconds += other.parser_wait_seconds


def sender_time(result: ShipResult) -> str:
    """One line on where the sender's time went, e.g. "sender: 96% of the time in bulk
    requests (26.1 s), 4% of the time waiting for the parser (1.1 s)": OpenSearch limited
    the run when the first share is high, the parser when the second is."""
    total = result.bulk_seconds + result.parser_wait_seconds
    if total <= 0:
        return "sender: no bulk request was sent"

    def share(seconds: float) -> str:
        return f"{seconds / total * 100:.0f}% of the time"

    return (f"sender: {share(result.bulk_seconds)} in bulk requests ({result.bulk_seconds:.1f} s), "
            f"{share(result.parser_wait_seconds)} waiting for the parser ({result.parser_wait_seconds:.1f} s)")


class ShippingStopped(ConnectionFailed):
    """``stop`` was set while documents were still waiting for OpenSearch."""


class DeadLetters:
    """Append-only NDJSON file of documents OpenSearch refused for good."""

    def __init__(self, path: str | os.PathLike[str], clock: Callable[[], dt.datetime] | None = None) -> None:
        self.path = Path(path)
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))

    def write(self, entries: Sequence[tuple[BulkItem, int, Any]]) -> None:
        if not entries:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        now = self._clock().isoformat(timespec="milliseconds").replace("+00:00", "Z")
        with self.path.open("ab") as out:
            for item, status, error in entries:
                record = {
                    "@timestamp": now,
                    "index": item.index,
                    "id": item.id,
                    "status": status,
                    "error": error,
                    "document": json.loads(item.source),
                }
                out.write(dumps(record) + b"\n")
            out.flush()
            os.fsync(out.fileno())


def _stop_predicate(stop: threading.Event | Callable[[], bool] | None) -> Callable[[], bool]:
    if stop is None:
        return lambda: False
    if isinstance(stop, threading.Event):
        return stop.is_set
    return stop


class BulkShipper:
    """Ships documents with ``_bulk``; see the module docstring for the guarantees.

    Why our own loop over ``client.bulk`` rather than ``helpers.streaming_bulk``: the helper
    retries only per-item 429s (not 5xx items, and connection errors only for the whole
    chunk without resending), raises or silently drops the rest depending on
    ``raise_on_error``, and cannot wait forever with a way to stop. Here each item of the
    response decides: 2xx acknowledged, 429/5xx re-sent (only those items), anything else
    dead-lettered; and the serialisation of each document is done once.
    """

    def __init__(
        self,
        client: OpenSearch,
        settings: OpenSearchSettings,
        dead_letter_path: str | os.PathLike[str],
        *,
        max_retries: int | EllipsisType | None = ...,
        stop: threading.Event | Callable[[], bool] | None = None,
        sleep: Callable[[float], None] | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._client = client
        self._settings = settings
        self._bulk = settings.bulk
        self.prefix: str = settings.index_prefix
        # ``...`` (the default) means "as configured"; None means "forever" (the daemon).
        self.max_retries: int | None = (
            self._bulk.max_retries if isinstance(max_retries, EllipsisType) else max_retries
        )
        self.dead_letters = DeadLetters(dead_letter_path)
        self._stop_event = stop if isinstance(stop, threading.Event) else None
        self._should_stop = _stop_predicate(stop)
        self._sleep = sleep
        self._rand = rand
        self._where = display_hosts(settings)

    # -- public

    def ship(self, docs: Iterable[dict[str, Any]]) -> ShipResult:
        """Ship documents; return when each is acknowledged or dead-lettered."""
        result = ShipResult()
        builder = BatchBuilder(self.prefix, self._bulk.max_docs, self._bulk.max_bytes)
        for doc in docs:
            full = builder.add(doc)
            if full is not None:
                result.add(self.ship_batch(full))
        last = builder.flush()
        if last is not None:
            result.add(self.ship_batch(last))
        return result

    def ship_items(self, items: Iterable[BulkItem]) -> ShipResult:
        result = ShipResult()
        for batch in batches(items, self._bulk.max_docs, self._bulk.max_bytes):
            result.add(self.ship_batch(batch))
        return result

    def ship_batch(self, batch: Sequence[BulkItem]) -> ShipResult:
        """Ship one bulk request's worth of items (already within the size bounds)."""
        started = time.monotonic()
        result = ShipResult()
        self._ship_batch(batch, result)
        result.bulk_seconds = time.monotonic() - started
        return result

    def _ship_batch(self, batch: Sequence[BulkItem], result: ShipResult) -> None:
        pending: Sequence[BulkItem] = batch if isinstance(batch, BulkBatch) else list(batch)
        retry = 0
        while pending:
            outcome = self._send(pending, result)
            if isinstance(outcome, list):
                pending = outcome
                reason = "some documents were refused with 429/5xx or a cluster block"
            else:
                reason = outcome
            if not pending:
                break
            if self.max_retries is not None and retry >= self.max_retries:
                raise ConnectionFailed(
                    f"OpenSearch at {self._where} did not accept {len(pending)} documents "
                    f"after {retry} retries: {reason}"
                )
            delay = backoff_delay(retry, self._bulk.initial_backoff, self._bulk.max_backoff, self._rand)
            log.warning(
                "bulk: %d documents not accepted (%s); retry %d in %.1fs", len(pending), reason, retry + 1, delay
            )
            self._wait(delay, len(pending))
            retry += 1
            result.retried += len(pending)

    # -- internals

    def _send(self, pending: Sequence[BulkItem], result: ShipResult) -> list[BulkItem] | str:
        """One ``_bulk`` call. Returns the items to retry, or a reason string when the whole
        request must be retried. Dead-letters refused items; raises on non-retryable failures."""
        if isinstance(pending, BulkBatch):
            body = pending.body
        else:
            body = b"".join([part for item in pending for part in (item.action, item.source)])
        result.requests += 1
        result.bytes_sent += len(body)
        try:
            response = self._client.bulk(body=body, filter_path=BULK_FILTER_PATH)
        except opensearchpy.ConnectionError as exc:
            error = describe_exception(exc, self._where)
            if _tls_verify_reason(exc) is not None:
                raise error from None  # a certificate does not fix itself by waiting
            return str(error.message)
        except opensearchpy.TransportError as exc:
            status = exc.status_code
            refusal = exc.info.get("error") if isinstance(exc.info, dict) else None
            if isinstance(status, int) and retryable(status, refusal):
                return f"{status} {_error_reason(exc)}"
            raise describe_exception(exc, self._where, "bulk") from None
        if not response.get("errors"):
            result.acknowledged += len(pending)
            return []
        items = response.get("items", [])
        if len(items) != len(pending):
            raise RequestRefused(
                f"OpenSearch at {self._where} answered a bulk request of {len(pending)} documents "
                f"with {len(items)} results"
            )
        retry: list[BulkItem] = []
        refused: list[tuple[BulkItem, int, Any]] = []
        for item, answer in zip(pending, items):
            (detail,) = answer.values()
            status = int(detail.get("status", 0))
            if 200 <= status < 300:
                result.acknowledged += 1
            elif retryable(status, detail.get("error")):
                retry.append(item)
            else:
                refused.append((item, status, detail.get("error")))
        if refused:
            self.dead_letters.write(refused)
            result.dead_lettered += len(refused)
            result.dead_letter_ids.extend(item.id for item, _, _ in refused)
            first = refused[0][2]
            log.warning(
                "bulk: %d documents refused, written to %s (first: %s)",
                len(refused),
                self.dead_letters.path,
                _short_error(first),
            )
        return retry

    def _wait(self, delay: float, pending: int) -> None:
        if self._should_stop():
            raise self._stopped(pending)
        if self._sleep is not None:
            self._sleep(delay)
        elif self._stop_event is not None:
            self._stop_event.wait(delay)
        else:
            deadline = time.monotonic() + delay
            while (left := deadline - time.monotonic()) > 0 and not self._should_stop():
                time.sleep(min(left, 0.2))
        if self._should_stop():
            raise self._stopped(pending)

    def _stopped(self, pending: int) -> ShippingStopped:
        return ShippingStopped(f"stopped while {pending} documents were waiting for OpenSearch at {self._where}")


def _short_error(error: Any) -> str:
    if isinstance(error, dict):
        text = f"{error.get('type', '?')}: {error.get('reason', '')}"
        caused = error.get("caused_by")
        if isinstance(caused, dict):
            text += f" ({caused.get('type', '?')}: {caused.get('reason', '')})"
        return text[:300]
    return str(error)[:300]


class PipelinedShipper:
    """Parse while a bulk request is in flight: the caller ``submit``s documents, full
    batches go through a bounded queue to one sender thread. Two batches in the queue are
    enough to hide a request's latency without buffering the whole input."""

    _DONE = object()

    def __init__(self, shipper: BulkShipper, *, depth: int = 2, on_shipped: Callable[[ShipResult], None] | None = None):
        self._shipper = shipper
        self._bulk = shipper._bulk
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._builder = BatchBuilder(shipper.prefix, self._bulk.max_docs, self._bulk.max_bytes)
        self.result = ShipResult()
        self._error: BaseException | None = None
        self._on_shipped = on_shipped
        self._thread = threading.Thread(target=self._run, name="bulk-sender", daemon=True)
        self._thread.start()

    def submit(self, doc: dict[str, Any]) -> None:
        full = self._builder.add(doc)
        if full is not None:
            self._put(full)

    def close(self) -> ShipResult:
        """Ship what is left and wait for the sender; re-raise its failure, if any."""
        last = self._builder.flush()
        if last is not None:
            self._put(last)
        self._put(self._DONE)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.result

    def _put(self, batch: Any) -> None:
        while True:
            if self._error is not None:
                raise self._error
            try:
                self._queue.put(batch, timeout=0.2)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        clock = time.monotonic
        while True:
            waiting = clock()
            batch = self._queue.get()
            self.result.parser_wait_seconds += clock() - waiting
            if batch is self._DONE:
                return
            if self._error is not None:
                continue  # drain so that the producer never blocks
            try:
                shipped = self._shipper.ship_batch(batch)
            except BaseException as exc:  # noqa: BLE001 - handed to the producer thread, re-raised there
                self._error = exc
                continue
            self.result.add(shipped)
            if self._on_shipped is not None:
                self._on_shipped(shipped)
