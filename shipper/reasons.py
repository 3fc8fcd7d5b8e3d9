"""Reason category of a reply that did not deliver (issue 7).

A rejection or deferral is put into one of a small, closed set of categories
(``REASONS``) so that Dashboards can chart and alert on them.  The rules live in
YAML (``shipper/data/reasons.yml`` plus the user's ``reasons.rules_files``); this
module only loads, validates and applies them.

Precedence (docs/reasons.md explains it for users).  Every rule falls into one
tier; tiers are tried in this order, and inside a tier user rules come before
built-in ones, each file in its own order; the first rule that matches decides:

1. ``final: true`` rules -- specific enhanced codes (5.1.1, 5.2.2, 5.3.4,
   5.7.26 ...) whose meaning no wording can change, and any rule a user marks
   final.
2. text rules -- phrasings of the servers that send vague codes (Gmail,
   Outlook.com, Yahoo, Postfix, Exim, blocklist names ...).
3. non-final enhanced-code rules -- what a vague code (5.7.1, 4.7.1, 5.2.1 ...)
   means when no text rule refined it.
4. basic-code rules -- RFC 5321 reply codes, sometimes per SMTP stage.

Nothing matched: ``other``, and the reply is counted in ``Classifier.unmatched``
so that users (and we) see which rules to add.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import functools
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from shipper.errors import ConfigError

log = logging.getLogger(__name__)

# The closed vocabulary, in display order, with a one-line meaning each.
# Sources: RFC 3463 classes, Sisimai's reasons (https://libsisimai.org/en/reason/),
# KumoMTA's bounce classes (https://docs.kumomta.com/userguide/configuration/bounce/),
# SES/SendGrid/Postmark bounce types; merged until it fits one chart legend.
MEANINGS: Mapping[str, str] = {
    "unknown-recipient": "the recipient address does not exist (or no longer exists) there",
    "mailbox-full": "the recipient's mailbox is over its storage quota",
    "mailbox-disabled": "the recipient's mailbox exists but is disabled, suspended or inactive",
    "message-too-large": "the message exceeds the receiver's size limit",
    "spam-content": "the message was judged spam, phishing or malware by a content filter",
    "blocklisted": "the sending IP or domain is refused for its reputation: a public "
    "block list (Spamhaus, Barracuda, SpamCop, SORBS ...) or the receiver's own",
    "sender-authentication": "the receiver could not verify the sender: SPF, DKIM, DMARC, "
    "reverse DNS or the sender domain failed its checks",
    "policy": "refused by a local policy of the receiver (restrictions, anti-spoofing, "
    "content rules) with no more specific reason",
    "relay-denied": "the server does not accept mail for that domain from us (not its "
    "domain, and we may not relay through it)",
    "authentication-required": "the server wants SMTP AUTH, or refused our credentials",
    "tls-required": "the receiver requires TLS (or a stronger TLS) that was not used, or "
    "STARTTLS was refused",
    "greylisted": "temporarily refused because the sender is not known yet; a retry will pass",
    "rate-limited": "the receiver throttles us: too many connections, messages or "
    "recipients, or volume/complaint limits",
    "dns-or-routing": "the recipient domain cannot be routed: no or null MX, unknown host, "
    "mail loop",
    "server-error": "the receiving server had a problem of its own (busy, out of "
    "resources, misconfigured, temporary failure)",
    "connection": "no reply was received: refused, dropped or timed out",
    "expired": "the message stayed undeliverable in the mail server's queue until its "
    "lifetime ran out (Postfix maximal_queue_lifetime); the attempts before say why",
    "protocol-error": "the receiver found our SMTP commands or the message's format "
    "malformed (syntax, sequence, headers, encoding)",
    "other": "no rule matched the reply (counted, see Classifier.unmatched)",
}
REASONS: tuple[str, ...] = tuple(MEANINGS)

# SMTP steps, as in PRODUCT.md's smtp.stage.
STAGES: frozenset[str] = frozenset(
    {"connect", "helo", "starttls", "auth", "mail", "rcpt", "data", "dot"}
)

BUILTIN_RULES = "reasons.yml"  # in the shipper/data package folder

_RULE_KEYS = frozenset(
    {"name", "reason", "code", "enhanced", "text", "stage", "final", "source", "note"}
)
_FILE_KEYS = frozenset({"version", "rules"})
_TIER_FINAL, _TIER_TEXT, _TIER_ENHANCED, _TIER_CODE = range(4)

_CODE_PATTERN = re.compile(r"^[2-5][0-9x]{2}$")
_ENHANCED_PATTERN = re.compile(
    r"^([245x])\.(\d{1,3})\.(?:(\d{1,3})(?:-(\d{1,3}))?|(\*))$"
)
_ENHANCED_VALUE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")
# qmail puts the enhanced code last, e.g. "no mailbox here by that name. (#5.1.1)".
_QMAIL_ENHANCED = re.compile(r"\(#([245]\.\d{1,3}\.\d{1,3})\)")
# Multi-line replies repeat the code on every line ("550-5.1.1 ... 550-5.1.1 ..."),
# which would split the phrases rules look for; they are removed before matching.
_REPEATED_CODES = re.compile(r"(?<!\S)(?:\d{3}[ -])?[245]\.\d{1,3}\.\d{1,3}(?!\S)")
# For grouping unmatched replies: addresses and tokens with digits (IPs, queue ids).
_ADDRESS = re.compile(r"<?[\w.+=-]+@[\w.-]+>?")
_DIGIT_TOKEN = re.compile(r"[^\s]*\d[^\s]*")
UNMATCHED_TEXT_LENGTH = 80
UNMATCHED_MAX_KEYS = 1000
CANDIDATES_KEPT = 1024  # (code, enhanced status, stage) triples whose rules are remembered


@dataclasses.dataclass(frozen=True)
class _EnhancedMatcher:
    klass: int | None  # None: any class (written "x")
    subject: int
    low: int | None  # None with high None: any detail ("*")
    high: int | None

    def matches(self, value: tuple[int, int, int]) -> bool:
        klass, subject, detail = value
        if self.klass is not None and klass != self.klass:
            return False
        if subject != self.subject:
            return False
        if self.low is None or self.high is None:
            return True
        return self.low <= detail <= self.high


@dataclasses.dataclass(frozen=True)
class Rule:
    """One validated rule; ``origin`` says where it came from (file and index)."""

    name: str
    reason: str
    origin: str
    final: bool = False
    codes: frozenset[str] | None = None
    enhanced: tuple[_EnhancedMatcher, ...] | None = None
    text: tuple[re.Pattern[str], ...] | None = None
    stages: frozenset[str] | None = None
    source: str | None = None

    @property
    def tier(self) -> int:
        if self.final:
            return _TIER_FINAL
        if self.text is not None:
            return _TIER_TEXT
        if self.enhanced is not None:
            return _TIER_ENHANCED
        return _TIER_CODE

    def matches(
        self,
        code: str | None,
        enhanced: tuple[int, int, int] | None,
        text: str,
        stage: str | None,
        *,
        check_text: bool = True,
    ) -> bool:
        """Whether the rule decides this reply; ``check_text=False``: all but its text patterns."""
        if self.codes is not None and code not in self.codes:
            return False
        if self.stages is not None and stage not in self.stages:
            return False
        if self.enhanced is not None and (
            enhanced is None or not any(m.matches(enhanced) for m in self.enhanced)
        ):
            return False
        return self.text is None or not check_text or any(p.search(text) for p in self.text)


class Classifier:
    """Applies rules in tier order; counts replies that fall to ``other``."""

    def __init__(
        self, rules: Iterable[Rule], *, max_unmatched_keys: int = UNMATCHED_MAX_KEYS
    ) -> None:
        rules = list(rules)
        # A stable sort keeps file order (user files first) inside each tier.
        self.rules: tuple[Rule, ...] = tuple(sorted(rules, key=lambda r: r.tier))
        self.unmatched: collections.Counter[tuple[str, str]] = collections.Counter()
        self.unmatched_overflow = 0
        self._max_unmatched_keys = max_unmatched_keys
        # The rules whose code, enhanced-code and stage conditions a reply meets, per (code,
        # enhanced status, stage): replies repeat those few triples all day, and only the text
        # patterns of these rules are left to try; decisions that need the text are remembered
        # per text (the same greylisting or block-list text all day) (bench/docs_bench.py).
        self._decide = functools.lru_cache(maxsize=CANDIDATES_KEPT)(self._decision)
        self._candidates = functools.lru_cache(maxsize=CANDIDATES_KEPT)(self._candidates_for)

    @classmethod
    def from_files(cls, user_files: Sequence[Path | str] = ()) -> Classifier:
        """User rule files in front of the built-in ones (a user rule wins its tier)."""
        rules: list[Rule] = []
        for path in user_files:
            rules.extend(load_rules(Path(path)))
        rules.extend(builtin_rules())
        return cls(rules)

    def classify(
        self,
        code: str | int | None,
        enhanced: str | None,
        text: str | None,
        stage: Any = None,
    ) -> str:
        """The reason category of one non-delivered reply (``code is None``: no reply)."""
        return self.explain(code, enhanced, text, stage)[0]

    def explain(
        self,
        code: str | int | None,
        enhanced: str | None,
        text: str | None,
        stage: Any = None,
    ) -> tuple[str, Rule | None]:
        """Like ``classify``, and also the rule that decided (None: none did).

        ``code is None``: no reply came; then ``enhanced`` and ``text`` may still carry the
        mail server's own status and explanation (Postfix: ``dsn=4.4.1``, "connect to ...:
        Connection refused"), which the rules without a ``code`` condition classify; with
        neither, it is ``connection``."""
        if code is None:
            if not enhanced and not text:
                return "connection", None
            code = ""
        code = str(code).strip()
        if isinstance(stage, enum.Enum):  # a model Stage: its value (``.value`` is a slow property)
            stage = stage._value_
        text = text or ""
        status = _parse_enhanced(enhanced, code, text)
        candidates = self._candidates(code, status, stage)
        if candidates and candidates[0].text is None:
            # It decides whatever the text says: most refusals (5.1.1 names the recipient in
            # its text, so no two texts are alike and a decision remembered per text would miss).
            return candidates[0].reason, candidates[0]
        reason, rule, normalized = self._decide(code, status, stage, text)
        if rule is None:
            self._count_unmatched(code, normalized)  # every time, remembered or not
        return reason, rule

    def _decision(self, code: str, status: tuple[int, int, int] | None, stage: str | None,
                  text: str) -> tuple[str, Rule | None, str]:
        """(reason, deciding rule or None, the normalized text) of a reply its text decides."""
        normalized = " ".join(_REPEATED_CODES.sub(" ", text).split())
        lowered = normalized.lower()
        for rule in self._candidates(code, status, stage):
            if rule.text is None:
                return rule.reason, rule, normalized
            for pattern in rule.text:
                if pattern.search(lowered):
                    return rule.reason, rule, normalized
        return "other", None, normalized

    def _candidates_for(self, code: str, status: tuple[int, int, int] | None,
                        stage: str | None) -> tuple[Rule, ...]:
        return tuple(rule for rule in self.rules
                     if rule.matches(code, status, "", stage, check_text=False))

    @property
    def unmatched_total(self) -> int:
        return sum(self.unmatched.values()) + self.unmatched_overflow

    def log_unmatched(
        self, logger: logging.Logger | None = None, limit: int = 20
    ) -> None:
        """Log the most frequent replies that fell to ``other`` (what rules to add)."""
        logger = logger or log
        for (code, text), count in self.unmatched.most_common(limit):
            logger.info("reason 'other' x%d: %s %s", count, code, text)
        hidden = len(self.unmatched) - limit
        if hidden > 0:
            logger.info("reason 'other': %d more distinct replies not shown", hidden)
        if self.unmatched_overflow:
            logger.info(
                "reason 'other': %d replies not kept (more than %d distinct)",
                self.unmatched_overflow,
                self._max_unmatched_keys,
            )

    def _count_unmatched(self, code: str, normalized_text: str) -> None:
        grouped = _DIGIT_TOKEN.sub("#", _ADDRESS.sub("<addr>", normalized_text))
        key = (code, grouped[:UNMATCHED_TEXT_LENGTH])
        if key in self.unmatched or len(self.unmatched) < self._max_unmatched_keys:
            self.unmatched[key] += 1
        else:
            self.unmatched_overflow += 1


def _parse_enhanced(enhanced: str | None, code: str, text: str) -> tuple[int, int, int] | None:
    """The RFC 3463 status of a reply: its enhanced code, or qmail's "(#5.1.1)" in the text."""
    if enhanced:
        return _status(enhanced.strip(), code)
    qmail = _QMAIL_ENHANCED.search(text)
    return _status(qmail.group(1), code) if qmail else None


@functools.lru_cache(maxsize=256)  # the same few enhanced codes all day (bench/docs_bench.py)
def _status(candidate: str, code: str) -> tuple[int, int, int] | None:
    match = _ENHANCED_VALUE.match(candidate)
    # RFC 3463 §2: the class must agree with the reply code's first digit.
    if match is None or (code and match.group(1) != code[:1]):
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


# --- loading and validation --------------------------------------------------------


def builtin_rules() -> list[Rule]:
    return list(_builtin_rules())


@functools.cache
def _builtin_rules() -> tuple[Rule, ...]:
    resource = resources.files("shipper").joinpath("data", BUILTIN_RULES)
    return tuple(
        parse_rules(
            resource.read_text(encoding="utf-8"), f"shipper/data/{BUILTIN_RULES}"
        )
    )


def load_rules(path: Path) -> list[Rule]:
    """Read and validate one rule file; every problem is a ConfigError naming it."""
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read reason rules: {exc}") from exc
    return parse_rules(content, str(path))


def parse_rules(content: str, where: str) -> list[Rule]:
    try:
        data = yaml.safe_load(content)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}: expected a mapping with a 'rules' list", hint=_EXAMPLE_HINT
        )
    unknown = sorted(set(map(str, data)) - _FILE_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r} (known: rules, version)"
        )
    if data.get("version", 1) != 1:
        raise ConfigError(
            f"{where}: version: only version 1 is known, got {data.get('version')!r}"
        )
    entries = data.get("rules")
    if not isinstance(entries, list):
        raise ConfigError(
            f"{where}: rules: expected a list of rules", hint=_EXAMPLE_HINT
        )
    return [
        _parse_rule(entry, f"{where}: rules[{index}]")
        for index, entry in enumerate(entries)
    ]


_EXAMPLE_HINT = "see docs/reasons.md, e.g. rules: [{name: x, text: 'mailbox full', reason: mailbox-full}]"


def _parse_rule(entry: object, where: str) -> Rule:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(entry).__name__}")
    name = entry.get("name")
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"{where}: name: expected a string, got {name!r}")
    if name:
        where = f"{where} ({name})"
    unknown = sorted(set(map(str, entry)) - _RULE_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}",
            hint=f"known keys: {', '.join(sorted(_RULE_KEYS))}",
        )
    reason = entry.get("reason")
    if not isinstance(reason, str) or reason not in MEANINGS:
        raise ConfigError(
            f"{where}: reason: unknown reason {reason!r}",
            hint=f"one of: {', '.join(REASONS)}",
        )
    if not any(key in entry for key in ("code", "enhanced", "text")):
        raise ConfigError(f"{where}: a rule needs at least one of code, enhanced, text")
    final = entry.get("final", False)
    if not isinstance(final, bool):
        raise ConfigError(f"{where}: final: expected true or false, got {final!r}")
    source = entry.get("source")
    if source is not None and not isinstance(source, str):
        raise ConfigError(
            f"{where}: source: expected a string (URL or RFC section), got {source!r}"
        )
    return Rule(
        name=name or where,
        reason=reason,
        origin=where,
        final=final,
        codes=_parse_codes(entry["code"], f"{where}: code")
        if "code" in entry
        else None,
        enhanced=_parse_enhanced_patterns(entry["enhanced"], f"{where}: enhanced")
        if "enhanced" in entry
        else None,
        text=_parse_text(entry["text"], f"{where}: text") if "text" in entry else None,
        stages=_parse_stages(entry["stage"], f"{where}: stage")
        if "stage" in entry
        else None,
        source=source,
    )


def _as_list(value: object) -> list[object]:
    return value if isinstance(value, list) else [value]


def _parse_codes(value: object, where: str) -> frozenset[str]:
    codes: set[str] = set()
    for item in _as_list(value):
        pattern = str(item).strip().lower()
        if isinstance(item, bool) or not _CODE_PATTERN.match(pattern):
            raise ConfigError(
                f"{where}: expected a reply code like 550 or 5xx, got {item!r}"
            )
        codes.update(_expand_code(pattern))
    return frozenset(codes)


def _expand_code(pattern: str) -> list[str]:
    expanded = [""]
    for char in pattern:
        digits = "0123456789" if char == "x" else char
        expanded = [prefix + digit for prefix in expanded for digit in digits]
    return expanded


def _parse_enhanced_patterns(value: object, where: str) -> tuple[_EnhancedMatcher, ...]:
    matchers = []
    for item in _as_list(value):
        match = (
            _ENHANCED_PATTERN.match(str(item).strip().lower())
            if isinstance(item, str)
            else None
        )
        if match is None:
            raise ConfigError(
                f"{where}: expected an enhanced code like 5.1.1, x.7.1, x.4.* or 4.7.500-699, got {item!r}"
            )
        klass, subject, low, high, star = match.groups()
        low_value = None if star else int(low)
        high_value = None if star else int(high or low)
        if low_value is not None and high_value is not None and low_value > high_value:
            raise ConfigError(f"{where}: empty detail range in {item!r}")
        matchers.append(
            _EnhancedMatcher(
                None if klass == "x" else int(klass),
                int(subject),
                low_value,
                high_value,
            )
        )
    return tuple(matchers)


def _parse_text(value: object, where: str) -> tuple[re.Pattern[str], ...]:
    items = _as_list(value)
    patterns = [p for p in items if isinstance(p, str) and p]
    if not patterns or len(patterns) != len(items):
        raise ConfigError(
            f"{where}: expected a regular expression or a list of them, got {value!r}"
        )
    compiled = []
    for pattern in patterns:
        # Text is lower-cased once per reply; re.IGNORECASE makes a search about three
        # times slower, so it is used only for patterns that need it (capitals, or
        # escapes such as \S and \D, which lower-casing the pattern would change).
        # Patterns stay apart rather than joined with "|": one that starts with a
        # literal is then searched for with the engine's fast literal scan.
        flags = re.IGNORECASE if pattern != pattern.lower() else 0
        try:
            compiled.append(re.compile(pattern, flags))
        except re.error as exc:
            raise ConfigError(
                f"{where}: bad regular expression {pattern!r}: {exc}"
            ) from exc
    return tuple(compiled)


def _parse_stages(value: object, where: str) -> frozenset[str]:
    stages = {str(item) for item in _as_list(value)}
    unknown = sorted(stages - STAGES)
    if unknown:
        raise ConfigError(
            f"{where}: unknown stage {unknown[0]!r}",
            hint=f"one of: {', '.join(sorted(STAGES))}",
        )
    return frozenset(stages)


# --- the default classifier ------------------------------------------------------------


@functools.cache
def default_classifier() -> Classifier:
    """The built-in rules only; loaded once."""
    return Classifier.from_files(())


def classify(
    code: str | int | None,
    enhanced: str | None,
    text: str | None,
    stage: Any = None,
) -> str:
    """The reason category of a non-delivered reply, with the built-in rules."""
    return default_classifier().classify(code, enhanced, text, stage)
