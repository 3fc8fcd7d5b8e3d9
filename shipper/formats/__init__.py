"""Log formats: each turns log lines into ``Record``s (or ``Defect``s). The only layout-aware code.

A format is an object with:

* ``name`` and ``dataset`` (the ``event.dataset`` of its documents, e.g. ``xeams.smtp``);
* ``parse_block(data, offset, path) -> (records, defects)`` — pure; ``data`` is a block of whole
  lines as ``shipper.lines`` hands them out (each ends in ``"\\n"``, none is longer than the
  splitter's limit), ``offset`` its position in the file. Blank lines (``lines.is_blank``) give
  nothing; a line the format cannot read gives a ``Defect``; a line it can read but that is not
  clean (invalid UTF-8) gives its record *and* a defect;
* ``direction_from_name(path) -> Direction | None`` — what the file name says, if anything.

Records say what a line is to its session (connection, dialogue, end, note) and, for the
dialogue, who wrote it (``Side``); they never say whether a line is a reply: that follows from
who wrote it and the session's direction (``shipper.smtp``). Sessions, verdicts, documents and
shipping are shared; a new format is one new module here plus one line in ``_FORMATS``.
"""

from __future__ import annotations

import importlib
import re
from typing import Protocol

from shipper.model import Defect, Direction, Record

# name → module; each module has ``make_format()`` returning a ready format object.
_FORMATS: dict[str, str] = {
    "xeams": "shipper.formats.xeams",
}


class Format(Protocol):
    name: str
    dataset: str

    def parse_block(self, data: bytes, offset: int, path: str) -> tuple[list[Record], list[Defect]]: ...

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
