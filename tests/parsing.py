"""Test helpers: the real pipeline (``shipper.pipeline``) run on text, for tests that look at
records and sessions rather than at documents."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from datetime import tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from shipper import formats
from shipper.inputs import stream_chunks
from shipper.lines import Chunk
from shipper.model import Defect, Direction, Record, Session
from shipper.pipeline import ParseOptions, ParseStats, Pipeline

NY = ZoneInfo("America/New_York")


def pipeline(direction: Direction | None = Direction.OUTBOUND, tz: tzinfo = NY,
             clock: Callable[[], float] = time.monotonic, **options: object) -> Pipeline:
    return Pipeline(formats.get("xeams"), ParseOptions(tz=tz, **options),  # type: ignore[arg-type]  # test knobs
                    ParseStats(), direction=direction, clock=clock)


def feed(p: Pipeline, text: str | bytes, path: str = "x.log", offset: int = 0) -> list[Session]:
    """The sessions that ``text`` (whole lines) finishes when fed to ``p`` as one chunk."""
    data = text.encode() if isinstance(text, str) else text
    return [s.session for s in p.feed(path, path, Chunk(offset, data))]


def sessions(text: str | bytes, direction: Direction | None = Direction.OUTBOUND,
             tz: tzinfo = NY, path: str = "x.log") -> list[Session]:
    """Every session of ``text`` read as a file is: those it finishes, then those left open
    at its end."""
    p = pipeline(direction, tz)
    data = text.encode() if isinstance(text, str) else text
    done = [s for chunk in stream_chunks(io.BytesIO(data)) for s in p.feed(path, path, chunk)]
    return [s.session for s in done + p.flush_all()]


def records(text: str | bytes, path: str = "x.log") -> tuple[list[Record], list[Defect]]:
    data = text.encode() if isinstance(text, str) else text
    return formats.get("xeams").parse_block(data, 0, path)


def documents(text: str | bytes, direction: Direction | None = Direction.OUTBOUND,
              tz: tzinfo = NY, path: str = "x.log") -> tuple[list[dict[str, Any]], list[Defect]]:
    """The documents of ``text`` read as a file is, and the defects reported."""
    p = pipeline(direction, tz, host_name="h")
    data = text.encode() if isinstance(text, str) else text
    done = [s for chunk in stream_chunks(io.BytesIO(data)) for s in p.feed(path, path, chunk)]
    return [d for s in done + p.flush_all() for d in s.documents], p.stats.kept_defects


def xeams(sid: int, *steps: str, inbound: bool = False, start: str = "2024-03-20 10:00:00") -> str:
    """Xeams lines of one session: '> ' what the client wrote, '< ' what the server wrote, as
    PRODUCT.md reads the tags ("S <--" the logging server, "C -->" its peer); other steps as
    they are. One line every 10 ms from ``start``."""
    client, server = ("C --> ", "S <-- ") if inbound else ("S <-- ", "C --> ")
    out = []
    for i, step in enumerate(steps):
        ms = i * 10
        stamp = f"{start[:-2]}{ms // 1000 + int(start[-2:]):02d},{ms % 1000:03d}"
        if step.startswith("> "):
            step = client + step[2:]
        elif step.startswith("< "):
            step = server + step[2:]
        out.append(f"{stamp} - [{sid:>10}] {step}\n")
    return "".join(out)
