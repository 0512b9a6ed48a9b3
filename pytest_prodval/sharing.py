"""One k6 run per scenario per pytest invocation, also across xdist workers.

`--dist loadgroup` does not keep a scenario's items on one worker (REFERENCE §3), so the
first process that needs a scenario's outcome runs k6 under a file lock in a folder the
controller made; the others wait for the lock and read the outcome file it wrote.
"""

from __future__ import annotations

import fcntl
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from .artifacts import write_atomic
from .models import CriterionResult, SloReport

ErrorKind = Literal["preflight", "k6", "results", "config"]


class RunOutcome(BaseModel):
    """What one scenario run produced for its test items."""

    scenario_id: str
    report: SloReport | None = None
    report_path: str | None = None
    error: str | None = None
    error_kind: ErrorKind | None = None
    hint: str | None = None

    def result(self, name: str) -> CriterionResult | None:
        """The CriterionResult of a criterion, or None."""
        if self.report is None:
            return None
        return next((c for c in self.report.criteria if c.name == name), None)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class SharedRuns:
    """Outcomes of this pytest invocation, shared between the controller and its workers."""

    def __init__(self, folder: Path | None) -> None:
        self.owned = folder is None
        self.folder = Path(tempfile.mkdtemp(prefix="prodval-")) if folder is None else folder
        self.local: dict[str, RunOutcome] = {}

    def get(self, scenario_id: str, produce: Callable[[], RunOutcome]) -> RunOutcome:
        """The scenario's outcome; `produce` runs in exactly one process, the first to ask."""
        cached = self.local.get(scenario_id)
        if cached is not None:
            return cached
        outcome_file = self.folder / f"{scenario_id}.outcome.json"
        with _file_lock(self.folder / f"{scenario_id}.lock"):
            if outcome_file.exists():
                outcome = RunOutcome.model_validate_json(outcome_file.read_bytes())
            else:
                outcome = produce()
                write_atomic(outcome_file, outcome.model_dump_json())
        self.local[scenario_id] = outcome
        return outcome

    def peek(self, scenario_id: str) -> RunOutcome | None:
        """The outcome if some process produced it already (never runs anything)."""
        if scenario_id in self.local:
            return self.local[scenario_id]
        path = self.folder / f"{scenario_id}.outcome.json"
        return RunOutcome.model_validate_json(path.read_bytes()) if path.exists() else None

    def all(self) -> list[RunOutcome]:
        """Every outcome produced in this invocation, by any process."""
        outcomes = dict(self.local)
        for path in sorted(self.folder.glob("*.outcome.json")):
            outcome = RunOutcome.model_validate_json(path.read_bytes())
            outcomes.setdefault(outcome.scenario_id, outcome)
        return list(outcomes.values())

    def remove(self) -> None:
        """Delete the folder (the process that made it)."""
        if self.owned:
            shutil.rmtree(self.folder, ignore_errors=True)
