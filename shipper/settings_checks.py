"""What a valid configuration value is: one check per kind of value (URL, glob, time zone, file...).

A check takes the YAML value, its key path and the validation context, and returns the typed
value for the settings, or raises ``Invalid(message, hint)``; ``shipper.config`` turns that into
a problem naming file, line and key. Checks are attached to the settings fields that use them
(``shipper.settings``), so they know nothing of the schema: they only judge one value.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shlex
import ssl
import stat
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal, Protocol, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")
KeyPath = tuple[str | int, ...]
MASK = "***"
#: The OpenSearch password from the environment; wins over password_file / password_env.
PASSWORD_ENV = "SMTP_SHIPPER_OPENSEARCH_PASSWORD"


class Invalid(Exception):
    """The value is wrong: what is wrong, and a hint how to fix it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class Context(Protocol):
    """What a check may know about the validation run (``shipper.config`` provides it)."""

    check_files: bool  # False: judge the values only, never look at the file system
    environ: Mapping[str, str]

    def base_dir(self, path: KeyPath) -> Path: ...  # relative paths are relative to this

    def problem(self, path: KeyPath, message: str, hint: str | None = None) -> None: ...

    def warn(self, path: KeyPath, message: str) -> None: ...


Check = Callable[[object, KeyPath, Context], T]


def key_text(path: KeyPath) -> str:
    """``("inputs", 0, "paths")`` → ``inputs[0].paths``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def show(value: object) -> str:
    """How a wrong value is quoted in a message: JSON-ish, cut short."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + '..."'


def user() -> str:
    """The name of the user we run as, for "not readable by user X"."""
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):  # pragma: no cover - not POSIX, or a uid without a name
        return str(os.getuid()) if hasattr(os, "getuid") else "this user"


# --------------------------------------------------------------------------- plain values


def string(what: str = "a string") -> Check[str]:
    def check(value: object, path: KeyPath, ctx: Context) -> str:
        if not isinstance(value, str) or not value.strip():
            raise Invalid(f"expected {what}, got {show(value)}")
        return value.strip()

    return check


def optional(check: Check[T]) -> Check[T | None]:
    """The same check for a key whose default is "none" (mypy: the field is ``T | None``)."""
    return check


def boolean(value: object, path: KeyPath, ctx: Context) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {show(value)}")
    return value


def integer(minimum: int, maximum: int | None = None, *, why: str = "") -> Check[int]:
    """A whole number from ``minimum`` to ``maximum``; ``why`` says where the maximum comes from."""
    def check(value: object, path: KeyPath, ctx: Context) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"expected a whole number, got {show(value)}")
        if value < minimum:
            raise Invalid(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise Invalid(f"must be at most {maximum}{f' ({why})' if why else ''}, got {value}")
        return value

    return check


POSITIVE = integer(1)


def number(minimum: float = 0.0, *, positive: bool = True, maximum: float | None = None) -> Check[float]:
    """Seconds and such: int or float; ``positive`` excludes the minimum itself."""

    def check(value: object, path: KeyPath, ctx: Context) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid(f"expected a number, got {show(value)}")
        if value < minimum or (positive and value == minimum):
            raise Invalid(f"must be {'greater than' if positive else 'at least'} {minimum:g}, got {value:g}")
        if maximum is not None and value > maximum:
            raise Invalid(f"must be at most {maximum:g}, got {value:g}")
        return float(value)

    return check


def choice(*choices: str) -> Check[str]:
    def check(value: object, path: KeyPath, ctx: Context) -> str:
        if isinstance(value, str) and value.strip().lower() in choices:
            return value.strip().lower()
        close = difflib.get_close_matches(str(value).lower(), choices, n=1)
        hint = f'did you mean "{close[0]}"?' if close else None
        raise Invalid(f"expected one of {', '.join(choices)}, got {show(value)}", hint)

    return check


def log_format(value: object, path: KeyPath, ctx: Context) -> str:
    """The name of a log format ``shipper.formats`` knows."""
    from shipper import formats  # late: formats pulls in the parser, which config users may not need

    return choice(*formats.names())(value, path, ctx)


def list_of(item: Check[T], *, non_empty: bool, what: str) -> Check[tuple[T, ...]]:
    """A list (a single string is taken as a list of one); each bad element is its own problem."""

    def check(value: object, path: KeyPath, ctx: Context) -> tuple[T, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise Invalid(f"expected a list of {what}, got {show(value)}")
        if non_empty and not value:
            raise Invalid(f"expected at least one {what.rstrip('s')}, got an empty list")
        out = []
        for index, element in enumerate(value):
            try:
                out.append(item(element, path + (index,), ctx))
            except Invalid as exc:
                ctx.problem(path + (index,), exc.message, exc.hint)
        return tuple(out)

    return check


# --------------------------------------------------------------------------- OpenSearch values


def masked_url(text: str) -> str:
    return re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:" + MASK + "@", text)


def url(value: object, path: KeyPath, ctx: Context) -> str:
    example = "https://host:9200" if path[0] == "opensearch" else "https://host:5601"
    if not isinstance(value, str):
        raise Invalid(f"expected a URL like {example}, got {show(value)}")
    text = value.strip()
    try:
        parts = urlsplit(text)
        _ = parts.port  # read only so that urlsplit validates it
    except ValueError:
        raise Invalid(f"expected a URL like {example}, got {show(masked_url(text))} (bad port)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        if text.isdigit():
            hint = f'a port alone is not enough: write scheme, host and port, e.g. "https://search.example.net:{text}"'
        elif "://" not in text:
            hint = f'write the scheme too: "http://{text}" or "https://{text}"'
        else:
            hint = "the scheme must be http or https"
        raise Invalid(f"expected a URL like {example}, got {show(masked_url(text))}", hint)
    if parts.username is not None or parts.password is not None:
        raise Invalid(
            f"the URL contains credentials: {show(masked_url(text))}",
            "remove them from the URL; use username and password_file (or password_env) instead",
        )
    if parts.query or parts.fragment:
        raise Invalid(f"a URL with a query or fragment is not supported, got {show(text)}")
    return text.rstrip("/")


def index_prefix(value: object, path: KeyPath, ctx: Context) -> str:
    text = string("an index name prefix")(value, path, ctx)
    # OpenSearch index names: lower case, no \ / * ? " < > | , # : or space, not starting with - _ +
    if text != text.lower():
        raise Invalid(f"index names must be lower case, got {show(text)}", f'use "{text.lower()}"')
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", text) or len(text) > 200:
        raise Invalid(
            f"not a valid OpenSearch index name prefix: {show(text)}",
            "use lower-case letters, digits, '-', '_' and '.', starting with a letter or digit",
        )
    return text


def replicas(value: object, path: KeyPath, ctx: Context) -> int | Literal["auto"]:
    if value == "auto":
        return "auto"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise Invalid(f'expected "auto" or a whole number >= 0, got {show(value)}')


def time_value(value: object, path: KeyPath, ctx: Context) -> str:
    # OpenSearch time units (docs: "API conventions / time units"); -1 disables refresh.
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if text is None or not re.fullmatch(r"-1|\d+(\.\d+)?(nanos|micros|ms|s|m|h|d)", text):
        raise Invalid(f"expected an OpenSearch time value like 5s, 1m or -1, got {show(value)}", "add a unit: ms, s, m, h or d")
    return text


# --------------------------------------------------------------------------- secrets


def env_name(value: object, path: KeyPath, ctx: Context) -> str:
    # Never quote the value: a password pasted here by mistake must not reach a terminal or log.
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value.strip()):
        raise Invalid(
            "expected the NAME of an environment variable (letters, digits, _); the value is not shown",
            "write the variable's name here, e.g. SMTP_SHIPPER_OPENSEARCH_PASSWORD, and the password into the variable",
        )
    return value.strip()


#: The message and hint for a ``password:`` key, which no section has.
NO_PASSWORD = (
    "a password is never written into the configuration file (the value is not shown)",
    "put it into a file named by password_file (mode 600), or into an environment variable named by password_env",
)


def private_mode(path: Path, mode: int) -> None:
    """A password file must be private to its owner, as ssh requires of a private key: any
    permission for group or others is refused (whoever runs us, root included)."""
    if mode & 0o077:
        who = " and ".join(w for w, bits in (("its group", 0o070), ("other users", 0o007)) if mode & bits)
        raise Invalid(
            f"password file {path} is accessible by {who} (mode {stat.S_IMODE(mode):04o}); it must be private to its owner",
            f"make it private: chmod 600 {shlex.quote(str(path))} (and chown it to the service's user if it is not the owner)",
        )


# --------------------------------------------------------------------------- files and paths


def resolve(value: object, path: KeyPath, ctx: Context) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"expected a file path, got {show(value)}")
    p = Path(os.path.expanduser(value.strip()))
    return p if p.is_absolute() else ctx.base_dir(path) / p


def file(kind: str, *, secret: bool = False, pem: bool = False) -> Check[Path]:
    """A path to a file that must exist and be readable now (unless check_files is off)."""

    def check(value: object, path: KeyPath, ctx: Context) -> Path:
        p = resolve(value, path, ctx)
        if not ctx.check_files:
            return p
        if Path(os.path.expanduser(str(value).strip())).is_absolute():
            relative_hint = "create it, or fix the path"
        else:
            relative_hint = f"fix the path; it was taken relative to {ctx.base_dir(path)}"
        try:
            st = p.stat()
        except FileNotFoundError:
            raise Invalid(f"{kind} {p} does not exist", relative_hint) from None
        except PermissionError:
            raise Invalid(f"{kind} {p}: permission denied", "run check-config as the service's user") from None
        if not stat.S_ISREG(st.st_mode):
            raise Invalid(f"{kind} {p} is not a regular file", relative_hint)
        if secret:
            private_mode(p, st.st_mode)
        try:
            with open(p, "rb") as fh:
                head = fh.read(1 << 20)
        except PermissionError:
            raise Invalid(
                f"{kind} {p} is not readable by user {user()}",
                "give the service's user read access (chown/chmod), or run check-config as that user",
            ) from None
        if secret and not head.strip():
            raise Invalid(f"{kind} {p} is empty", "write the password into it (one line)")
        if pem:
            try:
                ssl.create_default_context(cafile=str(p))
            except (ssl.SSLError, ValueError):
                raise Invalid(f"{kind} {p} holds no PEM certificate", "it must contain -----BEGIN CERTIFICATE----- blocks") from None
        return p

    return check


def state_dir(value: object, path: KeyPath, ctx: Context) -> Path:
    p = resolve(value, path, ctx)
    if ctx.check_files and p.exists():
        if not p.is_dir():
            raise Invalid(f"{p} exists and is not a directory")
        if not os.access(p, os.W_OK | os.X_OK):
            ctx.warn(path, f"{p} is not writable by user {user()} (fine if the service runs as another user)")
    return p


# --------------------------------------------------------------------------- inputs


def zone_name(value: object, path: KeyPath, ctx: Context) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"expected an IANA time zone name like America/New_York, got {show(value)}")
    name = value.strip()
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        close = difflib.get_close_matches(name.replace(" ", "_"), zoneinfo.available_timezones(), n=1)
        hint = f'did you mean "{close[0]}"?' if close else "see the TZ identifiers of the tz database (timedatectl list-timezones)"
        raise Invalid(f"unknown time zone {show(name)}", hint) from None
    return name


def glob(value: object, path: KeyPath, ctx: Context) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"expected a file path or glob, got {show(value)}")
    text = os.path.expanduser(value.strip())
    if not os.path.dirname(text):
        raise Invalid(
            f"the glob {show(text)} has no directory part",
            f'write where the files are, e.g. "/opt/Xeams/logs/{text}"',
        )
    return text if os.path.isabs(text) else str(ctx.base_dir(path) / text)


#: Matched against the whole path or the file name: "*.gz" needs no directory part.
exclude = string("a glob")


# --------------------------------------------------------------------------- rules across keys
# Checks that need several keys of one section (``shipper.settings.RULES`` says which section
# has which); they get the keys that passed their own check, so one run reports everything.


def password_rules(values: Mapping[str, object], path: KeyPath, ctx: Context) -> None:
    if values.get("password_file") is not None and values.get("password_env") is not None:
        ctx.problem(path + ("password_env",), "password_file and password_env are both set", "keep one of them")
    name = values.get("password_env")
    if isinstance(name, str) and not ctx.environ.get(name):
        ctx.warn(path + ("password_env",), f"the environment variable {name} is not set here (it must be for the service)")


def opensearch_rules(values: Mapping[str, object], path: KeyPath, ctx: Context) -> None:
    password_rules(values, path, ctx)
    cert, key = values.get("client_cert"), values.get("client_key")
    if (cert is None) != (key is None):
        have, missing = ("client_cert", "client_key") if cert is not None else ("client_key", "client_cert")
        ctx.problem(path + (have,), f"{have} is set but {missing} is not", f"mutual TLS needs both: set {missing} too")
    if ctx.check_files and isinstance(cert, Path) and isinstance(key, Path):
        _check_key_pair(cert, key, path + ("client_key",), ctx)
    if values.get("verify_certs") is False:
        ctx.warn(path + ("verify_certs",), "TLS certificates are NOT verified; anyone in between can read the traffic")
    hosts = values.get("hosts")
    if values.get("username") and isinstance(hosts, tuple) and any(_plain_http_off_host(str(h)) for h in hosts):
        ctx.warn(path + ("hosts",), "a password would be sent unencrypted over http://; use https://")
    if values.get("username") and not (values.get("password_file") or values.get("password_env") or ctx.environ.get(PASSWORD_ENV)):
        ctx.warn(path + ("username",), f"username is set but no password: set password_file, password_env or ${PASSWORD_ENV}")


def _check_key_pair(cert: Path, key: Path, path: KeyPath, ctx: Context) -> None:
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


def bulk_rules(values: Mapping[str, object], path: KeyPath, ctx: Context) -> None:
    low, high = values.get("initial_backoff"), values.get("max_backoff")
    if isinstance(low, float) and isinstance(high, float) and high < low:
        ctx.problem(path + ("max_backoff",), f"max_backoff ({high:g}) is smaller than initial_backoff ({low:g})")


def input_rules(values: Mapping[str, object], path: KeyPath, ctx: Context) -> None:
    paths, exclude = values.get("paths"), values.get("exclude")
    if ctx.check_files and isinstance(paths, tuple) and paths and isinstance(exclude, tuple):
        if not matching_files(paths, exclude):
            ctx.warn(path + ("paths",), "matches no file right now (the files are picked up when they appear)")


def matching_files(paths: Sequence[str], exclude: Sequence[str]) -> list[Path]:
    """The regular files the globs match right now, minus the excluded ones, sorted."""
    from shipper.follow import expand_globs  # the daemon's own expansion, so the counts agree

    return [Path(p) for p in expand_globs(paths, exclude) if os.path.isfile(p)]
