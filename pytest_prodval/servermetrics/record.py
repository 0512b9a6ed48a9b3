"""The server metrics record: the `…_server_metrics.json` artifact both sources write and the judge reads.

Plain JSON (`save_record` / `load_record`), so an offline re-judge gets the same values as
the live run. It holds no credentials: endpoints are stored redacted (`redact_url`), and
error text from either source goes through the same `Scrubber` first.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, Field

from ..secrets import MASK, Redactor

SCHEMA_VERSION = 1
ARTIFACT_SUFFIX = "_server_metrics.json"
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


class ServerMetricsError(ValueError):
    """A query the server metrics cannot answer as asked, or a Prometheus API failure."""


class ScrapeRecord(BaseModel):
    """One scrape of one target; `t` is when it was sent (Prometheus stamps samples the same way)."""

    t: float
    ok: bool
    error: str | None = None
    duration_s: float | None = None


class TargetRecord(BaseModel):
    """A scraped endpoint: the redacted URL, or `job/instance` from Prometheus."""

    name: str
    scrapes: list[ScrapeRecord] = Field(default_factory=list)


class SeriesRecord(BaseModel):
    """One series: its sample name, family, type, labels and (scrape index, value) points."""

    name: str  # as exposed: x_total, x_bucket, x
    family: str  # the parser's family name: counters without _total, histograms without _bucket
    type: str  # counter | gauge | histogram | summary | unknown
    labels: dict[str, str]
    target: int = 0
    points: list[tuple[int, float]] = Field(default_factory=list)


class Mark(BaseModel):
    """A labelled on-demand scrape, e.g. the steady window's start."""

    label: str
    t: float


class ServerMetricsRecord(BaseModel):
    """Everything scraped for one run; JSON-serialisable, free of credentials."""

    schema_version: int = SCHEMA_VERSION
    source: Literal["scrape", "prometheus"]
    endpoint: str
    interval_s: float | None = None
    wanted: list[str]
    names_seen: list[str] = Field(default_factory=list)
    targets: list[TargetRecord] = Field(default_factory=list)
    series: list[SeriesRecord] = Field(default_factory=list)
    marks: list[Mark] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    def mark(self, label: str) -> float:
        """The time of the last mark with this label; KeyError names the marks there are."""
        for mark in reversed(self.marks):
            if mark.label == label:
                return mark.t
        raise KeyError(f"no mark {label!r} (marks: {', '.join(m.label for m in self.marks) or 'none'})")

    def window(self, start_label: str, end_label: str) -> tuple[float, float]:
        """The (start, end) times of two marks."""
        return self.mark(start_label), self.mark(end_label)


def save_record(record: ServerMetricsRecord, path: str | Path) -> Path:
    """Write the record as JSON, atomically (a reader never sees half a file), honouring the umask."""
    from ..artifacts import write_atomic

    target = Path(path)
    write_atomic(target, record.model_dump_json())
    return target


def load_record(path: str | Path) -> ServerMetricsRecord:
    """Read a record written by `save_record`; ServerMetricsError names the file and the problem."""
    try:
        record = ServerMetricsRecord.model_validate_json(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ServerMetricsError(f"{path}: not a server metrics record: {exc}") from None
    if record.schema_version != SCHEMA_VERSION:
        raise ServerMetricsError(f"{path}: schema_version {record.schema_version}, expected {SCHEMA_VERSION}")
    return record


def aliases(name: str) -> set[str]:
    """The family names a user-written name can mean: `x_total` is counter family `x`."""
    return {name, name[:-6]} if name.endswith("_total") else {name}


# --- credentials: neither the record nor an error text holds one -----------------------------


def redact_url(url: str) -> str:
    """The URL without user info and with every query value masked."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = (f"{MASK}@" if parts.username or parts.password else "") + host
    if parts.port is not None:
        netloc += f":{parts.port}"
    query = "&".join(f"{k}={MASK}" for k, _ in parse_qsl(parts.query, keep_blank_values=True))
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


class Scrubber:
    """Masks the URL's credentials and header values in error text (and their escaped spellings)."""

    def __init__(self, url: str, headers: Mapping[str, str] | None) -> None:
        parts = urlsplit(url)
        raw = [parts.username, parts.password, *(v for _, v in parse_qsl(parts.query)), *(headers or {}).values()]
        raw += [v.split(" ", 1)[1] for v in (headers or {}).values() if " " in v]  # "Bearer TOKEN"
        self._raw_url = url
        self.url = redact_url(url)
        self._redactor = Redactor(raw)

    def __call__(self, text: str) -> str:
        return self._redactor.redact(text.replace(self._raw_url, self.url))
