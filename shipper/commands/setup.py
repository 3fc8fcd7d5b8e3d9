"""`smtp-shipper setup`: install or update index templates, the ISM policy, and what other
modules contribute (alerting monitors, Dashboards saved objects). Idempotent: a second run
reports every step "unchanged"."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from shipper import config, dashboards, monitors
from shipper.errors import ExitStatus
from shipper.opensearch import display_hosts, make_client, translate_errors
from shipper.setup import Step, index_steps, installed_plugins, names, rendered_bodies


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_config_argument(parser)
    parser.add_argument(
        "--dry-run", action="store_true", help="compare with what is installed and print what would change; change nothing"
    )
    parser.add_argument(
        "--export",
        metavar="DIR",
        help="write what setup would install (templates, ISM policy, Dashboards NDJSON) into DIR, "
        "for review or installation by hand; contacts no cluster",
    )


def export(settings: config.Settings, directory: Path) -> list[Path]:
    """Render every body into ``directory`` (replicas ``auto`` is written as 1: no cluster to ask)."""
    s = settings.opensearch
    replicas = 1 if s.replicas == "auto" else s.replicas
    bodies = rendered_bodies(
        s.index_prefix, replicas=replicas, refresh_interval=s.refresh_interval, retention_days=s.retention_days
    )
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for key, name in names(s.index_prefix).items():
        kind = {"settings": "component-template", "mappings": "component-template"}.get(key, key.replace("_", "-"))
        path = directory / f"{kind}.{name}.json"
        path.write_text(json.dumps(bodies[key], indent=2) + "\n", encoding="utf-8")
        written.append(path)
    written.extend(Path(p) for p in dashboards.export(settings, directory))
    written.extend(Path(p) for p in monitors.export(settings, directory))
    return written


def run(args: argparse.Namespace) -> int:
    settings = config.settings_from_args(args)
    if args.export:
        for path in export(settings, Path(args.export)):
            print(f"wrote {path}")
        return int(ExitStatus.OK)
    os_settings = settings.opensearch
    client = make_client(os_settings)
    counts: Counter[str] = Counter()
    with translate_errors(os_settings, "setup"):
        info = client.info()  # unreachable, TLS and credential problems surface here, first
        version = info.get("version", {}).get("number", "?")
        print(f"OpenSearch {version} at {display_hosts(os_settings)}")
        plugins = installed_plugins(client)
        steps: list[Step] = [
            *index_steps(settings, client, plugins),
            *monitors.setup_steps(settings, client, plugins),  # the plugin list, asked once above
            *dashboards.setup_steps(settings, client),
        ]
        for step in steps:
            report = step.run(dry_run=args.dry_run)
            counts[report.outcome.value] += 1
            print(report.line())
            sys.stdout.flush()
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
    print(f"{'dry run, nothing changed: ' if args.dry_run else ''}{summary}")
    return int(ExitStatus.OK)
