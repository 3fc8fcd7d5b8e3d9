"""Sessions → documents: fields, ids, index names (shipper.documents)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from shipper.batching import document_id, index_name
from shipper.pipeline import ParseOptions, ParseStats, documents_of_files

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
SEED = Path(__file__).resolve().parents[2] / "samples" / "xeams" / "SMTPOutboundConversation.log"


def docs_of(path: Path, **kw: Any) -> list[dict[str, Any]]:
    options = ParseOptions(tz=ZoneInfo("America/New_York"), host_name="h1", **kw)
    return list(documents_of_files([str(path)], options, ParseStats()))


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    return [value]


def _keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [k for k, v in value.items() for k in [k, *_keys(v)]]
    return []


def test_seed_document_by_hand() -> None:
    """The one real transcript: checked field by field against the log (see the report)."""
    (doc,) = docs_of(SEED)
    assert "2024-03-21T11:39:49.869-04:00" == doc["@timestamp"]  # the end-of-data 250, EDT
    assert 842_000_000 == doc["event"]["duration"]  # Xeams says "Connection Terminated ( 842)"
    assert {"code": "250", "enhanced": "2.0.0",
            "text": "2.0.0 OK  1716305989 e9e14a558f8ab-36cb9d1c563si112041335ab.14 - gsmtp"
            } == doc["smtp"]["reply"]
    assert SEED.read_text().rstrip("\n") == doc["smtp"]["transcript"]
    assert {"ip": "142.251.171.26"} == doc["destination"] and "source" not in doc
    assert "reason" not in doc["smtp"] and "incomplete" not in doc["smtp"]


def test_no_null_values_anywhere() -> None:
    """Absent values are omitted, never null (docs/CONTRACTS.md)."""
    for path in sorted(GOLDEN.glob("*.log")):
        for doc in docs_of(path):
            assert None not in _leaves(doc), path.name


def test_reason_only_when_not_delivered_and_classifier_is_used() -> None:
    """A passed classifier decides smtp.reason; delivered documents carry none."""
    class Always:
        def __init__(self) -> None:
            self.calls: list[tuple[Any, ...]] = []

        def classify(self, *args: Any) -> str:
            self.calls.append(args)
            return "blocklisted"

    clf = Always()
    docs = docs_of(GOLDEN / "mixed-recipients-one-transaction.log", classifier=clf)
    reasons = {d["email"]["to"]["address"]: d["smtp"].get("reason") for d in docs}
    assert {"anna.berg@contoso.com": None, "former.employee@contoso.com": "blocklisted",
            "full.box@contoso.com": "blocklisted", "it-desk@contoso.com": None} == reasons
    assert ("550", "5.1.10") == clf.calls[0][:2]


def test_document_ids_are_deterministic_and_distinct() -> None:
    """Same input → same ids; every recipient and transaction gets its own id."""
    first = [document_id(d) for d in docs_of(GOLDEN / "rset-and-two-transactions.log")]
    again = [document_id(d) for d in docs_of(GOLDEN / "rset-and-two-transactions.log")]
    assert first == again
    assert 3 == len(set(first))
    other_host = docs_of(GOLDEN / "rset-and-two-transactions.log")[0]
    other_host["host"]["name"] = "h2"
    assert document_id(other_host) not in first


def test_index_name_from_timestamp_in_utc() -> None:
    """A 21:30 EDT document belongs to the next UTC day's index."""
    assert "smtp-2024.03.21" == index_name("smtp", {"@timestamp": "2024-03-20T21:30:00.000-04:00"})
    assert "smtp-2024.03.20" == index_name("smtp", {"@timestamp": "2024-03-20T19:59:59.999-04:00"})


def test_documents_are_json_serialisable_and_nested() -> None:
    """Nested objects only: no dotted keys."""
    for path in sorted(GOLDEN.glob("*.log")):
        for doc in docs_of(path):
            json.dumps(doc)
            assert [] == [k for k in _keys(doc) if "." in k and k != "@timestamp"], path.name
