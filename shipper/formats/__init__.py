"""Log formats: the only layout-aware code. Two kinds, one registry.

A *record format* turns each line into a ``Record`` (or a ``Defect``): a transcript event of
one SMTP conversation, which the shared stages group into sessions and follow (Xeams). A
*session format* (``SessionFormat``) is for logs that do not transcribe a conversation but say
what came of it, in lines of several processes joined by an id (Postfix: per queue ID): it
keeps that joining state itself and hands out finished ``Session``s. Either way, documents,
shipping, the daemon and checkpoints are shared; a format is one module here plus one line in
``_FORMATS``.

A record format is an object with:

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
shipping are shared.

A session format has ``name``, ``dataset`` and ``direction_from_name`` as above, and:

* ``start(times)`` — the ``LocalTime`` (configured zone) of timestamps that carry no zone;
* ``feed(data, offset, path, source, when) -> Fed`` — a block of whole lines as above, of the
  stream's file ``source`` (named ``path``); ``when`` is the file's modification time (POSIX),
  for layouts whose timestamps carry no year. Pure but for its own state: the same lines in
  the same order give the same sessions, whether fed at once or in pieces, before or after a
  ``snapshot``/``restore``. Nothing depends on the wall clock (no idle timers), so that a
  daemon and a ``parse`` of the same file agree;
* ``flush_all() -> list[Session]`` — at the end of the input: whatever it still holds back;
* ``snapshot() -> dict`` and ``restore(dict)`` — its state as JSON-ready data of its own (a
  copy that feeding on leaves alone), bounded in size,
  so that the daemon can save it with its checkpoints and continue after a restart exactly
  where it stopped (``shipper.pipeline.Pipeline.save_state``).
"""

from __future__ import annotations

import importlib
import re
from collections import Counter
from collections.abc import Hashable
from typing import Any, NamedTuple, Protocol, runtime_checkable

from shipper.localtime import LocalTime
from shipper.model import Defect, Direction, Record, Session

# name → module; each module has ``make_format()`` returning a ready format object.
_FORMATS: dict[str, str] = {
    "xeams": "shipper.formats.xeams",
    "postfix": "shipper.formats.postfix",
}


class Format(Protocol):
    name: str
    dataset: str

    def parse_block(self, data: bytes, offset: int, path: str) -> tuple[list[Record], list[Defect]]: ...

    def direction_from_name(self, path: str) -> Direction | None: ...


class Fed(NamedTuple):
    """What a session format made of a block of lines."""

    sessions: list[Session]  # finished by these lines, in the order they finished
    defects: list[Defect]
    lines: int  # lines read (blank lines not counted)
    skipped: int = 0  # well-formed lines of no interest (another program's): counted, no defect
    # events counted but not shipped (no recipient to ship them for), by name
    noted: Counter[str] | None = None


@runtime_checkable
class SessionFormat(Protocol):
    name: str
    dataset: str

    def start(self, times: LocalTime) -> None: ...

    def feed(self, data: bytes, offset: int, path: str, source: Hashable, when: float) -> Fed: ...

    def flush_all(self) -> list[Session]: ...

    def snapshot(self) -> dict[str, Any]: ...

    def restore(self, state: dict[str, Any]) -> None: ...

    def direction_from_name(self, path: str) -> Direction | None: ...


AnyFormat = Format | SessionFormat

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


def get(name: str) -> AnyFormat:
    """A fresh format object for ``name``; ``KeyError`` names the known formats."""
    try:
        module_name = _FORMATS[name]
    except KeyError:
        raise KeyError(f"unknown log format {name!r} (known: {', '.join(names())})") from None
    module = importlib.import_module(module_name)
    fmt: AnyFormat = module.make_format()
    return fmt
