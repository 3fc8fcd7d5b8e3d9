"""The settings: frozen, typed, and the one place where each key and its default is written.

Every configuration key is a field below, declared with ``key(default, check)``: its type, its
default and the check (``shipper.settings_checks``) that turns a YAML value into it. A nested
section is a field declared with ``section(factory)``, whose factory's instance holds the
section's defaults. ``shipper.config`` derives the schema from these classes, so a key exists
exactly when a field declares it, and attribute names are the YAML keys.

Secrets are never stored: ``OpenSearchSettings.password()`` reads the password file or the
environment variable when called (a rotated file is picked up), refuses a password file that
group or others may access, and every ``repr`` shows ``'***'`` in the password's place.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from shipper import settings_checks as c
from shipper.errors import ConfigError
from shipper.settings_checks import MASK, Check, Context, Invalid, KeyPath
from shipper.settings_checks import PASSWORD_ENV as PASSWORD_ENV  # part of this module's API

T = TypeVar("T")
#: Metadata of a field: CHECK marks a key (its value the check), SECTION a nested section,
#: ITEMS a list of sections (its value their class). Other fields are not configuration keys.
CHECK, SECTION, ITEMS = "check", "section", "items"
#: Documents OpenSearch refused for good, in ``state_dir`` (the daemon's and backfill's).
DEAD_LETTER_FILE = "dead-letter.ndjson"


def key(default: T, check: Check[T]) -> T:
    """A configuration key: its default, and the check that validates and converts it."""
    return field(default=default, metadata={CHECK: check})


def computed(factory: Callable[[], T], check: Check[T]) -> T:
    """A key whose default depends on the machine (``load`` computes it from its environment)."""
    return field(default_factory=factory, metadata={CHECK: check})


def section(factory: Callable[[], T]) -> T:
    """A nested section; ``factory()`` is the section with its defaults."""
    return field(default_factory=factory, metadata={SECTION: True})


def sections(cls: type[T]) -> tuple[T, ...]:
    """A list of sections (``inputs``), empty by default."""
    return field(default=(), metadata={ITEMS: cls})


def default_state_dir(env: Mapping[str, str]) -> Path:
    """/var/lib/smtp-shipper for root; else $XDG_STATE_HOME/smtp-shipper (~/.local/state)."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/smtp-shipper")
    base = env.get("XDG_STATE_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".local", "state")
    return Path(base) / "smtp-shipper"


# --------------------------------------------------------------------------- secrets


def _masked_repr(obj: OpenSearchSettings | DashboardsSettings) -> str:
    parts = [f"{f.name}={getattr(obj, f.name)!r}" for f in dataclasses.fields(obj) if f.repr]
    if obj.has_password:
        parts.append(f"password={MASK!r}")
    return f"{type(obj).__name__}({', '.join(parts)})"


def read_password(owner: str, password_file: Path | None, password_env: str | None, environ: Mapping[str, str]) -> str | None:
    """The password from ``password_file`` (private to its owner), else from the variable named
    by ``password_env``; None when neither is set. ConfigError names ``owner``'s key otherwise."""
    if password_file is not None:
        try:
            with open(password_file, encoding="utf-8") as fh:
                c.private_mode(password_file, os.fstat(fh.fileno()).st_mode)  # the file we read, not its name
                text = fh.read()
        except Invalid as exc:
            raise ConfigError(f"{owner}.password_file: {exc.message}", hint=exc.hint) from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"{owner}.password_file: cannot read {password_file}: {reason}") from None
        if not text.strip():
            raise ConfigError(f"{owner}.password_file: {password_file} is empty")
        return text.strip()
    if password_env is not None:
        value = environ.get(password_env)
        if not value:
            raise ConfigError(
                f"{owner}.password_env: the environment variable {password_env} is not set",
                hint="set it in the service's environment (systemd: EnvironmentFile=)",
            )
        return value
    return None


# --------------------------------------------------------------------------- the sections


@dataclass(frozen=True, slots=True)
class BulkSettings:
    max_docs: int = key(2000, c.POSITIVE)
    max_bytes: int = key(10 * 1024 * 1024, c.integer(1024))
    compression: bool = key(False, c.boolean)
    max_retries: int = key(8, c.integer(0))
    initial_backoff: float = key(0.5, c.number())
    max_backoff: float = key(60.0, c.number())


@dataclass(frozen=True, slots=True)
class OpenSearchSettings:
    hosts: tuple[str, ...] = key(("http://127.0.0.1:9200",), c.list_of(c.url, non_empty=True, what="URLs"))
    username: str | None = key(None, c.optional(c.string("a user name")))
    password_file: Path | None = key(None, c.optional(c.file("password file", secret=True)))
    password_env: str | None = key(None, c.optional(c.env_name))
    ca_certs: Path | None = key(None, c.optional(c.file("CA bundle", pem=True)))
    client_cert: Path | None = key(None, c.optional(c.file("client certificate", pem=True)))
    client_key: Path | None = key(None, c.optional(c.file("client key")))
    verify_certs: bool = key(True, c.boolean)
    timeout: float = key(30.0, c.number())
    index_prefix: str = key("smtp-deliveries", c.index_prefix)
    replicas: int | Literal["auto"] = key("auto", c.replicas)
    retention_days: int = key(90, c.POSITIVE)
    refresh_interval: str = key("5s", c.time_value)
    bulk: BulkSettings = section(BulkSettings)
    # Where password() looks at call time; os.environ unless load() was given another mapping.
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ, repr=False, compare=False)

    @property
    def has_password(self) -> bool:
        """A password source is configured (the password itself is not read)."""
        return bool(self.password_file or self.password_env or self.environ.get(PASSWORD_ENV))

    @property
    def password_source(self) -> str | None:
        """Where password() will look, for messages: "$VAR" or "file PATH" (None: no password)."""
        if self.environ.get(PASSWORD_ENV):
            return f"${PASSWORD_ENV}"
        if self.password_file is not None:
            return f"file {self.password_file}"
        return f"${self.password_env}" if self.password_env else None

    def password(self) -> str | None:
        """The password, read now: $SMTP_SHIPPER_OPENSEARCH_PASSWORD, else password_file, else
        password_env; None when none is configured. Raises ConfigError if the source is gone."""
        return self.environ.get(PASSWORD_ENV) or read_password("opensearch", self.password_file, self.password_env, self.environ)

    def __repr__(self) -> str:
        return _masked_repr(self)

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class DashboardsSettings:
    url: str | None = key(None, c.optional(c.url))
    username: str | None = key(None, c.optional(c.string("a user name")))
    password_file: Path | None = key(None, c.optional(c.file("password file", secret=True)))
    password_env: str | None = key(None, c.optional(c.env_name))
    ca_certs: Path | None = key(None, c.optional(c.file("CA bundle", pem=True)))
    verify_certs: bool = key(True, c.boolean)
    tenant: str | None = key(None, c.optional(c.string("a tenant name")))
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ, repr=False, compare=False)

    @property
    def has_password(self) -> bool:
        return bool(self.password_file or self.password_env)

    def password(self) -> str | None:
        """The Dashboards password, read now from password_file or password_env (None if neither)."""
        return read_password("dashboards", self.password_file, self.password_env, self.environ)

    def __repr__(self) -> str:
        return _masked_repr(self)

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class ThresholdSettings:
    """No defaults of its own: each use (``rejections``, ``domain_rejections``) has its own."""

    threshold: int = field(metadata={CHECK: c.POSITIVE})
    window_minutes: int = field(metadata={CHECK: c.POSITIVE})


@dataclass(frozen=True, slots=True)
class DeferralRateSettings:
    threshold_percent: float = key(20.0, c.number(0.0, maximum=100.0))
    window_minutes: int = key(30, c.POSITIVE)
    min_documents: int = key(20, c.POSITIVE)


@dataclass(frozen=True, slots=True)
class AlertingSettings:
    channel_id: str | None = key(None, c.optional(c.string("a Notifications channel id")))
    interval_minutes: int = key(5, c.POSITIVE)
    rejections: ThresholdSettings = section(lambda: ThresholdSettings(50, 15))
    domain_rejections: ThresholdSettings = section(lambda: ThresholdSettings(10, 60))
    deferral_rate: DeferralRateSettings = section(DeferralRateSettings)


@dataclass(frozen=True, slots=True)
class InputSettings:
    paths: tuple[str, ...] = field(metadata={CHECK: c.list_of(c.glob, non_empty=True, what="globs")})  # required
    exclude: tuple[str, ...] = key((), c.list_of(c.exclude, non_empty=False, what="globs"))
    format: str = key("xeams", c.log_format)
    direction: str = key("auto", c.choice("outbound", "inbound", "auto"))
    timezone: str | None = key(None, c.optional(c.zone_name))  # None: the machine's zone
    start_at: str = key("beginning", c.choice("beginning", "end"))

    @property
    def zone(self) -> zoneinfo.ZoneInfo | None:
        return zoneinfo.ZoneInfo(self.timezone) if self.timezone else None

    def files(self) -> list[Path]:
        """The regular files the globs match right now, minus the excluded ones, sorted."""
        return c.matching_files(self.paths, self.exclude)


@dataclass(frozen=True, slots=True)
class ReasonsSettings:
    rules_files: tuple[Path, ...] = key((), c.list_of(c.file("rules file"), non_empty=False, what="files"))


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    max_buffered_bytes: int = key(32 * 1024 * 1024, c.integer(65536))
    deleted_file_grace: float = key(300.0, c.number(positive=False))
    status_interval: float = key(60.0, c.number())


#: ``limits.field_bytes`` at most: the ``ignore_above`` of the peer's keyword fields in the
#: mapping, so that a value the shipper cut is always indexed. ``ignore_above`` counts UTF-16
#: units, each at most 3 UTF-8 bytes (a 4-byte character is 2 units), lower-cased too: 8,191
#: units are at most 24,573 bytes, under Lucene's 32,766-byte term limit.
MAX_FIELD_BYTES = 8191
#: ``limits.transcript_bytes`` at most: OpenSearch's ``index.highlight.max_analyzed_offset``
#: (characters, never more than bytes); a longer text fails every search that highlights it
#: (Discover does).
MAX_TRANSCRIPT_BYTES = 1_000_000


@dataclass(frozen=True, slots=True)
class LimitsSettings:
    """Sizes of what a peer writes, in UTF-8 bytes (``shipper.limits``). The minima leave room
    for a valid path (RFC 5321 §4.5.3.1.3: 256 octets) and for a transcript's cut marker; a
    session's first document holds its transcript whatever ``session_transcript_bytes`` says
    (0: only the first)."""

    field_bytes: int = key(2048, c.integer(256, MAX_FIELD_BYTES, why="the mapping's ignore_above"))
    transcript_bytes: int = key(256 * 1024, c.integer(4096, MAX_TRANSCRIPT_BYTES, why="OpenSearch's highlighting limit"))
    session_transcript_bytes: int = key(1024 * 1024, c.integer(0))


@dataclass(frozen=True, slots=True)
class Settings:
    opensearch: OpenSearchSettings = section(OpenSearchSettings)
    dashboards: DashboardsSettings = section(DashboardsSettings)
    alerting: AlertingSettings = section(AlertingSettings)
    inputs: tuple[InputSettings, ...] = sections(InputSettings)
    reasons: ReasonsSettings = section(ReasonsSettings)
    state_dir: Path = computed(lambda: default_state_dir(os.environ), c.state_dir)
    host_name: str = computed(socket.gethostname, c.string("a host name"))
    idle_timeout: float = key(300.0, c.number())
    pipeline: PipelineSettings = section(PipelineSettings)
    limits: LimitsSettings = section(LimitsSettings)
    log_level: str = key("info", c.choice("debug", "info", "warning", "error"))
    #: The file these settings came from (None: built-in defaults), and non-fatal findings.
    source: Path | None = field(default=None, compare=False)
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def dead_letter_path(self) -> Path:
        return self.state_dir / DEAD_LETTER_FILE

    def redacted_dict(self) -> dict[str, Any]:
        """The effective settings as JSON-able data, keyed like the YAML file; secrets masked."""
        out: dict[str, Any] = _plain(self)
        out["opensearch"]["password"] = MASK if self.opensearch.has_password else None
        out["dashboards"]["password"] = MASK if self.dashboards.has_password else None
        return out


#: Checks across the keys of a section, by section (``shipper.settings_checks``).
RULES: dict[type, Callable[[Mapping[str, object], KeyPath, Context], None]] = {
    OpenSearchSettings: c.opensearch_rules,
    DashboardsSettings: c.password_rules,
    BulkSettings: c.bulk_rules,
    InputSettings: c.input_rules,
}


def _plain(value: object) -> Any:  # JSON-able data out of settings of any section
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        skip = {"environ", "source", "warnings"}
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name not in skip}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
