"""The classifier's shortcut (the rules a reply's code, enhanced status and stage admit,
remembered per triple) decides and counts exactly as its straightforward definition: a walk
over every rule."""

from __future__ import annotations

import collections
import re
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from shipper import reasons
from shipper.model import Stage
from shipper.reasons import Classifier, Rule

# The definition: the regex as first written, and the decision as a plain walk over the rules.
REPEATED_CODES = re.compile(r"(?<!\S)(?:\d{3}[ -])?[245]\.\d{1,3}\.\d{1,3}(?!\S)")
CASES = yaml.safe_load(Path(__file__).with_name("reason_cases.yml").read_text(encoding="utf-8"))["cases"]


def normalized(text: str) -> str:
    return " ".join(REPEATED_CODES.sub(" ", text).split())


def status_of(enhanced: str | None, code: str, text: str) -> tuple[int, int, int] | None:
    candidate = enhanced.strip() if enhanced else None
    if candidate is None:
        qmail = re.search(r"\(#([245]\.\d{1,3}\.\d{1,3})\)", text)
        candidate = qmail.group(1) if qmail else None
    if candidate is None:
        return None
    match = re.match(r"^([245])\.(\d{1,3})\.(\d{1,3})$", candidate)
    if match is None or (code and match.group(1) != code[:1]):
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


class Reference:
    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules
        self.unmatched: collections.Counter[tuple[str, str]] = collections.Counter()

    def explain(self, code: Any, enhanced: str | None, text: str | None, stage: Any) -> tuple[str, Rule | None]:
        if code is None:  # no reply: the server's own status and explanation, if any
            if not enhanced and not text:
                return "connection", None
            code = ""
        code = str(code).strip()
        stage = getattr(stage, "value", stage)
        lowered = normalized(text or "").lower()
        status = status_of(enhanced, code, text or "")
        for rule in self.rules:
            if rule.matches(code, status, lowered, stage):
                return rule.reason, rule
        grouped = reasons._DIGIT_TOKEN.sub("#", reasons._ADDRESS.sub("<addr>", normalized(text or "")))
        self.unmatched[(code, grouped[: reasons.UNMATCHED_TEXT_LENGTH])] += 1
        return "other", None


ENHANCED = ["5.1.1", "4.7.1", "2.0.0", "5.7.26", "5.1", "55.1.1", "5.1.1 ", " 5.1.1", "4.7.1-",
            "x", "\u0665.1.1", "5.1.1\n"]


# -- whole decisions ---------------------------------------------------------------------------

TEXTS = [case["text"] or "" for case in CASES] + [
    "4.7.1 <a1@example.com>: Recipient address rejected: Greylisted, see http://postgrey.example",
    "5.1.1 <b2@example.org>: Recipient address rejected: User unknown in virtual mailbox table",
    "5.1.1 5.1.1 double 550-5.1.1 550 5.1.1 codes", "mailbox unavailable (#5.1.1)", "", "  ",
    "4.2.2 over quota 4.2.2", "5.7.1 Service unavailable; client host [192.0.2.1] blocked using zen.spamhaus.org",
    "nothing we know of 12345 (queue id A1B2C3)", "4.7.1\tGREYLISTED", "5.7.1",
]


@settings(max_examples=600, deadline=None)
@given(st.lists(st.tuples(
    st.sampled_from([None, "250", "421", "450", "451", "452", "550", "552", "553", "554", " 550", 550]),
    st.sampled_from([None, "", *ENHANCED, "5.2.2", "4.2.2", "5.7.1", "5.1.10"]),
    st.sampled_from([None, *TEXTS]),
    st.sampled_from([None, *Stage, "rcpt", "connect", "dot"]),
    st.booleans()), min_size=1, max_size=30))
def test_decisions_and_counts_are_the_original(calls: list[tuple[Any, ...]]) -> None:
    """Any sequence of replies, repeated or not, enhanced code leading the text or not: the
    same reason, the same deciding rule and the same count of unmatched replies."""
    classifier = Classifier.from_files(())
    reference = Reference(classifier.rules)
    for code, enhanced, text, stage, lead in calls:
        if lead and enhanced and text is not None:
            text = f"{enhanced} {text}"
        assert reference.explain(code, enhanced, text, stage) == classifier.explain(code, enhanced, text, stage)
        assert classifier.classify(code, enhanced, text, stage) == reference.explain(code, enhanced, text, stage)[0]
    assert reference.unmatched == classifier.unmatched


def test_real_replies_decided_twice_alike() -> None:
    """The table of real replies: first decision (cache empty) and second (from the caches)
    are the original's."""
    classifier = Classifier.from_files(())
    reference = Reference(classifier.rules)
    for _ in range(2):
        for case in CASES:
            args = (case["code"], case["enhanced"], case["text"], case["stage"])
            assert reference.explain(*args) == classifier.explain(*args), case
