"""`smtp-shipper setup` as a list of steps, each idempotent and each reporting one line.

A step compares what it would install with what is installed and says what it did:
``created``, ``updated``, ``unchanged`` or ``skipped (why)`` — with ``--dry-run`` it says
what it *would* do and changes nothing. Other modules contribute steps the same way
(``shipper.monitors.setup_steps``, ``shipper.dashboards.setup_steps``): a function
``setup_steps(settings, client) -> list[Step]``; ``shipper.commands.setup`` runs them all
in order, after the ones defined here.

The Step protocol::

    class MyStep:
        name = "alerting monitor smtp-deliveries rejections"
        def run(self, *, dry_run: bool) -> StepReport: ...

A step raises ``ShipperError`` subclasses for failures (unreachable, unauthorised, refused);
a missing optional feature (a plugin, a URL not configured) is ``Outcome.SKIPPED`` with the
reason, never an error.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class Outcome(enum.Enum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"

    def describe(self, *, dry_run: bool) -> str:
        if not dry_run or self in (Outcome.UNCHANGED, Outcome.SKIPPED):
            return self.value
        return {Outcome.CREATED: "would create", Outcome.UPDATED: "would update"}[self]


@dataclass(frozen=True)
class StepReport:
    """What one step did (or, with ``dry_run``, would do)."""

    name: str
    outcome: Outcome
    detail: str = ""
    dry_run: bool = False

    def line(self) -> str:
        text = f"{self.name}: {self.outcome.describe(dry_run=self.dry_run)}"
        return f"{text} ({self.detail})" if self.detail else text

    @property
    def changed(self) -> bool:
        return self.outcome in (Outcome.CREATED, Outcome.UPDATED)


@runtime_checkable
class Step(Protocol):
    """One idempotent installation step (see the module docstring)."""

    name: str

    def run(self, *, dry_run: bool) -> StepReport: ...
