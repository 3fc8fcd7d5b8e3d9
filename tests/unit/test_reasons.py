"""The reason classifier (issue 7): real replies, precedence, user rules, bad rule files."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import pytest
import yaml

from shipper import reasons
from shipper.errors import ConfigError
from shipper.reasons import REASONS, Classifier, classify

CASES_FILE = Path(__file__).with_name("reason_cases.yml")
CASES = yaml.safe_load(CASES_FILE.read_text(encoding="utf-8"))["cases"]


def _case_id(case: dict) -> str:
    words = re.sub(r"[^\w]+", "-", str(case["text"] or "no-reply"))[:40]
    return f"{case['provider']}-{case['code']}-{words}"


# --- the table of real replies ------------------------------------------------------


def test_table_is_large_and_sourced():
    """At least 60 real replies, each with a source, provider and a known reason."""
    assert len(CASES) >= 60
    for case in CASES:
        assert case.get("source"), case
        assert case.get("provider"), case
        assert case["expected"] in REASONS, case
        assert set(case) <= {
            "provider",
            "source",
            "code",
            "enhanced",
            "text",
            "stage",
            "expected",
        }


def test_table_covers_many_reasons():
    """The table exercises nearly every category, not just the easy ones."""
    covered = {case["expected"] for case in CASES}
    assert set(REASONS) - covered == {"other"}


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_real_replies(case):
    """Each real reply line gets the reason a mail administrator would give it."""
    classifier = Classifier.from_files()
    expected = case["expected"]
    actual, rule = classifier.explain(
        case["code"], case["enhanced"], case["text"], case["stage"]
    )
    assert expected == actual, f"decided by {rule.origin if rule else None}"
    assert classifier.unmatched_total == 0


# --- the vocabulary -----------------------------------------------------------------


def test_vocabulary_is_small_closed_and_described():
    """REASONS is a chartable closed list with a one-line meaning each, `other` last."""
    assert 15 <= len(REASONS) <= 19
    assert REASONS[-1] == "other"
    assert len(set(REASONS)) == len(REASONS)
    for reason in REASONS:
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", reason)
        meaning = reasons.MEANINGS[reason]
        assert meaning and "\n" not in meaning


def test_docs_table_lists_every_reason():
    """docs/reasons.md documents every reason of the vocabulary."""
    doc = (Path(__file__).parents[2] / "docs" / "reasons.md").read_text(
        encoding="utf-8"
    )
    for reason in REASONS:
        assert f"| `{reason}` |" in doc, reason


def test_builtin_rules_are_documented():
    """Every built-in rule has a name and a source; every enhanced-only rule says `final`."""
    raw = yaml.safe_load(
        (Path(reasons.__file__).parent / "data" / "reasons.yml").read_text(
            encoding="utf-8"
        )
    )
    names = [rule["name"] for rule in raw["rules"]]
    assert len(names) == len(set(names))
    for rule in raw["rules"]:
        assert rule.get("source"), rule["name"]
        if "enhanced" in rule and "text" not in rule:
            assert "final" in rule, rule["name"]


# --- precedence ---------------------------------------------------------------------


IANA_CODES = [
    # (code, enhanced, expected) with a text no rule knows: the code alone decides.
    ("550", "5.1.1", "unknown-recipient"),
    ("550", "5.1.2", "dns-or-routing"),
    ("553", "5.1.3", "unknown-recipient"),
    ("550", "5.1.6", "unknown-recipient"),
    ("553", "5.1.7", "protocol-error"),
    ("450", "4.1.8", "sender-authentication"),
    ("550", "5.1.10", "dns-or-routing"),
    ("550", "5.2.1", "mailbox-disabled"),
    ("552", "5.2.2", "mailbox-full"),
    ("552", "5.2.3", "message-too-large"),
    ("452", "4.3.1", "server-error"),
    ("554", "5.3.4", "message-too-large"),
    ("451", "4.4.1", "dns-or-routing"),
    ("421", "4.4.2", "connection"),
    ("554", "5.4.6", "dns-or-routing"),
    ("501", "5.5.2", "protocol-error"),
    ("452", "4.5.3", "rate-limited"),
    ("554", "5.6.1", "protocol-error"),
    ("554", "5.6.211", "protocol-error"),
    ("550", "5.7.1", "policy"),
    ("535", "5.7.8", "authentication-required"),
    ("530", "5.7.11", "tls-required"),
    ("525", "5.7.13", "mailbox-disabled"),
    ("550", "5.7.17", "unknown-recipient"),
    ("550", "5.7.23", "sender-authentication"),
    ("421", "4.7.28", "rate-limited"),
    ("550", "5.7.30", "tls-required"),
]


@pytest.mark.parametrize(("code", "enhanced", "expected"), IANA_CODES)
def test_enhanced_codes_alone(code, enhanced, expected):
    """The IANA-registered codes map to a reason without any help from the text."""
    assert expected == classify(code, enhanced, f"{enhanced} zzz")


def test_specific_enhanced_code_beats_text():
    """5.1.1 means a bad mailbox whatever the words (here: 'mailbox full')."""
    assert "unknown-recipient" == classify(
        "550", "5.1.1", "Mailbox full, user unknown to us"
    )
    assert "mailbox-full" == classify(
        "552", "5.2.2", "Recipient address rejected: User unknown"
    )


def test_text_refines_vague_enhanced_code():
    """5.7.1 is only a default: spam, blocklist and relay texts refine it."""
    assert "policy" == classify(
        "550", "5.7.1", "Delivery not authorized, message refused"
    )
    assert "spam-content" == classify("550", "5.7.1", "Message rejected as spam")
    assert "blocklisted" == classify(
        "554", "5.7.1", "Client host blocked using b.barracudacentral.org"
    )
    assert "relay-denied" == classify("554", "5.7.1", "Relay access denied")


def test_vague_enhanced_code_beats_basic_code():
    """With no telling text, a vague enhanced code still beats the basic code."""
    assert "mailbox-disabled" == classify("550", "5.2.1", "<someone@example.org>")
    assert "server-error" == classify("421", "4.3.0", "mx.example.org")
    assert "dns-or-routing" == classify("550", "5.4.0", "x")


def test_basic_code_is_the_last_resort():
    """No enhanced code and no known words: the basic code decides, per stage if need be."""
    assert "protocol-error" == classify("501", None, "what?")
    assert "tls-required" == classify("454", None, "not now", "starttls")
    assert "authentication-required" == classify("454", None, "not now", "auth")
    assert "policy" == classify("554", None, "go away", "connect")
    assert "other" == classify("554", None, "go away", "rcpt")


def test_enhanced_class_must_match_code():
    """An enhanced code whose class disagrees with the reply code is ignored (RFC 3463 §2)."""
    assert "other" == classify("550", "4.1.1", "hmm")
    assert "unknown-recipient" == classify("550", "5.1.1", "hmm")


def test_qmail_trailing_enhanced_code():
    """qmail's '(#5.x.y)' at the end serves as the enhanced code when none leads."""
    assert "mailbox-full" == classify("552", None, "sorry, the box said no (#5.2.2)")
    # class 4 does not agree with 550: the trailing code is ignored
    assert "other" == classify("550", None, "sorry, the box said no (#4.2.2)")


def test_no_reply_is_connection():
    """code None: nothing was ever received (refused, dropped, timed out)."""
    assert "connection" == classify(None, None, None)
    assert "connection" == classify(None, None, None, "dot")


def test_stage_may_be_an_enum():
    """The document builder may pass the model's Stage enum instead of its string."""
    import enum

    class Stage(enum.Enum):
        STARTTLS = "starttls"

    assert "tls-required" == classify("454", None, "later", Stage.STARTTLS)


def test_repeated_line_codes_do_not_split_phrases():
    """Multi-line replies repeat '450-4.2.1' on each line; phrases still match across them."""
    text = (
        "4.2.1 The user you are trying to contact is receiving mail 450-4.2.1 at a rate that"
        " 450-4.2.1 prevents additional messages from being delivered."
    )
    assert "rate-limited" == classify("450", "4.2.1", text)


def test_short_tokens_do_not_match_inside_ids():
    """'spf' or 'ptr' inside a queue id is no SPF or PTR complaint."""
    assert "policy" == classify(
        "550", "5.7.1", "5.7.1 Message refused, ref q7spf.3 zptr-9"
    )
    assert "sender-authentication" == classify("550", "5.7.1", "5.7.1 SPF check failed")


# --- unmatched replies --------------------------------------------------------------


def test_unmatched_goes_to_other_and_is_counted():
    """A reply no rule knows is `other`, counted by code and grouped text."""
    classifier = Classifier.from_files()
    for ip in ("192.0.2.1", "192.0.2.2"):
        assert "other" == classifier.classify(
            "550", None, f"Computer says no to {ip} <a@example.org>"
        )
    assert "other" == classifier.classify("553", None, "Nope")
    assert 3 == classifier.unmatched_total
    assert 2 == classifier.unmatched[("550", "Computer says no to # <addr>")]
    assert 1 == classifier.unmatched[("553", "Nope")]


def test_unmatched_text_is_cut_short():
    """The counter key holds at most UNMATCHED_TEXT_LENGTH characters of text."""
    classifier = Classifier.from_files()
    classifier.classify("550", None, "blah " * 100)
    ((code, text),) = classifier.unmatched
    assert "550" == code
    assert reasons.UNMATCHED_TEXT_LENGTH == len(text)


def test_unmatched_counter_is_bounded():
    """A daemon seeing endless new texts keeps a bounded counter and an overflow count."""
    classifier = Classifier(reasons.builtin_rules(), max_unmatched_keys=3)
    for word in ("alpha", "beta", "gamma", "delta", "epsilon"):
        classifier.classify("550", None, word)
    classifier.classify("550", None, "alpha")
    assert 3 == len(classifier.unmatched)
    assert 2 == classifier.unmatched_overflow
    assert 6 == classifier.unmatched_total


def test_log_unmatched(caplog):
    """log_unmatched names the most frequent unmatched replies first."""
    classifier = Classifier.from_files()
    for _ in range(3):
        classifier.classify("550", None, "Frequent oddity")
    classifier.classify("550", None, "Rare oddity")
    with caplog.at_level(logging.INFO, logger="shipper.reasons"):
        classifier.log_unmatched(limit=1)
    messages = [record.getMessage() for record in caplog.records]
    assert "x3: 550 Frequent oddity" in messages[0]
    assert "1 more distinct" in messages[1]


def test_matched_replies_are_not_counted():
    """Only replies that fall to `other` are counted."""
    classifier = Classifier.from_files()
    classifier.classify("550", "5.1.1", "User unknown")
    classifier.classify(None, None, None)
    assert 0 == classifier.unmatched_total


# --- user rule files ----------------------------------------------------------------


def _write(tmp_path: Path, text: str, name: str = "rules.yml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_user_rule_overrides_builtin(tmp_path):
    """A user rule comes before the built-in one of its tier and wins."""
    path = _write(
        tmp_path,
        """
version: 1
rules:
  - name: our-partner-uses-5.1.1-for-suspended-accounts
    enhanced: 5.1.1
    final: true
    text: 'account suspended'
    reason: mailbox-disabled
    source: ticket 1234
  - name: appliance-quarantine
    text: 'quarantined by policy engine'
    reason: spam-content
""",
    )
    classifier = Classifier.from_files([path])
    assert "mailbox-disabled" == classifier.classify(
        "550", "5.1.1", "5.1.1 account suspended"
    )
    # the built-in text rule would say policy ("policy"); the user's says spam-content
    assert "spam-content" == classifier.classify(
        "550", "5.7.1", "quarantined by policy engine"
    )
    # everything else still goes by the built-in rules
    assert "unknown-recipient" == classifier.classify(
        "550", "5.1.1", "5.1.1 user unknown"
    )
    # and the default classifier is unaffected
    assert "unknown-recipient" == classify("550", "5.1.1", "5.1.1 account suspended")


def test_user_rule_can_add_a_phrase(tmp_path):
    """A reply that was `other` gets a category once a user rule names it."""
    assert "other" == classify("550", None, "Computer says no")
    path = _write(
        tmp_path, "rules:\n  - {text: 'computer says no', code: 5xx, reason: policy}\n"
    )
    assert "policy" == Classifier.from_files([str(path)]).classify(
        "550", None, "Computer says no"
    )


def test_user_files_in_order(tmp_path):
    """Several user files: the first listed wins."""
    first = _write(tmp_path, "rules:\n  - {text: 'odd', reason: policy}\n", "first.yml")
    second = _write(
        tmp_path, "rules:\n  - {text: 'odd', reason: spam-content}\n", "second.yml"
    )
    assert "policy" == Classifier.from_files([first, second]).classify(
        "550", None, "odd"
    )
    assert "spam-content" == Classifier.from_files([second, first]).classify(
        "550", None, "odd"
    )


def test_empty_user_rule_list_is_fine(tmp_path):
    """A user file with an empty rule list changes nothing."""
    path = _write(tmp_path, "version: 1\nrules: []\n")
    assert len(reasons.builtin_rules()) == len(Classifier.from_files([path]).rules)


BAD_FILES = [
    pytest.param(
        "rules:\n  - {name: r1, text: 'ok', reason: policy}\n  - {name: broken, text: '(unclosed', reason: policy}\n",
        r"rules\[1\] \(broken\): text: bad regular expression '\(unclosed'",
        id="bad-regex",
    ),
    pytest.param(
        "rules:\n  - {name: r1, text: 'x', reason: spam}\n",
        r"rules\[0\] \(r1\): reason: unknown reason 'spam'",
        id="unknown-reason",
    ),
    pytest.param(
        "rules:\n  - {name: r1, txt: 'x', reason: policy}\n",
        r"rules\[0\] \(r1\): unknown key 'txt'",
        id="unknown-key",
    ),
    pytest.param(
        "rules:\n  - {text: 'x'}\n",
        r"rules\[0\]: reason: unknown reason None",
        id="missing-reason",
    ),
    pytest.param(
        "rules:\n  - {name: r1, reason: policy}\n",
        r"rules\[0\] \(r1\): a rule needs at least one of code, enhanced, text",
        id="no-condition",
    ),
    pytest.param(
        "rules:\n  - {name: r1, enhanced: '5.1', reason: policy}\n",
        r"rules\[0\] \(r1\): enhanced: expected an enhanced code like 5.1.1",
        id="bad-enhanced",
    ),
    pytest.param(
        "rules:\n  - {name: r1, code: 650, reason: policy}\n",
        r"rules\[0\] \(r1\): code: expected a reply code like 550 or 5xx, got 650",
        id="bad-code",
    ),
    pytest.param(
        "rules:\n  - {name: r1, code: 550, stage: rcpt-to, reason: policy}\n",
        r"rules\[0\] \(r1\): stage: unknown stage 'rcpt-to'",
        id="bad-stage",
    ),
    pytest.param(
        "rules:\n  - {name: r1, code: 550, final: 'yes', reason: policy}\n",
        r"rules\[0\] \(r1\): final: expected true or false",
        id="bad-final",
    ),
    pytest.param(
        "rule:\n  - {code: 550, reason: policy}\n",
        r"unknown key 'rule'",
        id="unknown-top-key",
    ),
    pytest.param(
        "- {code: 550, reason: policy}\n",
        r"expected a mapping with a 'rules' list",
        id="not-a-mapping",
    ),
    pytest.param(
        "rules: {code: 550}\n",
        r"rules: expected a list of rules",
        id="rules-not-a-list",
    ),
    pytest.param(
        "rules:\n  - [550, policy]\n",
        r"rules\[0\]: expected a mapping, got list",
        id="rule-not-a-mapping",
    ),
    pytest.param("rules: [\n", r"not valid YAML", id="yaml-syntax"),
    pytest.param(
        "version: 2\nrules: []\n", r"version: only version 1 is known", id="bad-version"
    ),
]


@pytest.mark.parametrize(("content", "message"), BAD_FILES)
def test_bad_user_rule_file(tmp_path, content, message):
    """A bad rule file is a ConfigError naming the file, the rule and what is wrong."""
    path = _write(tmp_path, content)
    with pytest.raises(ConfigError) as caught:
        Classifier.from_files([path])
    assert str(path) in str(caught.value)
    assert re.search(message, str(caught.value)), str(caught.value)


def test_missing_user_rule_file(tmp_path):
    """An unreadable rule file is a ConfigError naming it."""
    path = tmp_path / "absent.yml"
    with pytest.raises(
        ConfigError, match=re.escape(f"{path}: cannot read reason rules")
    ):
        Classifier.from_files([path])


# --- speed --------------------------------------------------------------------------


def test_classification_is_cheap():
    """Classifying is cheap: well under a millisecond per reply on this shared box."""
    classifier = Classifier.from_files()
    replies = [(c["code"], c["enhanced"], c["text"], c["stage"]) for c in CASES]
    rounds = 20
    started = time.perf_counter()
    for _ in range(rounds):
        for reply in replies:
            classifier.classify(*reply)
    per_reply = (time.perf_counter() - started) / (rounds * len(replies))
    assert per_reply < 0.001, f"{per_reply * 1e6:.0f} µs per reply"


def test_docs_example_rule_file_works(tmp_path):
    """The user rule file shown in docs/reasons.md loads and does what the doc says."""
    doc = (Path(__file__).parents[2] / "docs" / "reasons.md").read_text(
        encoding="utf-8"
    )
    blocks = re.findall(r"```yaml\n(.*?)```", doc, re.DOTALL)
    example = next(
        block for block in blocks if block.startswith("# /etc/smtp-shipper/")
    )
    classifier = Classifier.from_files([_write(tmp_path, example)])
    assert "other" == classify("550", None, "Message quarantined")
    assert "spam-content" == classifier.classify("550", None, "Message quarantined")
    assert "mailbox-disabled" == classifier.classify(
        "550", "5.1.1", "5.1.1 account is suspended"
    )
    assert "unknown-recipient" == classify("550", "5.1.1", "5.1.1 account is suspended")
