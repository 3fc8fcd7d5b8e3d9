"""OpenSearch Dashboards saved objects: render them for an index prefix, export, import.

The objects live in ``dashboards/saved-objects.yml.j2`` (Jinja2, then YAML, readable and
commented). Rendering turns the attributes Dashboards stores as JSON *strings* into strings
and yields the NDJSON of Stack Management → Saved objects → Import. With ``dashboards.url``
configured, ``smtp-shipper setup`` imports them through the saved objects API
(``POST /api/saved_objects/_import?overwrite=true``); ids are stable, so a second import
updates in place. It then makes ``<prefix>-*`` the default index pattern when Dashboards has
none (the advanced settings API, ``/api/opensearch-dashboards/settings``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import requests
import yaml

from shipper.assets import asset_dir
from shipper.errors import ConfigError, ConnectionFailed, RequestRefused
from shipper.settings import Settings
from shipper.setup import Outcome, Step, StepReport

log = logging.getLogger(__name__)

SAVED_OBJECTS_TEMPLATE = "saved-objects.yml.j2"
#: The outbound dashboard's id (after the prefix): the one the alerting monitors link to.
OUTBOUND_DASHBOARD = "dashboard-overview"
DEFAULT_PREFIX = "smtp-deliveries"
DASHBOARDS_ENV = "SMTP_SHIPPER_DASHBOARDS_DIR"


def assets_dir() -> Path:
    """Where the templates live: ``$SMTP_SHIPPER_DASHBOARDS_DIR``, else ``dashboards/`` of the
    source tree, else ``share/smtp-shipper/dashboards`` of the installation prefix."""
    return asset_dir("dashboards", env_var=DASHBOARDS_ENV, marker=SAVED_OBJECTS_TEMPLATE)


#: Attributes that Dashboards keeps as JSON text inside the saved object (dotted paths under
#: ``attributes``). The template writes them as YAML structures; rendering encodes them.
STRING_ENCODED = (
    "visState",
    "uiStateJSON",
    "panelsJSON",
    "optionsJSON",
    "fieldFormatMap",
    "fields",
    "kibanaSavedObjectMeta.searchSourceJSON",
)

#: The ``migrationVersion`` OpenSearch Dashboards 2.x writes on export, per type. A newer
#: value (a Kibana 7.11+ export) is refused by the import, so these are pinned.
MIGRATION_VERSIONS = {
    "index-pattern": "7.6.0",
    "search": "7.9.3",
    "visualization": "7.10.0",
    "dashboard": "7.9.3",
}


# --- filters, as Dashboards' filter bar stores them (meta + the query DSL it sends) ---------
def _filter_meta(kind: str, key: str, value: str, n: int, **extra: Any) -> dict[str, Any]:
    return {
        "alias": None,
        "negate": False,
        "disabled": False,
        "type": kind,
        "key": key,
        "value": value,
        **extra,
        "indexRefName": f"kibanaSavedObjectMeta.searchSourceJSON.filter[{n}].meta.index",
    }


def phrase_filter(key: str, value: str, n: int, *, controlled_by: str | None = None) -> dict[str, Any]:
    """A filter pill ``key: value`` (the n-th filter of its search source). ``controlled_by``
    names the input control that shows the pill's value as its own: an input control finds
    its filters by ``meta.controlledBy`` (OSD input_control_vis filter_manager.ts)."""
    extra: dict[str, Any] = {"controlledBy": controlled_by} if controlled_by else {}
    return {
        "meta": _filter_meta("phrase", key, value, n, params={"query": value}, **extra),
        "query": {"match_phrase": {key: value}},
        "$state": {"store": "appState"},
    }


def phrases_filter(key: str, values: list[str], n: int) -> dict[str, Any]:
    """A filter pill ``key is one of values``."""
    return {
        "meta": _filter_meta("phrases", key, ", ".join(values), n, params=list(values)),
        "query": {
            "bool": {
                "should": [{"match_phrase": {key: v}} for v in values],
                "minimum_should_match": 1,
            }
        },
        "$state": {"store": "appState"},
    }


def exists_filter(key: str, n: int) -> dict[str, Any]:
    """A filter pill ``key exists``."""
    return {
        "meta": _filter_meta("exists", key, "exists", n),
        "exists": {"field": key},
        "$state": {"store": "appState"},
    }


def filter_query(flt: Mapping[str, Any]) -> dict[str, Any]:
    """The query DSL a stored filter applies (what Dashboards sends), negation included."""
    body = {k: v for k, v in flt.items() if k not in ("meta", "$state")}
    query = body["query"] if set(body) == {"query"} else body
    if flt.get("meta", {}).get("negate"):
        return {"bool": {"must_not": [query]}}
    return dict(query)


# --- the index pattern's field list, from the index template --------------------------------
_OSD_TYPES = {
    "keyword": "string", "text": "string", "date": "date", "ip": "ip", "boolean": "boolean",
    "long": "number", "integer": "number", "short": "number", "byte": "number", "double": "number", "float": "number",
}
# The meta fields OSD lists in every index pattern (as it writes them itself).
_META_FIELDS = [
    {"name": "_id", "type": "string", "esTypes": ["_id"], "searchable": True, "aggregatable": True, "readFromDocValues": False},
    {"name": "_index", "type": "string", "esTypes": ["_index"], "searchable": True, "aggregatable": True, "readFromDocValues": False},
    {"name": "_score", "type": "number", "searchable": False, "aggregatable": False, "readFromDocValues": False},
    {"name": "_source", "type": "_source", "esTypes": ["_source"], "searchable": False, "aggregatable": False, "readFromDocValues": False},
    {"name": "_type", "type": "string", "esTypes": ["_type"], "searchable": True, "aggregatable": True, "readFromDocValues": False},
]


def mapping_fields(prefix: str) -> dict[str, str]:
    """Dotted field name → OpenSearch type, multi-fields included, from the component template
    ``smtp-shipper setup`` installs (mappings/, rendered by ``shipper.setup``)."""
    from shipper.setup import rendered_bodies  # the index template's owner

    bodies = rendered_bodies(prefix, replicas=0, refresh_interval="1s", retention_days=1)
    types: dict[str, str] = {}

    def walk(properties: Mapping[str, Any], path: str) -> None:
        for name, spec in properties.items():
            if "properties" in spec:
                walk(spec["properties"], f"{path}{name}.")
                continue
            types[f"{path}{name}"] = spec["type"]
            for sub, subspec in spec.get("fields", {}).items():
                types[f"{path}{name}.{sub}"] = subspec["type"]

    walk(bodies["mappings"]["template"]["mappings"]["properties"], "")
    return types


def index_pattern_fields(prefix: str) -> list[dict[str, Any]]:
    """The index pattern's field list, as Dashboards would cache it after a refresh.

    Shipped filled in rather than empty: ``setup`` usually runs before the first document is
    shipped, and a refresh against no indices would leave Dashboards with no fields at all,
    so the visualizations would fail on first open."""
    types = mapping_fields(prefix)
    fields = []
    for name, es_type in sorted(types.items()):
        indexed = es_type != "text"  # keyword, numbers, dates, ip, boolean: doc values
        spec: dict[str, Any] = {
            "count": 0, "name": name, "type": _OSD_TYPES.get(es_type, "unknown"), "esTypes": [es_type],
            "scripted": False, "searchable": True, "aggregatable": indexed, "readFromDocValues": indexed,
        }
        parent = name.rsplit(".", 1)[0]
        if "." in name and parent in types:
            # A multi-field of any parent (smtp.reply.text.keyword, email.to.address.lowercase),
            # as OSD marks it when it reads _field_caps (an object parent is not in ``types``).
            spec["subType"] = {"multi": {"parent": parent}}
        fields.append(spec)
    meta = [{"count": 0, "scripted": False, **m} for m in _META_FIELDS]
    return sorted(meta + fields, key=lambda f: f["name"])


# --- rendering -------------------------------------------------------------------------------
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(assets_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.globals.update(phrase_filter=phrase_filter, phrases_filter=phrases_filter, exists_filter=exists_filter)
    return env


def _encode(attributes: dict[str, Any], dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    node: Any = attributes
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict) and leaf in node and not isinstance(node[leaf], str):
        node[leaf] = json.dumps(node[leaf], separators=(",", ":"), ensure_ascii=False)


def render_saved_objects(prefix: str) -> list[dict[str, Any]]:
    """The saved objects for indices ``<prefix>-*``, string-encoded attributes as strings."""
    suffix = "" if prefix == DEFAULT_PREFIX else f" [{prefix}]"
    text = _environment().get_template(SAVED_OBJECTS_TEMPLATE).render(
        prefix=prefix, suffix=suffix, fields=index_pattern_fields(prefix)
    )
    objects: list[dict[str, Any]] = yaml.safe_load(text)
    for obj in objects:
        for dotted in STRING_ENCODED:
            _encode(obj["attributes"], dotted)
    return objects


def dashboard_url(base: str, dashboard_id: str) -> str:
    """Where Dashboards shows a saved dashboard (``SavedDashboard.getFullPath``:
    ``/app/dashboards#/view/<id>``), below ``base`` (``dashboards.url``, any base path in it)."""
    return f"{base.rstrip('/')}/app/dashboards#/view/{dashboard_id}"


def alert_views(settings: Settings) -> dict[str, Any]:
    """The outbound dashboard and the panels that show what the alerting monitors count, for
    their alert texts: titles as rendered (prefix suffix included), and the dashboard's URL
    when ``dashboards.url`` is set (else None: the text names the dashboard instead)."""
    prefix = settings.opensearch.index_prefix
    titles = {o["id"]: o["attributes"]["title"] for o in render_saved_objects(prefix)}

    def title(name: str) -> str:
        return str(titles[f"smtp-shipper-{prefix}-{name}"])

    board = f"smtp-shipper-{prefix}-{OUTBOUND_DASHBOARD}"
    return {
        "dashboard": title(OUTBOUND_DASHBOARD),
        "url": dashboard_url(settings.dashboards.url, board) if settings.dashboards.url else None,
        "verdicts": title("vis-verdict-share"),
        "domains": title("vis-rejections-by-domain"),
        "reasons": title("vis-reasons"),
    }


def to_ndjson(objects: Iterable[Mapping[str, Any]]) -> str:
    """One object a line, the format of the saved objects import."""
    return "".join(json.dumps(obj, ensure_ascii=False, sort_keys=True) + "\n" for obj in objects)


def render_ndjson(prefix: str) -> str:
    return to_ndjson(render_saved_objects(prefix))


def ndjson_filename(prefix: str) -> str:
    return f"smtp-shipper-{prefix}-saved-objects.ndjson"


def export(settings: Settings, directory: Path | str) -> list[Path]:
    """Write the rendered saved objects for ``setup --export DIR``; returns the files written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    prefix = settings.opensearch.index_prefix
    path = directory / ndjson_filename(prefix)
    path.write_text(render_ndjson(prefix), encoding="utf-8")
    return [path]


# --- the Dashboards HTTP API ----------------------------------------------------------------
@dataclass(frozen=True)
class ImportResult:
    """What ``POST /api/saved_objects/_import`` answered."""

    success: bool
    success_count: int
    errors: list[dict[str, Any]] = field(default_factory=list)

    def describe_errors(self) -> list[str]:
        lines = []
        for err in self.errors:
            what = err.get("error", {})
            detail = what.get("type", "error")
            if what.get("references"):
                missing = ", ".join(f"{r.get('type')}:{r.get('id')}" for r in what["references"])
                detail += f" (missing {missing})"
            elif what.get("message"):
                detail += f" ({what['message']})"
            lines.append(f"{err.get('type')} {err.get('id')} {err.get('title', '')!r}: {detail}")
        return lines


class DashboardsClient:
    """The few saved-objects API calls setup needs, with auth, TLS and tenant from config."""

    def __init__(self, section: Any, *, timeout: float = 30.0) -> None:
        if not section.url:
            raise ConfigError("dashboards.url is not set")
        self.base = section.url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        # Dashboards refuses API writes without this header (cross-site request forgery guard).
        self.session.headers["osd-xsrf"] = "true"
        if getattr(section, "tenant", None):
            self.session.headers["securitytenant"] = section.tenant
        if section.username:
            # The password is read now, from password_file / password_env (shipper.config).
            self.session.auth = (section.username, section.password() or "")
        if section.ca_certs:
            self.session.verify = str(section.ca_certs)
        else:
            self.session.verify = bool(section.verify_certs)

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        url = self.base + path
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise ConnectionFailed(
                f"OpenSearch Dashboards at {self.base}: TLS failure: {exc}",
                hint="set dashboards.ca_certs to the CA that signed its certificate",
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise ConnectionFailed(
                f"OpenSearch Dashboards at {self.base} is unreachable: {exc.__class__.__name__}",
                hint="check dashboards.url (scheme, host, port) and that Dashboards is running",
            ) from exc
        if response.status_code in (401, 403):
            raise ConnectionFailed(
                f"OpenSearch Dashboards at {self.base} refused our credentials (HTTP {response.status_code})",
                hint="check dashboards.username and the password (dashboards.password_file / password_env)",
            )
        if response.status_code >= 400:
            raise DashboardsRefused(method, path, response.status_code, _error_message(response))
        return response.json()

    def bulk_get(self, objects: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        body = [{"type": o["type"], "id": o["id"]} for o in objects]
        return list(self._request("POST", "/api/saved_objects/_bulk_get", json=body)["saved_objects"])

    def import_ndjson(self, ndjson: str, *, filename: str = "smtp-shipper.ndjson") -> ImportResult:
        """Import with overwrite. The API answers 200 even when objects fail: check ``success``.

        An object of a newer Dashboards (a ``migrationVersion`` above what this one knows) is
        not one failed object among others: the document migrator throws while the import
        builds its bulk request (``Boom.badData``, document_migrator.ts), before anything is
        written, and the API answers 422 for the whole file. That is said here as such."""
        try:
            answer = self._request(
                "POST",
                "/api/saved_objects/_import",
                params={"overwrite": "true"},
                files={"file": (filename, ndjson.encode("utf-8"), "application/ndjson")},
            )
        except DashboardsRefused as exc:
            if exc.status != 422:
                raise
            raise RequestRefused(
                f"OpenSearch Dashboards at {self.base} refused the whole import, nothing was imported "
                f"(HTTP 422): {exc.detail}",
                hint="an object belongs to a newer Dashboards than this one (its migrationVersion); "
                "smtp-shipper writes OpenSearch Dashboards 2.x objects, see docs/dashboards.md",
            ) from exc
        return ImportResult(
            success=bool(answer.get("success")),
            success_count=int(answer.get("successCount", 0)),
            errors=list(answer.get("errors", [])),
        )


    def user_settings(self) -> dict[str, Any]:
        """The advanced settings set by users, ``{key: {"userValue": ...}}``
        (``GET /api/opensearch-dashboards/settings``: ui_settings/routes/get.ts)."""
        return dict(self._request("GET", "/api/opensearch-dashboards/settings").get("settings", {}))

    def set_settings(self, changes: Mapping[str, Any]) -> None:
        """``POST /api/opensearch-dashboards/settings`` with ``{"changes": ...}`` (set_many.ts)."""
        self._request("POST", "/api/opensearch-dashboards/settings", json={"changes": dict(changes)})


class DashboardsRefused(RequestRefused):
    """Dashboards answered an HTTP error; ``status`` and ``detail`` (its message) kept apart."""

    def __init__(self, method: str, path: str, status: int, detail: str) -> None:
        super().__init__(f"OpenSearch Dashboards: {method} {path} answered HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


def _error_message(response: requests.Response) -> str:
    """The ``message`` of Dashboards' JSON error body (a Boom payload), else the text, cut."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])[:500]
    return response.text[:500]


def _decoded(attributes: Mapping[str, Any], *, type_: str) -> dict[str, Any]:
    """Attributes with JSON-text fields parsed, for a comparison blind to formatting."""
    out: dict[str, Any] = json.loads(json.dumps(attributes))
    for dotted in STRING_ENCODED:
        *parents, leaf = dotted.split(".")
        node: Any = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(leaf), str):
            try:
                node[leaf] = json.loads(node[leaf])
            except ValueError:
                pass
    if type_ == "index-pattern" and isinstance(out.get("fields"), list):
        # A refresh in Dashboards may reorder the list or count field use: compare by name.
        out["fields"] = sorted(
            ({k: v for k, v in f.items() if k != "count"} for f in out["fields"] if isinstance(f, dict)),
            key=lambda f: str(f.get("name")),
        )
    return out


def _differs(wanted: Mapping[str, Any], found: Mapping[str, Any]) -> bool:
    if "error" in found:
        return True
    if _decoded(wanted["attributes"], type_=wanted["type"]) != _decoded(found.get("attributes", {}), type_=wanted["type"]):
        return True
    def refs(obj: Mapping[str, Any]) -> list[tuple[str, str, str]]:
        return sorted((r["name"], r["type"], r["id"]) for r in obj.get("references", []))

    return refs(wanted) != refs(found)


class SavedObjectsImport:
    """Setup step: import the saved objects into Dashboards, unless they are there already."""

    def __init__(self, settings: Settings, *, client: DashboardsClient | None = None) -> None:
        self.prefix = settings.opensearch.index_prefix
        self.url = settings.dashboards.url
        self.name = f"dashboards saved objects for {self.prefix}-*"
        self._client = client or DashboardsClient(settings.dashboards, timeout=float(settings.opensearch.timeout))

    def run(self, *, dry_run: bool) -> StepReport:
        objects = render_saved_objects(self.prefix)
        found = self._client.bulk_get(objects)
        missing = [o for o, f in zip(objects, found) if "error" in f]
        changed = [o for o, f in zip(objects, found) if _differs(o, f)]
        if not changed:
            return StepReport(self.name, Outcome.UNCHANGED, f"{len(objects)} objects at {self.url}", dry_run)
        outcome = Outcome.CREATED if len(missing) == len(objects) else Outcome.UPDATED
        detail = f"{len(changed)} of {len(objects)} objects new or changed, at {self.url}"
        if dry_run:
            return StepReport(self.name, outcome, detail, dry_run)
        result = self._client.import_ndjson(to_ndjson(objects), filename=ndjson_filename(self.prefix))
        if not result.success:
            raise RequestRefused(
                f"OpenSearch Dashboards imported {result.success_count} of {len(objects)} saved objects; "
                + "; ".join(result.describe_errors()),
                hint="each object is listed with its error (a missing reference, an unsupported type); see docs/dashboards.md",
            )
        return StepReport(self.name, outcome, detail, dry_run)


def index_pattern_id(prefix: str) -> str:
    """The id of the index pattern ``<prefix>-*`` in the saved objects."""
    return f"smtp-shipper-{prefix}-index-pattern"


class DefaultIndexPattern:
    """Setup step: make ``<prefix>-*`` Dashboards' default index pattern when it has none.

    Discover opens on the default index pattern. A default set by someone is left alone; one
    naming an index pattern that no longer exists counts as none (Dashboards itself would
    pick the first pattern it finds). Runs after the import, so the pattern exists."""

    SETTING = "defaultIndex"

    def __init__(self, settings: Settings, *, client: DashboardsClient | None = None) -> None:
        self.prefix = settings.opensearch.index_prefix
        self.pattern_id = index_pattern_id(self.prefix)
        self.name = f"dashboards default index pattern {self.prefix}-*"
        self._client = client or DashboardsClient(settings.dashboards, timeout=float(settings.opensearch.timeout))

    def _current(self) -> str | None:
        """The default index pattern's id when it is set and names an existing pattern."""
        current = self._client.user_settings().get(self.SETTING) or {}
        value = current.get("userValue")
        if not value:
            return None
        if value == self.pattern_id:
            return str(value)
        (found,) = self._client.bulk_get([{"type": "index-pattern", "id": value}])
        return None if "error" in found else str(value)

    def run(self, *, dry_run: bool) -> StepReport:
        current = self._current()
        if current == self.pattern_id:
            return StepReport(self.name, Outcome.UNCHANGED, "already the default", dry_run)
        if current is not None:
            return StepReport(self.name, Outcome.UNCHANGED, f"Dashboards has another default ({current}); left as it is", dry_run)
        if not dry_run:
            self._client.set_settings({self.SETTING: self.pattern_id})
        return StepReport(self.name, Outcome.CREATED, "Dashboards had no default index pattern", dry_run)


@dataclass(frozen=True)
class _Skipped:
    name: str
    reason: str

    def run(self, *, dry_run: bool) -> StepReport:
        return StepReport(self.name, Outcome.SKIPPED, self.reason, dry_run)


def setup_steps(settings: Settings, client: Any = None) -> list[Step]:
    """The saved-objects import and the default index pattern, or a skipped step saying why
    (``client`` is unused: Dashboards is reached over its own URL, not through the OpenSearch
    client)."""
    name = f"dashboards saved objects for {settings.opensearch.index_prefix}-*"
    if not settings.dashboards.url:
        return [_Skipped(name, "dashboards.url not set; `setup --export DIR` writes the NDJSON to import by hand")]
    dashboards_client = DashboardsClient(settings.dashboards, timeout=float(settings.opensearch.timeout))
    return [
        SavedObjectsImport(settings, client=dashboards_client),
        DefaultIndexPattern(settings, client=dashboards_client),
    ]
