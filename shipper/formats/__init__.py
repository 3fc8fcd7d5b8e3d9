"""Log formats: each turns one raw log line into a transcript ``Event`` (or a ``Defect``).

A format is an object with:

* ``name`` and ``dataset`` (the ``event.dataset`` of its documents, e.g. ``xeams.smtp``);
* ``parse_line(raw: bytes, offset: int, path: str) -> Event | Defect`` — pure; ``raw`` is one
  line without its terminator (a trailing ``\\r`` is tolerated);
* ``direction_from_name(path) -> Direction | None`` — what the file name says, if anything.

Only this package knows log layouts; sessions, verdicts and documents are shared. A new
format is one new module here plus one line in ``_FORMATS``.
"""

from __future__ import annotations

import importlib
import re
from typing import Protocol

from shipper.model import Defect, Direction, Event

# name → module; each module exposes ``FORMAT`` (a ready format object).
_FORMATS: dict[str, str] = {
    "xeams": "shipper.formats.xeams",
}


class Format(Protocol):
    name: str
    dataset: str

    def parse_line(self, raw: bytes, offset: int, path: str) -> Event | Defect: ...

    def direction_from_name(self, path: str) -> Direction | None: ...


EXCERPT_CHARS = 160
_AUTH_ARG = re.compile(r"(\bAUTH\s+\S+\s+)\S+", re.IGNORECASE)


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """A line cut short for a defect message, with any AUTH argument masked (a line we could
    not parse may still carry credentials)."""
    text = _AUTH_ARG.sub(r"\1[redacted]", text[: limit * 2])
    return text if len(text) <= limit else text[:limit] + "…"


def names() -> list[str]:
    """The known format names, for ``--format`` choices and config validation."""
    return sorted(_FORMATS)


def get(name: str) -> Format:
    """A fresh format object for ``name``; ``KeyError`` names the known formats."""
    try:
        module_name = _FORMATS[name]
    except KeyError:
        raise KeyError(f"unknown log format {name!r} (known: {', '.join(names())})") from None
    module = importlib.import_module(module_name)
    fmt: Format = module.make_format()
    return fmt
