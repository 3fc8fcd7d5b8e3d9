"""Where the shipped Jinja2 templates (mappings/, dashboards/) are found.

In a checkout they sit beside the package; an installed package has them under
``<prefix>/share/smtp-shipper/`` (pyproject's data-files). An environment variable overrides both.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def asset_dir(kind: str, *, env_var: str, marker: str) -> Path:
    """``$env_var``, else ``<kind>/`` of the source tree, else ``share/smtp-shipper/<kind>`` of the
    installation prefix: the first that holds ``marker``. Falls back to the source tree, so that
    a missing template is reported with a path a developer recognises."""
    if os.environ.get(env_var):
        return Path(os.environ[env_var])
    candidates = [
        Path(__file__).resolve().parent.parent / kind,
        Path(sys.prefix) / "share" / "smtp-shipper" / kind,
    ]
    for candidate in candidates:
        if (candidate / marker).is_file():
            return candidate
    return candidates[0]
