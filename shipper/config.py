"""Configuration: YAML → validated once → frozen settings.

The one place that knows the configuration schema (docs/configuration.md documents it key by key).

* ``load(path, env=..., overrides=...)`` reads the file with PyYAML's safe loader, layers the
  environment and the command-line overrides on top, validates everything in one pass and returns
  a frozen ``Settings``. Every problem found is collected, and all of them are raised together as
  one ``ConfigProblems`` (a ``shipper.errors.ConfigError``, exit status 3), each saying
  ``<file>:<line>: <key.path[index]>: <what is wrong>`` plus a hint.
* Precedence, in one place: command-line flag > environment > file > built-in default. The state
  directory has one more, highest, layer: ``$STATE_DIRECTORY`` (set by systemd's
  ``StateDirectory=``).
* Secrets are never stored in the settings: ``OpenSearchSettings.password()`` reads the password
  file or the environment variable when called, and every ``repr`` shows ``'***'`` in its place.
* Relative paths in the file are relative to the file's directory; relative paths from the
  environment or the command line are relative to the current directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import fnmatch
import json
import logging
import os
import re
import socket
import ssl
import stat
import zoneinfo
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from shipper.errors import ConfigError

log = logging.getLogger(__name__)

#: Read when neither ``--config`` nor ``$SMTP_SHIPPER_CONFIG`` names a file, if it exists.
DEFAULT_CONFIG_PATH = Path("/etc/smtp-shipper/config.yml")
CONFIG_ENV = "SMTP_SHIPPER_CONFIG"
#: The OpenSearch password from the environment; wins over password_file / password_env.
PASSWORD_ENV = "SMTP_SHIPPER_OPENSEARCH_PASSWORD"
#: Environment variable → dotted key, applied in this order (later wins): systemd's
#: $STATE_DIRECTORY comes after SMTP_SHIPPER_STATE_DIR on purpose.
ENV_OVERRIDES: tuple[tuple[str, str], ...] = (
    ("SMTP_SHIPPER_OPENSEARCH_HOSTS", "opensearch.hosts"),
    ("SMTP_SHIPPER_OPENSEARCH_USERNAME", "opensearch.username"),
    ("SMTP_SHIPPER_INDEX_PREFIX", "opensearch.index_prefix"),
    ("SMTP_SHIPPER_DASHBOARDS_URL", "dashboards.url"),
    ("SMTP_SHIPPER_LOG_LEVEL", "log_level"),
    ("SMTP_SHIPPER_STATE_DIR", "state_dir"),
    ("STATE_DIRECTORY", "state_dir"),
)
MASK = "***"


# --------------------------------------------------------------------------- settings


def _masked_repr(obj: Any, secret: bool) -> str:
    parts = [f"{f.name}={getattr(obj, f.name)!r}" for f in dataclasses.fields(obj) if f.repr]
    if secret:
        parts.append(f"password={MASK!r}")
    return f"{type(obj).__name__}({', '.join(parts)})"


def _read_password(
    owner: str, password_file: Path | None, password_env: str | None, environ: Mapping[str, str], fallback: str | None
) -> str | None:
    if fallback and environ.get(fallback):
        return environ[fallback]
    if password_file is not None:
        try:
            text = password_file.read_text(encoding="utf-8")
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


@dataclass(frozen=True, slots=True)
class BulkSettings:
    max_docs: int = 2000
    max_bytes: int = 10 * 1024 * 1024
    compression: bool = False
    max_retries: int = 8
    initial_backoff: float = 0.5
    max_backoff: float = 60.0


@dataclass(frozen=True, slots=True)
class OpenSearchSettings:
    hosts: tuple[str, ...] = ("http://127.0.0.1:9200",)
    username: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    ca_certs: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    verify_certs: bool = True
    timeout: float = 30.0
    index_prefix: str = "smtp-deliveries"
    replicas: int | str = "auto"
    retention_days: int = 90
    refresh_interval: str = "5s"
    bulk: BulkSettings = field(default_factory=BulkSettings)
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
        return _read_password("opensearch", self.password_file, self.password_env, self.environ, PASSWORD_ENV)

    def __repr__(self) -> str:
        return _masked_repr(self, self.has_password)

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class DashboardsSettings:
    url: str | None = None
    username: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    ca_certs: Path | None = None
    verify_certs: bool = True
    tenant: str | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ, repr=False, compare=False)

    @property
    def has_password(self) -> bool:
        return bool(self.password_file or self.password_env)

    def password(self) -> str | None:
        """The Dashboards password, read now from password_file or password_env (None if neither)."""
        return _read_password("dashboards", self.password_file, self.password_env, self.environ, None)

    def __repr__(self) -> str:
        return _masked_repr(self, self.has_password)

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class ThresholdSettings:
    threshold: int
    window_minutes: int


@dataclass(frozen=True, slots=True)
class DeferralRateSettings:
    threshold_percent: float = 20.0
    window_minutes: int = 30
    min_documents: int = 20


@dataclass(frozen=True, slots=True)
class AlertingSettings:
    channel_id: str | None = None
    interval_minutes: int = 5
    rejections: ThresholdSettings = field(default_factory=lambda: ThresholdSettings(50, 15))
    domain_rejections: ThresholdSettings = field(default_factory=lambda: ThresholdSettings(10, 60))
    deferral_rate: DeferralRateSettings = field(default_factory=DeferralRateSettings)


@dataclass(frozen=True, slots=True)
class InputSettings:
    paths: tuple[str, ...]  # absolute globs
    exclude: tuple[str, ...] = ()
    format: str = "xeams"
    direction: str = "auto"  # outbound | inbound | auto
    timezone: str | None = None  # IANA name; None = the machine's zone
    start_at: str = "beginning"  # beginning | end

    @property
    def zone(self) -> zoneinfo.ZoneInfo | None:
        return zoneinfo.ZoneInfo(self.timezone) if self.timezone else None

    def excluded(self, path: str | Path) -> bool:
        """An ``exclude`` glob matches the path or its file name ("*.gz" works)."""
        text = str(path)
        return any(fnmatch.fnmatch(text, pat) or fnmatch.fnmatch(os.path.basename(text), pat) for pat in self.exclude)

    def files(self) -> list[Path]:
        """The regular files the globs match right now, minus the excluded ones, sorted."""
        from shipper.follow import expand_globs  # the daemon's own expansion, so the counts agree

        return [Path(p) for p in expand_globs(self.paths, self.exclude) if os.path.isfile(p)]


@dataclass(frozen=True, slots=True)
class ReasonsSettings:
    rules_files: tuple[Path, ...] = ()


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    max_buffered_bytes: int = 32 * 1024 * 1024
    flush_interval: float = 1.0
    deleted_file_grace: float = 300.0
    status_interval: float = 60.0


@dataclass(frozen=True, slots=True)
class Settings:
    opensearch: OpenSearchSettings = field(default_factory=OpenSearchSettings)
    dashboards: DashboardsSettings = field(default_factory=DashboardsSettings)
    alerting: AlertingSettings = field(default_factory=AlertingSettings)
    inputs: tuple[InputSettings, ...] = ()
    reasons: ReasonsSettings = field(default_factory=ReasonsSettings)
    state_dir: Path = field(default_factory=lambda: default_state_dir(os.environ))
    host_name: str = field(default_factory=socket.gethostname)
    idle_timeout: float = 300.0
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    log_level: str = "info"
    #: The file these settings came from (None: built-in defaults), and non-fatal findings.
    source: Path | None = field(default=None, compare=False)
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def dead_letter_path(self) -> Path:
        return self.state_dir / "dead-letter.ndjson"

    def redacted_dict(self) -> dict[str, Any]:
        """The effective settings as JSON-able data, keyed like the YAML file; secrets masked."""
        out: dict[str, Any] = _plain(self)
        for section in ("opensearch", "dashboards"):
            out[section]["password"] = MASK if getattr(self, section).has_password else None
        return out


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        skip = {"environ", "source", "warnings"}
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name not in skip}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def default_state_dir(env: Mapping[str, str]) -> Path:
    """/var/lib/smtp-shipper for root; else $XDG_STATE_HOME/smtp-shipper (~/.local/state)."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/smtp-shipper")
    base = env.get("XDG_STATE_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".local", "state")
    return Path(base) / "smtp-shipper"


# --------------------------------------------------------------------------- problems


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong: where (file:line, or which variable/flag), the key path, what, a hint."""

    where: str
    key: str
    message: str
    hint: str | None = None
    line: int = 0  # for sorting: problems are listed in the order of the file

    def __str__(self) -> str:
        text = f"{self.where}: {self.key}: {self.message}" if self.key else f"{self.where}: {self.message}"
        return f"{text}\n  hint: {self.hint}" if self.hint else text


class ConfigProblems(ConfigError):
    """All the problems of one configuration, reported together."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = tuple(problems)
        body = "\n".join(str(p) for p in self.problems)
        if len(self.problems) > 1:
            body = f"{len(self.problems)} problems in the configuration:\n{body}"
        super().__init__(body)


class _Invalid(Exception):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


KeyPath = tuple[str | int, ...]


def _key(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _show(value: Any) -> str:
    """How a wrong value is quoted in a message: JSON-ish, cut short."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + '..."'


@dataclass
class _Ctx:
    problems: list[Problem]
    warnings: list[str]
    source: Path | None
    lines: dict[KeyPath, int]
    origins: dict[KeyPath, str]
    environ: Mapping[str, str]
    check_files: bool

    def _origin(self, path: KeyPath) -> str | None:
        for n in range(len(path), 0, -1):
            if path[:n] in self.origins:
                return self.origins[path[:n]]
        return None

    def where(self, path: KeyPath) -> str:
        origin = self._origin(path)
        if origin is not None:
            return origin
        if self.source is None:
            return "built-in defaults"
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                return f"{self.source}:{self.lines[path[:n]]}"
        return str(self.source)

    def base_dir(self, path: KeyPath) -> Path:
        if self._origin(path) is not None or self.source is None:
            return Path.cwd()
        return self.source.parent

    def line(self, path: KeyPath) -> int:
        if self._origin(path) is not None:
            return 1 << 30  # environment and command line after the file
        return next((self.lines[path[:n]] for n in range(len(path), -1, -1) if path[:n] in self.lines), 0)

    def problem(self, path: KeyPath, message: str, hint: str | None = None) -> None:
        self.problems.append(Problem(self.where(path), _key(path), message, hint, self.line(path)))

    def warn(self, path: KeyPath, message: str) -> None:
        self.warnings.append(f"{self.where(path)}: {_key(path)}: {message}" if path else f"{self.where(path)}: {message}")


# --------------------------------------------------------------------------- value checks

Check = Callable[[Any, KeyPath, _Ctx], Any]
_REQUIRED = object()
_FAILED = object()


def _string(what: str = "a string") -> Check:
    def check(value: Any, path: KeyPath, ctx: _Ctx) -> str:
        if not isinstance(value, str) or not value.strip():
            raise _Invalid(f"expected {what}, got {_show(value)}")
        return value.strip()

    return check


def _boolean(value: Any, path: KeyPath, ctx: _Ctx) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false, got {_show(value)}")
    return value


def _integer(minimum: int) -> Check:
    def check(value: Any, path: KeyPath, ctx: _Ctx) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"expected a whole number, got {_show(value)}")
        if value < minimum:
            raise _Invalid(f"must be at least {minimum}, got {value}")
        return value

    return check


def _number(minimum: float = 0.0, *, positive: bool = True, maximum: float | None = None) -> Check:
    """Seconds and such: int or float; ``positive`` excludes the minimum itself."""

    def check(value: Any, path: KeyPath, ctx: _Ctx) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid(f"expected a number, got {_show(value)}")
        if value < minimum or (positive and value == minimum):
            raise _Invalid(f"must be {'greater than' if positive else 'at least'} {minimum:g}, got {value:g}")
        if maximum is not None and value > maximum:
            raise _Invalid(f"must be at most {maximum:g}, got {value:g}")
        return float(value)

    return check


def _choice(*choices: str) -> Check:
    def check(value: Any, path: KeyPath, ctx: _Ctx) -> str:
        if isinstance(value, str) and value.strip().lower() in choices:
            return value.strip().lower()
        close = difflib.get_close_matches(str(value).lower(), choices, n=1)
        hint = f'did you mean "{close[0]}"?' if close else None
        raise _Invalid(f"expected one of {', '.join(choices)}, got {_show(value)}", hint)

    return check


def _formats() -> tuple[str, ...]:
    """The names of the log formats ``shipper.formats`` knows."""
    from shipper import formats  # late: formats pulls in the parser, which config users may not need

    return tuple(formats.names())


def _format(value: Any, path: KeyPath, ctx: _Ctx) -> str:
    return str(_choice(*_formats())(value, path, ctx))


def _masked_url(text: str) -> str:
    return re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:" + MASK + "@", text)


def _url(value: Any, path: KeyPath, ctx: _Ctx) -> str:
    example = "https://host:9200" if path[0] == "opensearch" else "https://host:5601"
    if not isinstance(value, str):
        raise _Invalid(f"expected a URL like {example}, got {_show(value)}")
    text = value.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise _Invalid(f"expected a URL like {example}, got {_show(_masked_url(text))} (bad port)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        if text.isdigit():
            hint = f'a port alone is not enough: write scheme, host and port, e.g. "https://search.example.net:{text}"'
        elif "://" not in text:
            hint = f'write the scheme too: "http://{text}" or "https://{text}"'
        else:
            hint = "the scheme must be http or https"
        raise _Invalid(f"expected a URL like {example}, got {_show(_masked_url(text))}", hint)
    if parts.username is not None or parts.password is not None:
        raise _Invalid(
            f"the URL contains credentials: {_show(_masked_url(text))}",
            "remove them from the URL; use username and password_file (or password_env) instead",
        )
    if parts.query or parts.fragment:
        raise _Invalid(f"a URL with a query or fragment is not supported, got {_show(text)}")
    del port  # read only so that urlsplit validates it
    return text.rstrip("/")


def _list_of(item: Check, *, non_empty: bool, what: str) -> Check:
    """A list (a single string is taken as a list of one)."""

    def check(value: Any, path: KeyPath, ctx: _Ctx) -> tuple[Any, ...]:
        if value is None and not non_empty:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise _Invalid(f"expected a list of {what}, got {_show(value)}")
        if non_empty and not value:
            raise _Invalid(f"expected at least one {what.rstrip('s')}, got an empty list")
        out = []
        for index, element in enumerate(value):
            converted = _run(item, element, path + (index,), ctx)
            if converted is not _FAILED:
                out.append(converted)
        return tuple(out)

    return check


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):  # pragma: no cover - not POSIX, or a uid without a name
        return str(os.getuid()) if hasattr(os, "getuid") else "this user"


def _resolve(value: Any, path: KeyPath, ctx: _Ctx) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"expected a file path, got {_show(value)}")
    p = Path(os.path.expanduser(value.strip()))
    return p if p.is_absolute() else ctx.base_dir(path) / p


def _file(kind: str, *, secret: bool = False, pem: bool = False) -> Check:
    """A path to a file that must exist and be readable now (unless check_files is off)."""

    def check(value: Any, path: KeyPath, ctx: _Ctx) -> Path:
        p = _resolve(value, path, ctx)
        if not ctx.check_files:
            return p
        if Path(os.path.expanduser(str(value).strip())).is_absolute():
            relative_hint = "create it, or fix the path"
        else:
            relative_hint = f"fix the path; it was taken relative to {ctx.base_dir(path)}"
        try:
            st = p.stat()
        except FileNotFoundError:
            raise _Invalid(f"{kind} {p} does not exist", relative_hint) from None
        except PermissionError:
            raise _Invalid(f"{kind} {p}: permission denied", "run check-config as the service's user") from None
        if not stat.S_ISREG(st.st_mode):
            raise _Invalid(f"{kind} {p} is not a regular file", relative_hint)
        try:
            with open(p, "rb") as fh:
                head = fh.read(1 << 20)
        except PermissionError:
            raise _Invalid(
                f"{kind} {p} is not readable by user {_user()}",
                "give the service's user read access (chown/chmod), or run check-config as that user",
            ) from None
        if secret:
            if not head.strip():
                raise _Invalid(f"{kind} {p} is empty", "write the password into it (one line)")
            if st.st_mode & stat.S_IROTH:
                ctx.warn(path, f"{p} is readable by every user on this machine; chmod 600 (or 640 for a group) it")
        if pem:
            _check_pem(p, kind)
        return p

    return check


def _check_pem(p: Path, kind: str) -> None:
    try:
        ssl.create_default_context(cafile=str(p))
    except (ssl.SSLError, ValueError):
        raise _Invalid(f"{kind} {p} holds no PEM certificate", "it must contain -----BEGIN CERTIFICATE----- blocks") from None


def _env_name(value: Any, path: KeyPath, ctx: _Ctx) -> str:
    # Never quote the value: a password pasted here by mistake must not reach a terminal or log.
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value.strip()):
        raise _Invalid(
            "expected the NAME of an environment variable (letters, digits, _); the value is not shown",
            "write the variable's name here, e.g. SMTP_SHIPPER_OPENSEARCH_PASSWORD, and the password into the variable",
        )
    return value.strip()


def _no_password(value: Any, path: KeyPath, ctx: _Ctx) -> None:
    raise _Invalid(
        "a password is never written into the configuration file (the value is not shown)",
        "put it into a file named by password_file (mode 600), or into an environment variable named by password_env",
    )


def _index_prefix(value: Any, path: KeyPath, ctx: _Ctx) -> str:
    text: str = _string("an index name prefix")(value, path, ctx)
    # OpenSearch index names: lower case, no \ / * ? " < > | , # : or space, not starting with - _ +
    if text != text.lower():
        raise _Invalid(f"index names must be lower case, got {_show(text)}", f'use "{text.lower()}"')
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", text) or len(text) > 200:
        raise _Invalid(
            f"not a valid OpenSearch index name prefix: {_show(text)}",
            "use lower-case letters, digits, '-', '_' and '.', starting with a letter or digit",
        )
    return text


def _replicas(value: Any, path: KeyPath, ctx: _Ctx) -> int | str:
    if value == "auto":
        return "auto"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise _Invalid(f'expected "auto" or a whole number >= 0, got {_show(value)}')


def _time_value(value: Any, path: KeyPath, ctx: _Ctx) -> str:
    # OpenSearch time units (docs: "API conventions / time units"); -1 disables refresh.
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if text is None or not re.fullmatch(r"-1|\d+(\.\d+)?(nanos|micros|ms|s|m|h|d)", text):
        raise _Invalid(f"expected an OpenSearch time value like 5s, 1m or -1, got {_show(value)}", "add a unit: ms, s, m, h or d")
    return text


def _zone_name(value: Any, path: KeyPath, ctx: _Ctx) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"expected an IANA time zone name like America/New_York, got {_show(value)}")
    name = value.strip()
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        close = difflib.get_close_matches(name.replace(" ", "_"), zoneinfo.available_timezones(), n=1)
        hint = f'did you mean "{close[0]}"?' if close else "see the TZ identifiers of the tz database (timedatectl list-timezones)"
        raise _Invalid(f"unknown time zone {_show(name)}", hint) from None
    return name


def _glob(value: Any, path: KeyPath, ctx: _Ctx) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"expected a file path or glob, got {_show(value)}")
    text = os.path.expanduser(value.strip())
    if not os.path.dirname(text):
        raise _Invalid(
            f"the glob {_show(text)} has no directory part",
            f'write where the files are, e.g. "/opt/Xeams/logs/{text}"',
        )
    return text if os.path.isabs(text) else str(ctx.base_dir(path) / text)


def _exclude(value: Any, path: KeyPath, ctx: _Ctx) -> str:
    # Matched against the whole path or the file name: "*.gz" needs no directory part.
    return str(_string("a glob")(value, path, ctx))


def _state_dir(value: Any, path: KeyPath, ctx: _Ctx) -> Path:
    p = _resolve(value, path, ctx)
    if ctx.check_files and p.exists():
        if not p.is_dir():
            raise _Invalid(f"{p} exists and is not a directory")
        if not os.access(p, os.W_OK | os.X_OK):
            ctx.warn(path, f"{p} is not writable by user {_user()} (fine if the service runs as another user)")
    return p


# --------------------------------------------------------------------------- the schema


@dataclass(frozen=True)
class _Key:
    check: Check
    default: Any = None


@dataclass(frozen=True)
class _Section:
    cls: type
    keys: dict[str, _Key | _Section]
    post: Callable[[dict[str, Any], KeyPath, _Ctx], None] | None = None


def _opensearch_post(values: dict[str, Any], path: KeyPath, ctx: _Ctx) -> None:
    _password_post(values, path, ctx)
    if (values.get("client_cert") is None) != (values.get("client_key") is None):
        have, missing = ("client_cert", "client_key") if values.get("client_cert") is not None else ("client_key", "client_cert")
        ctx.problem(path + (have,), f"{have} is set but {missing} is not", f"mutual TLS needs both: set {missing} too")
    cert, key = values.get("client_cert"), values.get("client_key")
    if ctx.check_files and isinstance(cert, Path) and isinstance(key, Path):
        _check_key_pair(cert, key, path + ("client_key",), ctx)
    if values.get("verify_certs") is False:
        ctx.warn(path + ("verify_certs",), "TLS certificates are NOT verified; anyone in between can read the traffic")
    hosts = values.get("hosts") or ()
    if values.get("username") and any(_plain_http_off_host(str(h)) for h in hosts):
        ctx.warn(path + ("hosts",), "a password would be sent unencrypted over http://; use https://")
    if values.get("username") and not (values.get("password_file") or values.get("password_env") or ctx.environ.get(PASSWORD_ENV)):
        ctx.warn(path + ("username",), f"username is set but no password: set password_file, password_env or ${PASSWORD_ENV}")


def _check_key_pair(cert: Path, key: Path, path: KeyPath, ctx: _Ctx) -> None:
    """The key must be an unencrypted PEM key that belongs to the certificate."""
    if b"ENCRYPTED" in key.read_bytes()[:4096]:
        ctx.problem(path, f"{key} is encrypted; a client key must be unencrypted",
                    "decrypt it (openssl pkey -in KEY -out NEW) and keep it mode 600")
        return
    try:
        # The password callback keeps OpenSSL from prompting on the terminal.
        ssl.create_default_context().load_cert_chain(str(cert), str(key), password=lambda: b"")
    except ssl.SSLError as exc:
        mismatch = "KEY_VALUES_MISMATCH" in str(exc)
        what = f"{key} does not belong to client_cert {cert}" if mismatch else f"{key} is not a PEM private key"
        ctx.problem(path, what, "client_cert and client_key must be the two halves of one key pair")


def _plain_http_off_host(url: str) -> bool:
    """http:// to another machine (the loopback interface never leaves the host)."""
    parts = urlsplit(url)
    return parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1", "::1")


def _password_post(values: dict[str, Any], path: KeyPath, ctx: _Ctx) -> None:
    if values.get("password_file") is not None and values.get("password_env") is not None:
        ctx.problem(path + ("password_env",), "password_file and password_env are both set", "keep one of them")
    name = values.get("password_env")
    if name is not None and not ctx.environ.get(name):
        ctx.warn(path + ("password_env",), f"the environment variable {name} is not set here (it must be for the service)")


def _bulk_post(values: dict[str, Any], path: KeyPath, ctx: _Ctx) -> None:
    low, high = values.get("initial_backoff"), values.get("max_backoff")
    if isinstance(low, float) and isinstance(high, float) and high < low:
        ctx.problem(path + ("max_backoff",), f"max_backoff ({high:g}) is smaller than initial_backoff ({low:g})")


def _input_post(values: dict[str, Any], path: KeyPath, ctx: _Ctx) -> None:
    if not ctx.check_files or not values.get("paths"):
        return
    probe = InputSettings(paths=values["paths"], exclude=values.get("exclude") or ())
    if not probe.files():
        ctx.warn(path + ("paths",), "matches no file right now (the files are picked up when they appear)")


_POS_INT = _integer(1)


def _threshold(threshold: int, window_minutes: int) -> _Section:
    return _Section(ThresholdSettings, {"threshold": _Key(_POS_INT, threshold), "window_minutes": _Key(_POS_INT, window_minutes)})


_INPUT = _Section(
    InputSettings,
    {
        "paths": _Key(_list_of(_glob, non_empty=True, what="globs"), _REQUIRED),
        "exclude": _Key(_list_of(_exclude, non_empty=False, what="globs"), ()),
        "format": _Key(_format, "xeams"),
        "direction": _Key(_choice("outbound", "inbound", "auto"), "auto"),
        "timezone": _Key(_zone_name),
        "start_at": _Key(_choice("beginning", "end"), "beginning"),
    },
    _input_post,
)


def _inputs(value: Any, path: KeyPath, ctx: _Ctx) -> tuple[InputSettings, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _Invalid(f"expected a list of inputs (- paths: [...]), got {_show(value)}", "start each input with '- paths:'")
    built = [_section(_INPUT, element, path + (index,), ctx) for index, element in enumerate(value)]
    return tuple(b for b in built if b is not _FAILED)




_SCHEMA = _Section(
    Settings,
    {
        "opensearch": _Section(
            OpenSearchSettings,
            {
                "hosts": _Key(_list_of(_url, non_empty=True, what="URLs"), ("http://127.0.0.1:9200",)),
                "username": _Key(_string("a user name")),
                "password": _Key(_no_password),
                "password_file": _Key(_file("password file", secret=True)),
                "password_env": _Key(_env_name),
                "ca_certs": _Key(_file("CA bundle", pem=True)),
                "client_cert": _Key(_file("client certificate", pem=True)),
                "client_key": _Key(_file("client key")),
                "verify_certs": _Key(_boolean, True),
                "timeout": _Key(_number(), 30.0),
                "index_prefix": _Key(_index_prefix, "smtp-deliveries"),
                "replicas": _Key(_replicas, "auto"),
                "retention_days": _Key(_POS_INT, 90),
                "refresh_interval": _Key(_time_value, "5s"),
                "bulk": _Section(
                    BulkSettings,
                    {
                        "max_docs": _Key(_POS_INT, 2000),
                        "max_bytes": _Key(_integer(1024), 10 * 1024 * 1024),
                        "compression": _Key(_boolean, False),
                        "max_retries": _Key(_integer(0), 8),
                        "initial_backoff": _Key(_number(), 0.5),
                        "max_backoff": _Key(_number(), 60.0),
                    },
                    _bulk_post,
                ),
            },
            _opensearch_post,
        ),
        "dashboards": _Section(
            DashboardsSettings,
            {
                "url": _Key(_url),
                "username": _Key(_string("a user name")),
                "password": _Key(_no_password),
                "password_file": _Key(_file("password file", secret=True)),
                "password_env": _Key(_env_name),
                "ca_certs": _Key(_file("CA bundle", pem=True)),
                "verify_certs": _Key(_boolean, True),
                "tenant": _Key(_string("a tenant name")),
            },
            _password_post,
        ),
        "alerting": _Section(
            AlertingSettings,
            {
                "channel_id": _Key(_string("a Notifications channel id")),
                "interval_minutes": _Key(_POS_INT, 5),
                "rejections": _threshold(50, 15),
                "domain_rejections": _threshold(10, 60),
                "deferral_rate": _Section(
                    DeferralRateSettings,
                    {
                        "threshold_percent": _Key(_number(0.0, maximum=100.0), 20.0),
                        "window_minutes": _Key(_POS_INT, 30),
                        "min_documents": _Key(_POS_INT, 20),
                    },
                ),
            },
        ),
        "inputs": _Key(_inputs, ()),
        "reasons": _Section(
            ReasonsSettings,
            {"rules_files": _Key(_list_of(_file("rules file"), non_empty=False, what="files"), ())},
        ),
        "state_dir": _Key(_state_dir),
        "host_name": _Key(_string("a host name")),
        "idle_timeout": _Key(_number(), 300.0),
        "pipeline": _Section(
            PipelineSettings,
            {
                "max_buffered_bytes": _Key(_integer(65536), 32 * 1024 * 1024),
                "flush_interval": _Key(_number(), 1.0),
                "deleted_file_grace": _Key(_number(positive=False), 300.0),
                "status_interval": _Key(_number(), 60.0),
            },
        ),
        "log_level": _Key(_choice("debug", "info", "warning", "error"), "info"),
    },
)



def _all_keys(section: _Section, prefix: str = "") -> Iterator[str]:
    for name, spec in section.keys.items():
        yield prefix + name
        if isinstance(spec, _Section):
            yield from _all_keys(spec, prefix + name + ".")
    if section is _SCHEMA:
        yield from (f"inputs[].{name}" for name in _INPUT.keys)


def _unknown_key_hint(name: Any, section: _Section, path: KeyPath) -> str:
    text = str(name)
    close = difflib.get_close_matches(text, [k for k in section.keys if k != "password"], n=1)
    if close:
        return f'did you mean "{close[0]}"?'
    elsewhere = [k for k in _all_keys(_SCHEMA) if k.rsplit(".", 1)[-1] == text]
    if elsewhere:
        return f"{text} belongs under {elsewhere[0].rsplit('.', 1)[0]}: ({elsewhere[0]})"
    where = f"under {_key(path)}" if path else "at the top level"
    return f"known keys {where}: {', '.join(k for k in section.keys if k != 'password')}"


def _run(check: Check, value: Any, path: KeyPath, ctx: _Ctx) -> Any:
    try:
        return check(value, path, ctx)
    except _Invalid as exc:
        ctx.problem(path, exc.message, exc.hint)
        return _FAILED


def _section(section: _Section, value: Any, path: KeyPath, ctx: _Ctx) -> Any:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        what = "the file's top level" if not path else "this section"
        ctx.problem(path, f"{what} must be a mapping (key: value lines), got {_show(value)}")
        return _FAILED
    for name in value:
        if name not in section.keys:
            ctx.problem(path + (str(name),), "unknown key", _unknown_key_hint(name, section, path))
    values: dict[str, Any] = {}
    failed = False
    for name, spec in section.keys.items():
        here = path + (name,)
        if isinstance(spec, _Section):
            result = _section(spec, value.get(name), here, ctx)
        elif name not in value:
            if spec.default is _REQUIRED:
                ctx.problem(path, f"{name} is required")
                result = _FAILED
            else:
                result = spec.default
        elif value[name] is None and spec.default is _REQUIRED:
            ctx.problem(here, f"{name} is required, got nothing (null)")
            result = _FAILED
        elif value[name] is None and spec.default not in (None, ()):
            ctx.problem(here, "expected a value, got nothing (null)", f"remove the line to use the default ({_show(spec.default)})")
            result = _FAILED
        elif value[name] is None:
            result = spec.default
        else:
            result = _run(spec.check, value[name], here, ctx)
        if result is _FAILED:
            failed = True
        else:
            values[name] = result
    if section.post is not None:
        section.post(values, path, ctx)
    if failed:
        return _FAILED
    values.pop("password", None)
    if "environ" in {f.name for f in dataclasses.fields(section.cls)}:
        values["environ"] = ctx.environ
    return section.cls(**values) if section is not _SCHEMA else values


# --------------------------------------------------------------------------- reading


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader; the node tree also gives each key's line for the messages."""


def _index_nodes(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], dups: list[tuple[KeyPath, int, int]]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            line = key_node.start_mark.line + 1
            here = path + (key_node.value,)
            if key_node.value in seen:
                dups.append((here, seen[key_node.value], line))
            seen[key_node.value] = line
            lines[here] = line
            _index_nodes(value_node, here, lines, dups)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[path + (index,)] = item.start_mark.line + 1
            _index_nodes(item, path + (index,), lines, dups)


def _parse(source: Path, problems: list[Problem]) -> tuple[Any, dict[KeyPath, int]]:
    """Read and parse the file; on failure append problems and return (None, {})."""
    try:
        raw = source.read_bytes()
    except FileNotFoundError:
        problems.append(Problem(str(source), "", "no such file", "fix the path, or leave the option out to use the built-in defaults"))
        return None, {}
    except IsADirectoryError:
        problems.append(Problem(str(source), "", "is a directory, not a file"))
        return None, {}
    except PermissionError:
        problems.append(Problem(str(source), "", f"not readable by user {_user()}", "run as root or the service's user"))
        return None, {}
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        problems.append(Problem(str(source), "", f"not UTF-8 text (byte {exc.start})"))
        return None, {}
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            problems.append(Problem(str(source), "", "the file is empty", "write at least one section, e.g. opensearch: or inputs: (see deploy/smtp-shipper.example.yml)"))
            return None, {}
        lines: dict[KeyPath, int] = {}
        dups: list[tuple[KeyPath, int, int]] = []
        _index_nodes(node, (), lines, dups)
        for path, first, second in dups:
            problems.append(Problem(f"{source}:{second}", _key(path), f"given twice (lines {first} and {second})", "keep one"))
        return loader.construct_document(node), lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else str(source)
        what = str(exc.problem or exc.context)
        if exc.problem and exc.context:
            at = f" at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1}" if exc.context_mark else ""
            what += f" ({exc.context}{at})"
        hint = "check the indentation and quoting near there; a value containing ': ' or '#' needs quotes"
        if "expected a single document" in str(exc.context):
            what, hint = "a second YAML document starts here", "keep one document: remove the '---' line and what follows, or merge it"
        problems.append(Problem(where, "", f"YAML syntax error: {what}", hint))
        return None, {}
    except yaml.YAMLError as exc:
        problems.append(Problem(str(source), "", f"YAML error: {exc}"))
        return None, {}
    finally:
        loader.dispose()


def config_path(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Path | None:
    """The file to read: ``path``, else $SMTP_SHIPPER_CONFIG, else DEFAULT_CONFIG_PATH if it
    exists, else None (built-in defaults)."""
    env = os.environ if env is None else env
    if path is not None and str(path) != "":
        return Path(path).absolute()
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]).absolute()
    try:
        return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None
    except PermissionError:  # /etc/smtp-shipper is there but closed to us: say so when reading
        return DEFAULT_CONFIG_PATH


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any, label: str, origins: dict[KeyPath, str]) -> None:
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        if node.get(part) is None:
            node[part] = {}
        if not isinstance(node[part], dict):
            return  # the file's value is already wrong; that problem is reported instead
        node = node[part]
    node[parts[-1]] = value
    origins[tuple(parts)] = label


def _env_layer(raw: dict[str, Any], env: Mapping[str, str], origins: dict[KeyPath, str]) -> None:
    for name, dotted in ENV_OVERRIDES:
        text = env.get(name, "").strip()
        if not text:  # unset and empty are the same (systemd's `Environment=X=`)
            continue
        if dotted == "opensearch.hosts":
            value: Any = [h.strip() for h in text.split(",") if h.strip()]
        elif name == "STATE_DIRECTORY":
            value = text.split(":")[0]  # systemd joins several StateDirectory= with ':'
        else:
            value = text
        _set_dotted(raw, dotted, value, f"environment {name}", origins)


def load(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    check_files: bool = True,
    log_warnings: bool = True,
) -> Settings:
    """Read, layer and validate the configuration; raise ConfigProblems listing every problem.

    ``path`` None: $SMTP_SHIPPER_CONFIG, else /etc/smtp-shipper/config.yml if it exists, else
    the built-in defaults. ``env`` defaults to os.environ (and is where passwords are read from
    later). ``overrides``: dotted keys from command-line flags, e.g. {"opensearch.hosts": [...]};
    they win over everything; a None value means "not given". ``check_files=False`` validates
    without touching the file system (for the example config or a config meant for another
    machine). Warnings (not errors) are in ``Settings.warnings`` and logged unless
    ``log_warnings`` is False.
    """
    env = os.environ if env is None else env
    source = config_path(path, env)
    problems: list[Problem] = []
    raw: Any = {}
    lines: dict[KeyPath, int] = {}
    if source is not None:
        raw, lines = _parse(source, problems)
        if problems:
            raise ConfigProblems(problems)
    if not isinstance(raw, dict):
        raise ConfigProblems([Problem(str(source), "", f"the top level must be a mapping (key: value lines), got {_show(raw)}")])
    origins: dict[KeyPath, str] = {}
    _env_layer(raw, env, origins)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(raw, dotted, value, "command line", origins)
    ctx = _Ctx(problems, [], source, lines, origins, env, check_files)
    values = _section(_SCHEMA, raw, (), ctx)
    if problems or values is _FAILED:
        raise ConfigProblems(sorted(problems, key=lambda p: p.line))
    if values.get("state_dir") is None:
        values["state_dir"] = default_state_dir(env)
    if values.get("host_name") is None:
        values["host_name"] = socket.gethostname()
    settings = Settings(**values, source=source, warnings=tuple(ctx.warnings))
    if log_warnings:
        for warning in settings.warnings:
            log.warning("%s", warning)
    return settings


# --------------------------------------------------------------------------- command line


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """--config PATH, --opensearch URL (repeatable) and --index-prefix, for every command that
    talks to OpenSearch; read them back with ``settings_from_args``."""
    group = parser.add_argument_group("configuration")
    group.add_argument(
        "--config",
        metavar="PATH",
        help=f"configuration file (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG_PATH} if it exists, else built-in defaults)",
    )
    group.add_argument(
        "--opensearch",
        metavar="URL",
        action="append",
        dest="opensearch_hosts",
        help="OpenSearch URL, e.g. https://search.example.net:9200 (repeatable; replaces opensearch.hosts)",
    )
    group.add_argument("--index-prefix", metavar="PREFIX", dest="index_prefix", help="replaces opensearch.index_prefix")


def settings_from_args(
    args: argparse.Namespace,
    *,
    overrides: Mapping[str, Any] | None = None,
    check_files: bool = True,
    log_warnings: bool = True,
) -> Settings:
    """``load()`` with the options of ``add_config_argument`` (plus any extra ``overrides``)."""
    merged: dict[str, Any] = {}
    hosts = getattr(args, "opensearch_hosts", None)
    if hosts:
        merged["opensearch.hosts"] = [h.strip() for item in hosts for h in item.split(",") if h.strip()]
    if getattr(args, "index_prefix", None) is not None:
        merged["opensearch.index_prefix"] = args.index_prefix
    merged.update(overrides or {})
    return load(getattr(args, "config", None), overrides=merged, check_files=check_files, log_warnings=log_warnings)
