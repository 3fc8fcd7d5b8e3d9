"""Configuration: YAML → validated once → frozen, typed settings, with key paths in every error.

* ``load(path, env=..., overrides=...)`` reads the file with PyYAML's safe loader, layers the
  environment and the command-line overrides on top, validates everything in one pass and returns
  a frozen ``Settings`` (``shipper.settings``). Every problem found is collected, and all of them
  are raised together as one ``ConfigProblems`` (a ``shipper.errors.ConfigError``, exit status 3),
  each saying ``<file>:<line>: <key.path[index]>: <what is wrong>`` plus a hint.
* The schema is not written here: it is derived from the settings classes, whose fields carry
  each key's type, default and check. This module only walks them.
* **Precedence**, key by key: command-line flag > environment (``ENV_OVERRIDES``) > file >
  built-in default. The state directory has one more, highest, layer: ``$STATE_DIRECTORY``
  (set by systemd's ``StateDirectory=``). The file is ``--config``, else ``$SMTP_SHIPPER_CONFIG``,
  else ``DEFAULT_CONFIG_PATH`` if it exists, else none (``config_path``).
* Relative paths in the file are relative to the file's directory; relative paths from the
  environment or the command line are relative to the current directory.
* Keys that were once valid (``DEPRECATED``) still load, with a warning that they are ignored.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Final, TypeVar, cast

import yaml

from shipper.errors import ConfigError
from shipper.settings import (
    CHECK,
    ITEMS,
    PASSWORD_ENV,
    RULES,
    SECTION,
    AlertingSettings,
    BulkSettings,
    DashboardsSettings,
    DeferralRateSettings,
    InputSettings,
    OpenSearchSettings,
    PipelineSettings,
    ReasonsSettings,
    Settings,
    ThresholdSettings,
    default_state_dir,
)
from shipper.settings_checks import NO_PASSWORD, Invalid, KeyPath, key_text, show, user

__all__ = [
    "CONFIG_ENV", "DEFAULT_CONFIG_PATH", "DEPRECATED", "ENV_OVERRIDES", "PASSWORD_ENV",
    "AlertingSettings", "BulkSettings", "ConfigProblems", "DashboardsSettings", "DeferralRateSettings",
    "InputSettings", "OpenSearchSettings", "PipelineSettings", "Problem", "ReasonsSettings", "Settings",
    "ThresholdSettings", "add_config_argument", "all_keys", "config_path", "load", "settings_from_args",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Read when neither ``--config`` nor ``$SMTP_SHIPPER_CONFIG`` names a file, if it exists.
DEFAULT_CONFIG_PATH = Path("/etc/smtp-shipper/config.yml")
CONFIG_ENV = "SMTP_SHIPPER_CONFIG"
#: Environment variable → dotted key, applied in this order (later wins): systemd's
#: $STATE_DIRECTORY comes after SMTP_SHIPPER_STATE_DIR on purpose. (The password variable,
#: PASSWORD_ENV, is read when the password is, never stored.)
ENV_OVERRIDES: tuple[tuple[str, str], ...] = (
    ("SMTP_SHIPPER_OPENSEARCH_HOSTS", "opensearch.hosts"),
    ("SMTP_SHIPPER_OPENSEARCH_USERNAME", "opensearch.username"),
    ("SMTP_SHIPPER_INDEX_PREFIX", "opensearch.index_prefix"),
    ("SMTP_SHIPPER_DASHBOARDS_URL", "dashboards.url"),
    ("SMTP_SHIPPER_LOG_LEVEL", "log_level"),
    ("SMTP_SHIPPER_STATE_DIR", "state_dir"),
    ("STATE_DIRECTORY", "state_dir"),
)
#: Keys that were once documented and are read by nothing now. A file that still sets one keeps
#: loading, with a warning naming the key; the value is not checked. Dotted key → why.
DEPRECATED: dict[str, str] = {
    "pipeline.flush_interval": "the daemon sends every finished session at once, no bulk request waits for a timer",
}


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


@dataclass
class _Ctx:
    """One validation run: where each key came from, and what was found (``settings_checks.Context``)."""

    source: Path | None
    lines: dict[KeyPath, int]  # key path → line in the file
    origins: dict[KeyPath, str]  # key path → "environment X" / "command line"
    environ: Mapping[str, str]
    check_files: bool
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def _origin(self, path: KeyPath) -> str | None:
        return next((self.origins[path[:n]] for n in range(len(path), 0, -1) if path[:n] in self.origins), None)

    def _line(self, path: KeyPath) -> int | None:
        return next((self.lines[path[:n]] for n in range(len(path), -1, -1) if path[:n] in self.lines), None)

    def where(self, path: KeyPath) -> str:
        origin = self._origin(path)
        if origin is not None:
            return origin
        if self.source is None:
            return "built-in defaults"
        line = self._line(path)
        return str(self.source) if line is None else f"{self.source}:{line}"

    def base_dir(self, path: KeyPath) -> Path:
        if self._origin(path) is not None or self.source is None:
            return Path.cwd()
        return self.source.parent

    def problem(self, path: KeyPath, message: str, hint: str | None = None) -> None:
        line = 1 << 30 if self._origin(path) is not None else (self._line(path) or 0)  # environment, flags: last
        self.problems.append(Problem(self.where(path), key_text(path), message, hint, line))

    def warn(self, path: KeyPath, message: str) -> None:
        self.warnings.append(f"{self.where(path)}: {key_text(path)}: {message}" if path else f"{self.where(path)}: {message}")


# --------------------------------------------------------------------------- the schema, derived

_FAILED: Final = object()  # a key whose problem is already recorded
_COMPUTED: Final = object()  # a key left to its machine-dependent default


def _keys(cls: type) -> dict[str, dataclasses.Field[object]]:
    """The fields of a settings class that are configuration keys, by name."""
    return {f.name: f for f in dataclasses.fields(cls) if f.metadata.keys() & {CHECK, SECTION, ITEMS}}


def _section_default(f: dataclasses.Field[object]) -> object:
    """The section with its defaults, from the factory every ``section()`` field has."""
    if f.default_factory is MISSING:
        raise TypeError(f"{f.name} is declared as a section without a factory")
    return f.default_factory()


def all_keys(cls: type = Settings, prefix: str = "") -> Iterator[str]:
    """Every key, dotted (``opensearch.bulk.max_docs``, ``inputs[].paths``)."""
    for name, f in _keys(cls).items():
        yield prefix + name
        if SECTION in f.metadata:
            yield from all_keys(type(_section_default(f)), f"{prefix}{name}.")
        elif ITEMS in f.metadata:
            yield from all_keys(f.metadata[ITEMS], f"{prefix}{name}[].")


def _unknown_key_hint(name: str, known: Mapping[str, object], path: KeyPath) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    if close:
        return f'did you mean "{close[0]}"?'
    elsewhere = [k for k in all_keys() if k.rsplit(".", 1)[-1] == name]
    if elsewhere:
        return f"{name} belongs under {elsewhere[0].rsplit('.', 1)[0]}: ({elsewhere[0]})"
    where = f"under {key_text(path)}" if path else "at the top level"
    return f"known keys {where}: {', '.join(known)}"


def _other_keys(raw: dict[object, object], known: Mapping[str, object], path: KeyPath, ctx: _Ctx) -> None:
    """Keys of the file that are no field: the password itself, deprecated keys, typos."""
    for name in (str(n) for n in raw if n not in known):
        here = path + (name,)
        dotted = "".join(f".{p}" if isinstance(p, str) else "[]" for p in here).lstrip(".")
        if name == "password" and "password_file" in known:
            ctx.problem(here, *NO_PASSWORD)
        elif dotted in DEPRECATED:
            ctx.warn(here, f"no longer used and ignored ({DEPRECATED[dotted]}); remove it")
        else:
            ctx.problem(here, "unknown key", _unknown_key_hint(name, known, path))


def _value(f: dataclasses.Field[object], raw: dict[object, object], path: KeyPath, ctx: _Ctx, defaults: object) -> object:
    """One key of a section: validated, its default, or _FAILED; ``defaults`` is the section's
    default instance (None for a list item, whose keys have their field defaults)."""
    name, here = f.name, path + (f.name,)
    if SECTION in f.metadata:
        inner = _section_default(f)
        built = _section(type(inner), raw.get(name), here, ctx, inner)
        return _FAILED if built is None else built
    if ITEMS in f.metadata:
        return _items(f.metadata[ITEMS], raw.get(name), here, ctx)
    default = f.default if defaults is None else getattr(defaults, name)
    computed = default is MISSING and f.default_factory is not MISSING
    if name not in raw and default is MISSING and not computed:
        ctx.problem(path, f"{name} is required")
        return _FAILED
    if raw.get(name) is None:  # left out, or written without a value
        if default is MISSING and not computed:
            ctx.problem(here, f"{name} is required, got nothing (null)")
            return _FAILED
        if name in raw and not (computed or default is None or isinstance(default, tuple)):
            ctx.problem(here, "expected a value, got nothing (null)", f"remove the line to use the default ({show(default)})")
            return _FAILED
        return _COMPUTED if computed else default
    try:
        return f.metadata[CHECK](raw[name], here, ctx)
    except Invalid as exc:
        ctx.problem(here, exc.message, exc.hint)
        return _FAILED


def _values(cls: type, raw: object, path: KeyPath, ctx: _Ctx, defaults: object = None) -> dict[str, object] | None:
    """The validated keys of one section (None when any failed: the problems are in ``ctx``)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        what = "the file's top level" if not path else "this section"
        ctx.problem(path, f"{what} must be a mapping (key: value lines), got {show(raw)}")
        return None
    known = _keys(cls)
    _other_keys(raw, known, path, ctx)
    values = {name: _value(f, raw, path, ctx, defaults) for name, f in known.items()}
    rule = RULES.get(cls)
    if rule is not None:
        rule({k: v for k, v in values.items() if v is not _FAILED}, path, ctx)
    if _FAILED in values.values():
        return None
    return {k: v for k, v in values.items() if v is not _COMPUTED}


def _section(cls: type[T], raw: object, path: KeyPath, ctx: _Ctx, defaults: object = None) -> T | None:
    values = _values(cls, raw, path, ctx, defaults)
    if values is None:
        return None
    if "environ" in {f.name for f in dataclasses.fields(cls)}:  # type: ignore[arg-type]  # a settings class
        values["environ"] = ctx.environ  # where password() looks later
    return cast(Callable[..., T], cls)(**values)


def _items(cls: type, raw: object, path: KeyPath, ctx: _Ctx) -> object:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        ctx.problem(path, f"expected a list of inputs (- paths: [...]), got {show(raw)}", "start each input with '- paths:'")
        return _FAILED
    built = [_section(cls, element, path + (index,), ctx) for index, element in enumerate(raw)]
    return tuple(b for b in built if b is not None)


# --------------------------------------------------------------------------- reading the file


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


def _read_text(source: Path) -> str:
    try:
        raw = source.read_bytes()
    except FileNotFoundError:
        raise ConfigProblems([Problem(str(source), "", "no such file", "fix the path, or leave the option out to use the built-in defaults")]) from None
    except IsADirectoryError:
        raise ConfigProblems([Problem(str(source), "", "is a directory, not a file")]) from None
    except PermissionError:
        raise ConfigProblems([Problem(str(source), "", f"not readable by user {user()}", "run as root or the service's user")]) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigProblems([Problem(str(source), "", f"not UTF-8 text (byte {exc.start})")]) from None


def _syntax_problem(source: Path, exc: yaml.MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else str(source)
    what = str(exc.problem or exc.context)
    if exc.problem and exc.context:
        at = f" at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1}" if exc.context_mark else ""
        what += f" ({exc.context}{at})"
    hint = "check the indentation and quoting near there; a value containing ': ' or '#' needs quotes"
    if "expected a single document" in str(exc.context):
        what, hint = "a second YAML document starts here", "keep one document: remove the '---' line and what follows, or merge it"
    return Problem(where, "", f"YAML syntax error: {what}", hint)


def _parse(source: Path) -> tuple[object, dict[KeyPath, int]]:
    """The file's data and each key's line; ConfigProblems when it cannot be read or parsed."""
    loader = _Loader(_read_text(source))
    try:
        node = loader.get_single_node()
        if node is None:
            hint = "write at least one section, e.g. opensearch: or inputs: (see deploy/smtp-shipper.example.yml)"
            raise ConfigProblems([Problem(str(source), "", "the file is empty", hint)])
        lines: dict[KeyPath, int] = {}
        dups: list[tuple[KeyPath, int, int]] = []
        _index_nodes(node, (), lines, dups)
        if dups:
            raise ConfigProblems([Problem(f"{source}:{second}", key_text(path), f"given twice (lines {first} and {second})", "keep one")
                                  for path, first, second in dups])
        return loader.construct_document(node), lines
    except yaml.MarkedYAMLError as exc:
        raise ConfigProblems([_syntax_problem(source, exc)]) from None
    except yaml.YAMLError as exc:
        raise ConfigProblems([Problem(str(source), "", f"YAML error: {exc}")]) from None
    finally:
        loader.dispose()


# --------------------------------------------------------------------------- layers and load


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


def _set_dotted(raw: dict[str, object], dotted: str, value: object, label: str, origins: dict[KeyPath, str]) -> None:
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        if node.get(part) is None:
            node[part] = {}
        child = node[part]
        if not isinstance(child, dict):
            return  # the file's value is already wrong; that problem is reported instead
        node = child
    node[parts[-1]] = value
    origins[tuple(parts)] = label


def _layer(raw: dict[str, object], env: Mapping[str, str], overrides: Mapping[str, object]) -> dict[KeyPath, str]:
    """Put the environment, then the command line, over the file's values (the precedence);
    returns where each replaced key came from."""
    origins: dict[KeyPath, str] = {}
    for name, dotted in ENV_OVERRIDES:
        text = env.get(name, "").strip()
        if not text:  # unset and empty are the same (systemd's `Environment=X=`)
            continue
        value: object = text
        if dotted == "opensearch.hosts":
            value = [h.strip() for h in text.split(",") if h.strip()]
        elif name == "STATE_DIRECTORY":
            value = text.split(":")[0]  # systemd joins several StateDirectory= with ':'
        _set_dotted(raw, dotted, value, f"environment {name}", origins)
    for dotted, value in overrides.items():
        if value is not None:
            _set_dotted(raw, dotted, value, "command line", origins)
    return origins


def load(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
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
    raw, lines = _parse(source) if source is not None else ({}, {})
    if not isinstance(raw, dict):
        raise ConfigProblems([Problem(str(source), "", f"the top level must be a mapping (key: value lines), got {show(raw)}")])
    ctx = _Ctx(source, lines, _layer(raw, env, overrides or {}), env, check_files)
    values = _values(Settings, raw, (), ctx)
    if ctx.problems or values is None:
        raise ConfigProblems(sorted(ctx.problems, key=lambda p: p.line))
    values.setdefault("state_dir", default_state_dir(env))
    values.setdefault("host_name", socket.gethostname())
    settings = cast(Callable[..., Settings], Settings)(**values, source=source, warnings=tuple(ctx.warnings))
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
    overrides: Mapping[str, object] | None = None,
    check_files: bool = True,
    log_warnings: bool = True,
) -> Settings:
    """``load()`` with the options of ``add_config_argument`` (plus any extra ``overrides``)."""
    merged: dict[str, object] = {}
    hosts = getattr(args, "opensearch_hosts", None)
    if hosts:
        merged["opensearch.hosts"] = [h.strip() for item in hosts for h in item.split(",") if h.strip()]
    if getattr(args, "index_prefix", None) is not None:
        merged["opensearch.index_prefix"] = args.index_prefix
    merged.update(overrides or {})
    return load(getattr(args, "config", None), overrides=merged, check_files=check_files, log_warnings=log_warnings)
