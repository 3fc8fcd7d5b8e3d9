"""OpenSearch Alerting monitors: render them for an index prefix and install them by name.

The bodies live in ``dashboards/monitors.yml.j2`` (thresholds and schedule from the config's
``alerting`` section). Installing is idempotent: a monitor is found by its stable name
(``POST _plugins/_alerting/monitors/_search``), created when absent, updated in place with
optimistic concurrency (``if_seq_no`` / ``if_primary_term``) when its body changed, and left
alone when it did not. Actions point at the Notifications channel ``alerting.channel_id``
(the action field is still called ``destination_id``; destinations are deprecated since
Alerting 2.0 and the channel's config_id takes their place). Without a channel the monitors
are installed without actions: alerts still show in Dashboards → Alerting.

"Changed" means the installed monitor does not hold everything our rendered body says
(``shipper.setup.covers``: dicts as subsets, lists element by element), because the plugin hands
a monitor back with fields of its own (ids of the triggers and actions, ``last_update_time``,
``data_sources``, a query's ``boost`` ...). For the subset test to hold, the template writes
queries in the form the plugin stores them (a term query as ``{"field": {"value": v}}``,
``track_total_hits`` as a number). A marker of our own in ``ui_metadata`` would not do: the
plugin's GET and search leave ``ui_metadata`` out of their answers except to OpenSearch
Dashboards' user agent.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import jinja2
import yaml
from opensearchpy import exceptions as os_exc

from shipper.dashboards import alert_views, assets_dir
from shipper.errors import ConnectionFailed, RequestRefused
from shipper.settings import Settings
from shipper.setup import Outcome, Step, StepReport, covers, has_plugin, installed_plugins

log = logging.getLogger(__name__)

MONITORS_TEMPLATE = "monitors.yml.j2"
API = "/_plugins/_alerting/monitors"


class AlertingUnavailable(Exception):
    """The cluster has no Alerting plugin (the monitors API is not there)."""


class NoMonitorsYet(RequestRefused):
    """The Alerting plugin's config index does not exist yet: no monitor was ever created."""


# How Alerting 2.19 answers a monitor search before its first monitor exists: HTTP 404 with
# {"type": "alerting_exception", "reason": "Configured indices are not found:
# [.opendistro-alerting-config]", "caused_by": {... "IndexNotFoundException ..."}}; older
# releases said index_not_found_exception.
_NO_CONFIG_INDEX = ("Configured indices are not found", "IndexNotFoundException", "index_not_found_exception")


def render_monitors(settings: Settings) -> list[dict[str, Any]]:
    """The monitor bodies for ``settings.opensearch.index_prefix``."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(assets_dir())),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    text = env.get_template(MONITORS_TEMPLATE).render(
        prefix=settings.opensearch.index_prefix,
        alerting=settings.alerting,
        channel_id=settings.alerting.channel_id,
        views=alert_views(settings),  # the dashboard and panels the alert texts name and link to
    )
    monitors: list[dict[str, Any]] = yaml.safe_load(text)
    return monitors


def is_installed_as(installed: dict[str, Any], body: dict[str, Any]) -> bool:
    """Does the monitor the plugin hands back (``GET``'s ``monitor``) say all that ``body`` says?"""
    return covers(installed, body)


def monitor_filename(name: str) -> str:
    """A file name for a monitor name: "smtp-shipper [p]: rejections" → "smtp-shipper-p-rejections.json"."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
    while "--" in safe:
        safe = safe.replace("--", "-")
    return safe.strip("-") + ".json"


def export(settings: Settings, directory: Path | str) -> list[Path]:
    """Write one JSON body per monitor (for ``setup --export DIR``); returns the files written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for body in render_monitors(settings):
        path = directory / monitor_filename(body["name"])
        path.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    return written


# --- the Alerting API -------------------------------------------------------------------------
def _call(client: Any, method: str, url: str, *, body: Any = None, params: dict[str, Any] | None = None) -> Any:
    try:
        return client.transport.perform_request(method, url, params=params, body=body)
    except os_exc.ConnectionError as exc:
        raise ConnectionFailed(f"OpenSearch is unreachable: {exc}") from exc
    except os_exc.TransportError as exc:
        status = exc.status_code if isinstance(exc.status_code, int) else 0
        text = json.dumps(exc.info)[:800] if exc.info else str(exc)
        if status in (400, 404, 405) and "no handler found" in text:
            raise AlertingUnavailable(text) from exc
        if status == 404 and any(marker in text for marker in _NO_CONFIG_INDEX):
            raise NoMonitorsYet(f"OpenSearch has no monitors yet ({method} {url}: HTTP 404): {text}") from exc
        if status in (401, 403):
            raise ConnectionFailed(
                f"OpenSearch refused {method} {url} (HTTP {status}): {text}",
                hint="the user needs the alerting_full_access role (or cluster:admin/opendistro/alerting/*)",
            ) from exc
        raise RequestRefused(f"OpenSearch refused {method} {url} (HTTP {status}): {text}") from exc


def find_monitors(client: Any, name: str) -> list[dict[str, Any]]:
    """Monitors with exactly this name: [{"_id", "_seq_no", "_primary_term", "monitor"}]."""
    query = {"size": 10, "seq_no_primary_term": True, "query": {"term": {"monitor.name.keyword": name}}}
    try:
        answer = _call(client, "POST", f"{API}/_search", body=query)
    except NoMonitorsYet:
        return []
    found = []
    for hit in answer.get("hits", {}).get("hits", []):
        source = hit.get("_source", {})
        monitor = source.get("monitor", source)
        if monitor.get("name") == name:
            found.append({"_id": hit["_id"], "monitor": monitor})
    return found


def get_monitor(client: Any, monitor_id: str) -> dict[str, Any]:
    """``GET`` a monitor: {"_id", "_seq_no", "_primary_term", "monitor"}."""
    return dict(_call(client, "GET", f"{API}/{monitor_id}"))


def create_monitor(client: Any, body: dict[str, Any]) -> str:
    return str(_call(client, "POST", API, body=body)["_id"])


def update_monitor(client: Any, monitor_id: str, body: dict[str, Any], *, seq_no: int, primary_term: int) -> None:
    params = {"if_seq_no": seq_no, "if_primary_term": primary_term}
    _call(client, "PUT", f"{API}/{monitor_id}", body=body, params=params)


def execute_monitor(client: Any, body: dict[str, Any], *, period_end_ms: int | None = None) -> dict[str, Any]:
    """Run a monitor body once without saving it or sending anything (``dryrun=true``).

    ``period_end_ms`` (epoch milliseconds) sets ``{{period_end}}``, the end of the window the
    queries look at; the API takes it as a time value with a unit."""
    params: dict[str, Any] = {"dryrun": "true"}
    if period_end_ms is not None:
        params["period_end"] = f"{int(period_end_ms)}ms"
    return dict(_call(client, "POST", f"{API}/_execute", body=body, params=params))


def has_alerting(plugins: frozenset[str]) -> bool:
    return has_plugin(plugins, "opensearch-alerting", "org.opensearch.alerting.AlertingPlugin")


class _PluginCheck:
    """Asks the cluster for its plugins once, when the first monitor step runs."""

    def __init__(self, client: Any, plugins: frozenset[str] | None = None) -> None:
        self.client = client
        self.plugins = plugins

    def available(self) -> bool:
        if self.plugins is None:
            self.plugins = installed_plugins(self.client)
        return has_alerting(self.plugins)


class MonitorStep:
    """Setup step: one monitor, created or updated by name."""

    def __init__(self, client: Any, body: dict[str, Any], plugin_check: _PluginCheck | None = None) -> None:
        self.client = client
        self.body = body
        self.name = f"alerting monitor {body['name']!r}"
        self._plugin_check = plugin_check

    def _no_channel_note(self) -> str:
        if any(t.get(k, {}).get("actions") for t in self.body["triggers"] for k in t):
            return ""
        return "without actions: alerting.channel_id is not set, alerts only show in Dashboards → Alerting"

    def run(self, *, dry_run: bool) -> StepReport:
        note = self._no_channel_note()
        if self._plugin_check is not None and not self._plugin_check.available():
            return StepReport(self.name, Outcome.SKIPPED, "the Alerting plugin is not installed on this cluster", dry_run)
        try:
            found = find_monitors(self.client, self.body["name"])
        except AlertingUnavailable:
            return StepReport(self.name, Outcome.SKIPPED, "the Alerting plugin is not installed on this cluster", dry_run)
        if not found:
            if not dry_run:
                monitor_id = create_monitor(self.client, self.body)
                note = "; ".join(filter(None, [f"id {monitor_id}", note]))
            return StepReport(self.name, Outcome.CREATED, note, dry_run)
        if len(found) > 1:
            ids = ", ".join(f["_id"] for f in found)
            log.warning("%d monitors are named %r (%s); only the first is kept up to date", len(found), self.body["name"], ids)
        current = get_monitor(self.client, found[0]["_id"])
        if is_installed_as(current.get("monitor", {}), self.body):
            return StepReport(self.name, Outcome.UNCHANGED, note, dry_run)
        if not dry_run:
            try:
                update_monitor(
                    self.client, current["_id"], self.body,
                    seq_no=current["_seq_no"], primary_term=current["_primary_term"],
                )
            except RequestRefused as exc:
                if "version_conflict" in str(exc):
                    raise RequestRefused(
                        f"monitor {self.body['name']!r} was changed by someone else while setup ran",
                        hint="run `smtp-shipper setup` again",
                    ) from exc
                raise
        return StepReport(self.name, Outcome.UPDATED, "; ".join(filter(None, [f"id {current['_id']}", note])), dry_run)


def setup_steps(settings: Settings, client: Any, plugins: frozenset[str] | None = None) -> list[Step]:
    """One step per monitor, in the order of the template. Without the Alerting plugin on the
    cluster (``_nodes/plugins``, asked once) each step is skipped, saying so."""
    check = _PluginCheck(client, plugins)
    return [MonitorStep(client, body, check) for body in render_monitors(settings)]
