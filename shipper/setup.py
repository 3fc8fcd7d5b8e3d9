"""`smtp-shipper setup` as a list of steps, each idempotent and each reporting one line.

A step compares what it would install with what is installed and says what it did:
``created``, ``updated``, ``unchanged`` or ``skipped (why)`` — with ``--dry-run`` it says
what it *would* do and changes nothing. Other modules contribute steps the same way
(``shipper.monitors.setup_steps``, ``shipper.dashboards.setup_steps``): a function
``setup_steps(settings, client) -> list[Step]``; ``shipper.commands.setup`` runs them all
in order, after the ones defined here.

The Step protocol::

    class MyStep:
        name = "alerting monitor smtp-deliveries rejections"
        def run(self, *, dry_run: bool) -> StepReport: ...

A step raises ``ShipperError`` subclasses for failures (unreachable, unauthorised, refused);
a missing optional feature (a plugin, a URL not configured) is ``Outcome.SKIPPED`` with the
reason, never an error.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import jinja2
from opensearchpy import OpenSearch

from shipper.assets import asset_dir
from shipper.errors import ConfigError, ShipperError
from shipper.settings import Settings


class Outcome(enum.Enum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"

    def describe(self, *, dry_run: bool) -> str:
        if not dry_run or self in (Outcome.UNCHANGED, Outcome.SKIPPED):
            return self.value
        return {Outcome.CREATED: "would create", Outcome.UPDATED: "would update"}[self]


@dataclass(frozen=True)
class StepReport:
    """What one step did (or, with ``dry_run``, would do)."""

    name: str
    outcome: Outcome
    detail: str = ""
    dry_run: bool = False

    def line(self) -> str:
        text = f"{self.name}: {self.outcome.describe(dry_run=self.dry_run)}"
        return f"{text} ({self.detail})" if self.detail else text

    @property
    def changed(self) -> bool:
        return self.outcome in (Outcome.CREATED, Outcome.UPDATED)


@runtime_checkable
class Step(Protocol):
    """One idempotent installation step (see the module docstring)."""

    @property
    def name(self) -> str: ...  # a plain attribute satisfies this too

    def run(self, *, dry_run: bool) -> StepReport: ...


# --------------------------------------------------------------------------- rendering

MAPPINGS_ENV = "SMTP_SHIPPER_MAPPINGS_DIR"
DATE_FORMAT = "strict_date_optional_time||epoch_millis"


def mappings_dir() -> Path:
    """Where the Jinja2 templates live: ``$SMTP_SHIPPER_MAPPINGS_DIR``, else ``mappings/`` of
    the source tree, else ``share/smtp-shipper/mappings`` of the installation prefix."""
    return asset_dir("mappings", env_var=MAPPINGS_ENV, marker="index-template.json.j2")


def template_priority(prefix: str) -> int:
    """Longer prefix, higher priority: overlapping patterns of two installs ("smtp-*",
    "smtp-deliveries-*") never tie, and the more specific one wins. Two different prefixes of
    the same length cannot overlap."""
    return 100 + len(prefix)


def names(prefix: str) -> dict[str, str]:
    return {
        "settings": f"{prefix}-settings",
        "mappings": f"{prefix}-mappings",
        "index_template": prefix,
        "ism_policy": f"{prefix}-retention",
    }


def render(template: str, **variables: Any) -> dict[str, Any]:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(mappings_dir())),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # JSON, not HTML; values below are validated or json-encoded
        keep_trailing_newline=True,
    )
    text = env.get_template(template).render(**variables)
    try:
        return dict(json.loads(text))
    except json.JSONDecodeError as exc:  # a bug in a template, not a user error
        raise ShipperError(f"{template} does not render to JSON: {exc}") from exc


_PREFIX = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def rendered_bodies(prefix: str, *, replicas: int, refresh_interval: str, retention_days: int) -> dict[str, dict[str, Any]]:
    """Every body ``setup`` installs, keyed like ``names()``."""
    if not _PREFIX.match(prefix) or prefix.endswith("-"):
        raise ConfigError(f"opensearch.index_prefix: {prefix!r} is not a valid index name prefix (lowercase letters, digits, . _ -)")
    variables = {
        "prefix": prefix,
        "priority": template_priority(prefix),
        "replicas": int(replicas),
        "refresh_interval": str(refresh_interval),
        "retention_days": int(retention_days),
        "date_format": DATE_FORMAT,
    }
    return {
        "settings": render("component-settings.json.j2", **variables),
        "mappings": render("component-mappings.json.j2", **variables),
        "index_template": render("index-template.json.j2", **variables),
        "ism_policy": render("ism-policy.json.j2", **variables),
    }


# --------------------------------------------------------------------------- comparing


def _scalar(value: Any) -> Any:
    # OpenSearch gives settings back as strings ("1", "true"): compare in that form.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


def covers(installed: Any, wanted: Any) -> bool:
    """True when ``installed`` holds everything in ``wanted`` (dicts: a subset, recursively;
    lists: same length, element by element; scalars: equal as OpenSearch prints them).
    Keys OpenSearch adds by itself (a policy's ``last_updated_time``, an action's default
    ``retry``) do not count as a difference."""
    if isinstance(wanted, dict):
        return isinstance(installed, dict) and all(k in installed and covers(installed[k], v) for k, v in wanted.items())
    if isinstance(wanted, list):
        return (
            isinstance(installed, list)
            and len(installed) == len(wanted)
            and all(covers(i, w) for i, w in zip(installed, wanted))
        )
    return bool(_scalar(installed) == _scalar(wanted))


# --------------------------------------------------------------------------- plugins


def installed_plugins(client: OpenSearch) -> frozenset[str]:
    """Names (``opensearch-index-management``) and class names of the plugins on the cluster's
    nodes, from ``_nodes/plugins`` (``_cat/plugins`` leaves out some embedded plugins)."""
    found: set[str] = set()
    info = client.nodes.info(metric="plugins")
    for node in info.get("nodes", {}).values():
        for plugin in node.get("plugins", []):
            found.update(str(plugin.get(key, "")) for key in ("name", "classname") if plugin.get(key))
    return frozenset(found)


def has_plugin(plugins: frozenset[str], name: str, classname: str) -> bool:
    return name in plugins or classname in plugins


def has_ism(plugins: frozenset[str]) -> bool:
    return has_plugin(plugins, "opensearch-index-management", "org.opensearch.indexmanagement.IndexManagementPlugin")


# --------------------------------------------------------------------------- steps


@dataclass
class ComponentTemplateStep:
    client: OpenSearch
    template_name: str
    body: dict[str, Any]
    what: str

    @property
    def name(self) -> str:
        return f"component template {self.template_name} ({self.what})"

    def run(self, *, dry_run: bool) -> StepReport:
        installed = self.client.cluster.get_component_template(name=self.template_name, ignore=404)
        current = [t["component_template"] for t in installed.get("component_templates", [])]
        return _put_unless_covered(
            self.name, current[0] if current else None, self.body, dry_run,
            lambda: self.client.cluster.put_component_template(name=self.template_name, body=self.body))


@dataclass
class IndexTemplateStep:
    client: OpenSearch
    template_name: str
    body: dict[str, Any]

    @property
    def name(self) -> str:
        return f"index template {self.template_name} ({', '.join(self.body['index_patterns'])})"

    def run(self, *, dry_run: bool) -> StepReport:
        installed = self.client.indices.get_index_template(name=self.template_name, ignore=404)
        current = [t["index_template"] for t in installed.get("index_templates", [])]
        return _put_unless_covered(
            self.name, current[0] if current else None, self.body, dry_run,
            lambda: self.client.indices.put_index_template(name=self.template_name, body=self.body),
            "applies to indices created from now on")


def _put_unless_covered(name: str, current: dict[str, Any] | None, body: dict[str, Any], dry_run: bool,
                        put: Callable[[], object], detail_if_updated: str = "") -> StepReport:
    """Unchanged when what is installed already holds ``body``; else created or updated
    (unless ``dry_run``), with ``detail_if_updated`` said of an update."""
    if current is not None and covers(current, body):
        return StepReport(name, Outcome.UNCHANGED, dry_run=dry_run)
    if not dry_run:
        put()
    if current is None:
        return StepReport(name, Outcome.CREATED, dry_run=dry_run)
    return StepReport(name, Outcome.UPDATED, detail_if_updated, dry_run=dry_run)


ISM_MISSING = "retention not managed: Index Management plugin not installed"


@dataclass
class IsmPolicyStep:
    client: OpenSearch
    policy_id: str
    body: dict[str, Any]
    plugins: frozenset[str]
    retention_days: int

    @property
    def name(self) -> str:
        return f"ISM policy {self.policy_id} (delete after {self.retention_days} days)"

    def run(self, *, dry_run: bool) -> StepReport:
        if not has_ism(self.plugins):
            return StepReport(self.name, Outcome.SKIPPED, ISM_MISSING, dry_run=dry_run)
        path = f"/_plugins/_ism/policies/{self.policy_id}"
        installed = self.client.transport.perform_request("GET", path, params={"ignore": 404})
        current = installed.get("policy") if isinstance(installed, dict) else None
        if current and covers(current, self.body["policy"]):
            return StepReport(self.name, Outcome.UNCHANGED, dry_run=dry_run)
        outcome = Outcome.UPDATED if current else Outcome.CREATED
        if not dry_run:
            params = {}
            if current:  # optimistic concurrency: ISM refuses a blind overwrite
                params = {"if_seq_no": installed["_seq_no"], "if_primary_term": installed["_primary_term"]}
            self.client.transport.perform_request("PUT", path, params=params, body=self.body)
        detail = "indices already managed keep the version they started with" if current else ""
        return StepReport(self.name, outcome, detail, dry_run=dry_run)


def index_steps(settings: Settings, client: OpenSearch, plugins: frozenset[str] | None = None) -> list[Step]:
    """The steps of this module: component templates, index template, ISM policy."""
    s = settings.opensearch
    from shipper.opensearch import resolve_replicas

    replicas = resolve_replicas(s.replicas, client)
    bodies = rendered_bodies(
        s.index_prefix, replicas=replicas, refresh_interval=s.refresh_interval, retention_days=s.retention_days
    )
    n = names(s.index_prefix)
    if plugins is None:
        plugins = installed_plugins(client)
    return [
        ComponentTemplateStep(client, n["settings"], bodies["settings"], f"{replicas} replicas, refresh {s.refresh_interval}"),
        ComponentTemplateStep(client, n["mappings"], bodies["mappings"], "field types"),
        IndexTemplateStep(client, n["index_template"], bodies["index_template"]),
        IsmPolicyStep(client, n["ism_policy"], bodies["ism_policy"], plugins, s.retention_days),
    ]


def template_installed(client: OpenSearch, prefix: str) -> bool:
    return bool(client.indices.exists_index_template(name=names(prefix)["index_template"]))
