"""Golden-file parser tests: ``tests/golden/<scenario>.log`` ↔ ``<scenario>.expected.jsonl``.

A scenario is a ``.log`` file, or a folder of ``.log`` files read in name order as one input
(a session continued across a rotation). Optional ``<scenario>.args.json`` gives
``{"format": ..., "direction": ..., "timezone": ..., "year": ...}`` (defaults: xeams, auto,
America/New_York, and for yearless timestamps the file's modification time). Defects the parser
reports are compared with ``<scenario>.defects.txt`` (absent = none expected).

Regenerate after an intended change, then review every diff by eye before committing::

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_golden.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from shipper.localtime import resolve_zone
from shipper.model import Direction
from shipper.pipeline import ParseOptions, ParseStats, documents_of_files

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def _scenarios() -> list[str]:
    names = [p.stem for p in GOLDEN.glob("*.log")]
    names += [p.name for p in GOLDEN.iterdir() if p.is_dir()]
    return sorted(names)


def _inputs(name: str) -> list[str]:
    if (GOLDEN / name).is_dir():
        return [f"{name}/{p.name}" for p in sorted((GOLDEN / name).glob("*.log"))]
    return [f"{name}.log"]


def _run(name: str) -> tuple[list[dict], list[str]]:
    args_file = GOLDEN / f"{name}.args.json"
    args = json.loads(args_file.read_text()) if args_file.exists() else {}
    direction = args.get("direction", "auto")
    options = ParseOptions(
        format=args.get("format", "xeams"),
        year=args.get("year"),
        direction=None if direction == "auto" else Direction(direction),
        tz=resolve_zone(args.get("timezone", "America/New_York")),
        host_name="golden-host",
    )
    stats = ParseStats()
    docs = list(documents_of_files(_inputs(name), options, stats))
    return docs, [str(d) for d in stats.kept_defects]


@pytest.mark.parametrize("name", _scenarios())
def test_golden(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scenario's documents and defects are exactly the reviewed expected ones."""
    monkeypatch.chdir(GOLDEN)  # log.file.path is relative, so goldens do not depend on the checkout
    docs, defects = _run(name)
    expected_file = GOLDEN / f"{name}.expected.jsonl"
    defects_file = GOLDEN / f"{name}.defects.txt"
    if UPDATE:
        expected_file.write_text("".join(json.dumps(d, sort_keys=True, ensure_ascii=False) + "\n"
                                         for d in docs), encoding="utf-8")
        if defects:
            defects_file.write_text("".join(d + "\n" for d in defects), encoding="utf-8")
        elif defects_file.exists():
            defects_file.unlink()
    expected = [json.loads(line) for line in expected_file.read_text(encoding="utf-8").splitlines()]
    expected_defects = (defects_file.read_text(encoding="utf-8").splitlines()
                        if defects_file.exists() else [])
    assert expected == docs
    assert expected_defects == defects


def test_every_scenario_has_expectations() -> None:
    """No input without a reviewed expected file (a new .log needs UPDATE_GOLDEN=1 and review)."""
    missing = [n for n in _scenarios() if not (GOLDEN / f"{n}.expected.jsonl").exists()]
    assert missing == []
