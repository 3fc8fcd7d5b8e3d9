"""`smtp-shipper check-config`: validate the configuration, say what would be used.

Prints ``OK: <file>`` and a short summary (OpenSearch hosts, index prefix, state directory, the
inputs and how many files each glob matches right now), then any warnings; ``--show`` adds the
effective configuration as YAML with secrets masked. Invalid configuration: every problem is
printed (by the CLI boundary) and the exit status is 3.
"""

from __future__ import annotations

import argparse

import yaml

from shipper import config, reasons
from shipper.errors import ExitStatus


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_config_argument(parser)
    parser.add_argument(
        "--show", action="store_true", help="also print the effective configuration as YAML (secrets masked)"
    )
    parser.add_argument(
        "--no-file-checks",
        action="store_true",
        help="do not look at the files the configuration names (for a config meant for another machine)",
    )


def summary(settings: config.Settings) -> list[str]:
    """The lines under ``OK:``: what the daemon would talk to, read and write."""
    os_ = settings.opensearch
    auth = f"user {os_.username}, password from {os_.password_source or 'nowhere'}" if os_.username else "no authentication"
    tls = f", CA {os_.ca_certs}" if os_.ca_certs else ""
    tls += ", certificates NOT verified" if not os_.verify_certs else ""
    lines = [
        f"opensearch: {', '.join(os_.hosts)} ({auth}{tls})",
        f"index prefix: {os_.index_prefix} (indices {os_.index_prefix}-YYYY.MM.DD)",
        f"state_dir: {settings.state_dir}",
        f"dashboards: {settings.dashboards.url or 'not configured'}",
        f"inputs: {len(settings.inputs) or 'none'}",
    ]
    for number, inp in enumerate(settings.inputs):
        zone = inp.timezone or "machine's time zone"
        lines.append(f"  [{number}] {inp.format}, {inp.direction}, {zone}, new files read from the {inp.start_at}")
        for pattern in inp.paths:
            count = len(config.InputSettings(paths=(pattern,), exclude=inp.exclude).files())
            lines.append(f"      {pattern}: {count} file{'' if count == 1 else 's'} now")
    return lines


def run(args: argparse.Namespace) -> int:
    settings = config.settings_from_args(args, check_files=not args.no_file_checks, log_warnings=False)
    if not args.no_file_checks and settings.reasons.rules_files:
        # Rule files are data the daemon compiles at start: a bad regex or an unknown reason must
        # surface here, before `run` starts (raises ConfigError naming file, rule and key).
        reasons.Classifier.from_files(settings.reasons.rules_files)
    print(f"OK: {settings.source or 'no configuration file, built-in defaults'}")
    for line in summary(settings):
        print(f"  {line}")
    for warning in settings.warnings:
        print(f"warning: {warning}")
    if args.show:
        print(yaml.safe_dump(settings.redacted_dict(), sort_keys=False, default_flow_style=False), end="")
    return int(ExitStatus.OK)
