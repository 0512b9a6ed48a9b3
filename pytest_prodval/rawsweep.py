"""The streaming reader's state: what it keeps while it reads, and the digest it makes of it.

Kept in memory: the lifecycle deltas (two per game and player, few), and the
`http_req_duration` values of the buckets that are still open (a bucket is closed, its
percentiles computed and its values dropped, once the stream is `lag_ms` past its end;
k6 points from different VUs are not strictly time-ordered). At the end the deltas are
swept over the steady window (`concurrency`) and the buckets become the time series.
Kept apart from the byte scanning (`rawscan`), which only finds the points and adds them.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from .concurrency import levels_at, peak_concurrency
from .exact import percentile
from .facts import CONCURRENCY_DELTAS
from .models import ConcurrencyMeasurement, SeriesPoint

# Custom counters → error class in `SeriesPoint.errors`.
ERROR_CLASSES: dict[str, str] = {
    "auth_token_expired_total": "401",
    "rate_limit_hit_total": "429",
    "capacity_failures_total": "capacity",
    "contract_failures_total": "contract",
    "id_lifecycle_mismatches_total": "lifecycle",
}
# Lifecycle delta counters → concurrency kind (one fact, shared with the k6 script).
DELTA_METRICS: dict[str, str] = {metric: kind for kind, metric in CONCURRENCY_DELTAS.items()}


class RawDigest(BaseModel):
    """What one pass over a k6 raw output file measured."""

    concurrency: dict[str, ConcurrencyMeasurement] = Field(default_factory=dict)
    series: list[SeriesPoint] = Field(default_factory=list)
    lines: int = 0  # complete lines read (plus a parseable unterminated last line)
    points: int = 0  # Point records
    bad_lines: int = 0  # lines skipped because they are not a k6 record
    truncated: bool = False  # the file ends mid-line, with a bad line, or the gzip stream is cut
    truncated_reason: str | None = None
    # first / last Point in file order (k6 writes nearly in time order), widened by the deltas
    first_time_ms: float | None = None
    last_time_ms: float | None = None
    late_values: int = 0  # durations that arrived after their bucket closed (not in its percentiles)
    split_lines: int = 0  # lines written to `split_to`


class Bucket:
    """One series bucket; `durations` is dropped when the bucket closes."""

    __slots__ = ("requests", "durations", "pcts", "errors")

    def __init__(self) -> None:
        self.requests = 0
        self.durations: array[float] | None = array("d")
        self.pcts: tuple[float, float, float] | None = None
        self.errors: dict[str, int] = {}

    def close(self) -> None:
        """Compute the bucket's percentiles and drop its values."""
        if self.durations:
            values = sorted(self.durations)
            self.pcts = (percentile(values, 50), percentile(values, 95), percentile(values, 99))
        self.durations = None


@dataclass
class Sweep:
    """State of one streaming pass; the scanner adds to `buckets`, `deltas` and `digest`."""

    t0_ms: float
    bucket_ms: float
    lag_ms: float
    digest: RawDigest = field(default_factory=RawDigest)
    buckets: dict[int, Bucket] = field(default_factory=dict)
    deltas: dict[str, tuple[array[float], array[float]]] = field(default_factory=dict)
    open: set[int] = field(default_factory=set)  # buckets still collecting durations
    newest: float = float("-inf")  # the latest block-end time seen: drives bucket closing

    def bucket(self, ms: float) -> Bucket:
        """The bucket holding `ms` (opened if new)."""
        idx = int((ms - self.t0_ms) // self.bucket_ms)
        found = self.buckets.get(idx)
        if found is None:
            found = self.buckets[idx] = Bucket()
            self.open.add(idx)
        return found

    def add_delta(self, kind: str, ms: float, value: float) -> None:
        """One lifecycle delta point (±1 game or player at `ms`)."""
        times, values = self.deltas.setdefault(kind, (array("d"), array("d")))
        times.append(ms)
        values.append(value)

    def add_errors(self, error_class: str, ms: float, value: float) -> None:
        """An error counter point: `value` errors of `error_class` in the bucket of `ms`."""
        if value:
            errors = self.bucket(ms).errors
            errors[error_class] = errors.get(error_class, 0) + round(value)

    def close_buckets(self, final: bool = False) -> None:
        """Close buckets the stream has left `lag_ms` behind (all when `final`)."""
        newest = self.newest
        for idx in [i for i in self.open if final or self.t0_ms + (i + 1) * self.bucket_ms + self.lag_ms <= newest]:
            self.buckets[idx].close()
            self.open.discard(idx)

    def finish(self, steady: tuple[float, float] | None, targets: dict[str, int]) -> RawDigest:
        """The digest: concurrency over the steady window (or first to last point) and the series."""
        self.close_buckets(final=True)
        digest = self.digest
        sorted_deltas = {
            kind: sorted(zip(times, values)) for kind, (times, values) in self.deltas.items()
        }
        for kind, pairs in sorted_deltas.items():
            for t, _ in pairs[:1] + pairs[-1:]:
                if digest.first_time_ms is None or t < digest.first_time_ms:
                    digest.first_time_ms = t
                if digest.last_time_ms is None or t > digest.last_time_ms:
                    digest.last_time_ms = t
        if steady is not None:
            window = (self.t0_ms + steady[0] * 1000.0, self.t0_ms + steady[1] * 1000.0)
        elif digest.first_time_ms is not None and digest.last_time_ms is not None:
            window = (digest.first_time_ms, digest.last_time_ms)
        else:
            window = None
        if window is not None:
            for kind in DELTA_METRICS.values():
                if kind in sorted_deltas:
                    digest.concurrency[kind] = peak_concurrency(sorted_deltas[kind], window, targets.get(kind))
        digest.series = self.series(sorted_deltas)
        return digest

    def series(self, sorted_deltas: dict[str, list[tuple[float, float]]]) -> list[SeriesPoint]:
        """One point per bucket from the first to the last, with the concurrency levels at its end."""
        if not self.buckets:
            return []
        first, last = min(self.buckets), max(self.buckets)
        indexes = list(range(first, last + 1))
        ends = [self.t0_ms + (idx + 1) * self.bucket_ms for idx in indexes]
        levels: dict[str, list[int] | None] = {}
        for kind in ("games", "players"):
            pairs = sorted_deltas.get(kind)
            levels[kind] = levels_at(pairs, ends) if pairs else None
        out: list[SeriesPoint] = []
        empty = Bucket()
        for n, idx in enumerate(indexes):
            bucket = self.buckets.get(idx, empty)
            p50, p95, p99 = bucket.pcts or (None, None, None)
            games, players = levels["games"], levels["players"]
            out.append(SeriesPoint(
                t=round(idx * self.bucket_ms / 1000.0, 6), requests=bucket.requests, p50_ms=p50, p95_ms=p95,
                p99_ms=p99, errors=dict(bucket.errors), games=games[n] if games else None,
                players=players[n] if players else None,
            ))
        return out
