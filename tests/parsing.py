"""Test helpers: the real pipeline (``shipper.pipeline``) run on text, for tests that look at
records and sessions rather than at documents."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from datetime import tzinfo
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
