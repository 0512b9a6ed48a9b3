"""Artifacts of a run (plan §6): names, atomic writes, SLO reports, and finding them again."""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .models import CriterionResult, SloReport

_STAMP = re.compile(r"^(?P<id>[A-Z][A-Z0-9_]*)_(?P<env>[a-z0-9-]+)_(?P<ts>\d{8}T\d{6}Z)")


def timestamp(now: datetime | None = None) -> str:
    """Artifact timestamp, UTC, sortable: 20261127T024723Z."""
    return (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")


def utc_now_iso() -> str:
    """Current UTC time in ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class RunPaths:
    """Every artifact path of one scenario run, named as in plan §6."""

    folder: Path
    stem: str  # <SCENARIO_ID>_<env>_<timestamp>

    @classmethod
    def create(cls, folder: Path, scenario_id: str, env: str, stamp: str) -> RunPaths:
        """Paths for a new run; the folder is created."""
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder, f"{scenario_id}_{env}_{stamp}")

    @property
    def raw(self) -> Path:
        """Raw k6 points (NDJSON, gzip)."""
        return self.folder / f"{self.stem}.json.gz"

    @property
    def summary(self) -> Path:
        """k6 handleSummary data."""
        return self.folder / f"{self.stem}_summary.json"

    @property
    def slo_report(self) -> Path:
        """Every criterion judged."""
        return self.folder / f"{self.stem}_slo_report.json"

    @property
    def ws_raw(self) -> Path:
        """The WebSocket companion's raw points."""
        return self.folder / f"websocket_{self.stem}.json"

    @property
    def ws_report(self) -> Path:
        """The WebSocket companion's criteria."""
        return self.folder / f"websocket_{self.stem}_slo_report.json"

    @property
    def k6_log(self) -> Path:
        """k6's own log (JSON lines)."""
        return self.folder / f"{self.stem}_k6.log"

    @property
    def html(self) -> Path:
        """The HTML report."""
        return self.folder / f"{self.stem}_report.html"

    @property
    def dashboard(self) -> Path:
        """k6's web-dashboard export."""
        return self.folder / f"{self.stem}_k6_dashboard.html"

    @property
    def server_metrics(self) -> Path:
        """The target's own metrics, scraped during the run."""
        return self.folder / f"{self.stem}_server_metrics.json"

    @property
    def k8s_manifests(self) -> Path:
        """The Kubernetes objects a k6-operator run created (the Secret's keys only)."""
        return self.folder / f"{self.stem}_k8s_manifests.json"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # read once at import: os.umask is process-wide and not thread-safe


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a file so that readers see the old or the new content, never half of it.

    The file gets the mode any new file gets (0666 minus the umask), not the private 0600
    of the temporary file it is renamed from.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(report: SloReport, path: Path) -> None:
    """Write an SLO report atomically."""
    write_atomic(path, report.model_dump_json(indent=2))


def load_report(path: Path) -> SloReport:
    """Read an SLO report; a bad file raises ValueError naming it."""
    try:
        return SloReport.model_validate_json(path.read_bytes())
    except (OSError, ValidationError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable SLO report: {str(exc).splitlines()[0]}") from None


def load_summary(path: Path) -> dict[str, Any]:
    """Read a k6 summary written by the script's handleSummary; ValueError if unusable."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ValueError(f"{path}: k6 wrote no summary") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: summary is not valid JSON (truncated?): {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise ValueError(f"{path}: not a k6 summary (no 'metrics')")
    return data


def websocket_subset(report: SloReport, names: set[str]) -> SloReport:
    """The WebSocket companion's own report: the same run, only its criteria."""
    criteria: list[CriterionResult] = [c for c in report.criteria if c.name in names]
    subset = report.model_copy(update={"criteria": criteria, "series": []})
    return subset.model_copy(update={"verdict": subset.decide()})


def parse_stem(name: str) -> tuple[str, str, str] | None:
    """(scenario id, env, timestamp) from an artifact file name, or None."""
    match = _STAMP.match(name)
    return (match["id"], match["env"], match["ts"]) if match else None


def run_stem(name: str) -> str:
    """`<ID>_<env>_<ts>` from any artifact name of that run (report, summary, raw file)."""
    for suffix in ("_slo_report.json", "_summary.json", ".json.gz", ".json"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def find_runs(path: Path) -> dict[str, Path]:
    """The latest SLO report or summary per scenario id under `path` (file or folder).

    A file may be a report, a summary or a raw file: its siblings are found by name.
    """
    if path.is_file():
        parsed = parse_stem(path.name)
        if parsed is None:
            raise ValueError(f"{path}: not a pytest-prodval artifact name (<SCENARIO_ID>_<env>_<timestamp>...)")
        return {parsed[0]: path}
    candidates: list[tuple[tuple[str, bool], str, Path]] = []
    for candidate in [*path.glob("*_summary.json"), *path.glob("*_slo_report.json")]:
        parsed = parse_stem(candidate.name)
        if parsed is not None:  # a report beats the summary of the same run
            candidates.append(((parsed[2], candidate.name.endswith("_slo_report.json")), parsed[0], candidate))
    latest: dict[str, Path] = {}
    for _, scenario_id, candidate in sorted(candidates):
        latest[scenario_id] = candidate
    return latest


def write_run_artifacts(session: Any, scenario: Any, paths: RunPaths, report: SloReport) -> None:
    """Step 7: the SLO report, the companion's report, the HTML report; secrets scrubbed first."""
    report.artifacts = {
        kind: path.name
        for kind, path in (("raw", paths.raw), ("summary", paths.summary), ("k6_log", paths.k6_log),
                           ("websocket_raw", paths.ws_raw), ("dashboard", paths.dashboard),
                           ("server_metrics", paths.server_metrics))
        if path.exists()
    }
    report.artifacts["slo_report"] = paths.slo_report.name
    if paths.k8s_manifests.exists():
        report.artifacts["k8s_manifests"] = paths.k8s_manifests.name
    instance_files: list[Path] = []
    if len(report.instances) > 1:  # each instance's own files (one instance keeps the run's names)
        for record in report.instances:
            for kind, name in (("raw", record.raw), ("summary", record.summary), ("k6_log", record.log)):
                if name:
                    report.artifacts[f"{kind}_instance_{record.index}"] = name
                    if kind != "raw":
                        instance_files.append(paths.folder / name)
    companion = {c.name for c in report.criteria if c.name.startswith("ws_")}
    if scenario.websocket_companion.enabled:
        report.artifacts["websocket_report"] = paths.ws_report.name
        write_report(websocket_subset(report, companion), paths.ws_report)
    for path in (paths.k6_log, paths.summary, paths.dashboard, paths.server_metrics, *instance_files):
        if path.exists():
            session.redactor.redact_file(path)
    _write_html(session, report, paths.html)
    from .ci_reports import write_run_reports

    report.artifacts.update(write_run_reports(report, paths.folder, paths.stem, session.redactor))
    write_report(report, paths.slo_report)
    session.config.hook.pytest_prodval_run_finished(config=session.config, report=report, paths=paths)


def rewrite_report(session: Any, report: SloReport, report_path: Path) -> None:
    """Write a report again after the run (e.g. the bypass went off at teardown): HTML, then the
    JSON, so the JSON's artifact list says whether the HTML could be written."""
    html = report.artifacts.get("html")
    if html:
        _write_html(session, report, report_path.parent / html)
    write_report(report, report_path)


def _write_html(session: Any, report: SloReport, path: Path) -> None:
    """The HTML report; one that cannot be rendered costs a warning, never the run's verdicts
    (the JSON report and JUnit are what CI reads)."""
    import warnings

    from .items import ProdvalWarning

    try:
        from .html import write_html

        write_html(report, path, baseline=session.baseline_report(report.scenario_id))
    except Exception as exc:
        report.artifacts.pop("html", None)
        warnings.warn(ProdvalWarning(f"{report.scenario_id}: the HTML report could not be written "
                                     f"({type(exc).__name__}: {exc}); the JSON report and JUnit are complete"))
        return
    report.artifacts["html"] = path.name
