"""Exact values of any k6 (sub)metric from raw output, as k6's summary would report them.

One engine for every run the plugin judges: its own game script, any user's script, a raw
file from anywhere, and the N files of one scenario run on N load generators (merged as
one stream: counters summed, rates from summed passes and fails, percentiles over the
union of the samples, min/max exact).

A query is a metric with a tag filter and a window. `{phase:steady}` in a query is not a
tag the script must set: it selects the plugin's steady window, by each sample's own
timestamp. Everything else in the braces filters on the sample's tags, as k6 submetrics do;
a value ending in `*` matches by prefix (`http_reqs{status:5*}`).

Percentiles use k6's formula (linear interpolation between closest ranks over the sorted
samples) and are exact. Memory stays bounded however large the file: values are kept
while all kept values fit in `buffer_values`; past that, pass 1 keeps only a histogram
per query (bins 1 % wide, sparse) and a second pass collects just the values in the bins
that hold the ranks a percentile needs.

Bad input is an error naming the file and line (RawFileError): a line that is not one of
k6's JSON records, a cut last line or gzip stream, a metric defined twice in one file
(two runs appended into one file), a point before its metric's definition.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .expressions import MetricRef, parse_metric
from .rawfile import RawFile, parse_time_ms

import orjson

_loads = orjson.loads

__all__ = ["BUFFER_VALUES", "Measured", "Query", "RawFileError", "measure", "percentile", "queries_for", "query",
           "run_start"]

WINDOW_TAG = ("phase", "steady")  # the plugin's steady window, not a script tag
RUN_START_METRIC = "prodval_run_start"  # a counter the plugin's wrapper adds once, when setup() ends
BUFFER_VALUES = 8_000_000  # trend values kept in pass 1 (64 MB) before the two-pass method takes over
_LOG_STEP = math.log(1.01)  # histogram bins 1 % wide
_METRIC_PREFIX = b'{"metric":"'
_DEFINITION_PREFIX = b'{"type":"Metric"'
_READ_SIZE = 1 << 22


class RawFileError(ValueError):
    """A raw file that cannot be judged; the message names the file and the line."""


@dataclass(frozen=True, eq=False)  # identity hash: looked up once per matching point
class Query:
    """One (sub)metric to measure: `key` is its name in the result (as in k6's summary)."""

    key: str
    metric: str
    tags: tuple[tuple[str, str], ...]
    steady: bool
    bucket_ms: float | None = None  # also measure per time bucket (coverage rules)


def query(text: str, *, bucket_ms: float | None = None) -> Query:
    """`http_req_duration{name:login,phase:steady}` → a Query (phase:steady = the window)."""
    ref: MetricRef = parse_metric(text)
    tags = tuple(t for t in ref.tags if t != WINDOW_TAG)
    return Query(ref.k6_name, ref.name, tags, steady=len(tags) != len(ref.tags), bucket_ms=bucket_ms)


def queries_for(keys: Iterable[str], buckets: dict[str, float] | None = None) -> list[Query]:
    """Queries for summary-style keys, deduplicated, in order."""
    seen: dict[str, Query] = {}
    for key in keys:
        if key not in seen:
            seen[key] = query(key, bucket_ms=(buckets or {}).get(key))
    return list(seen.values())


class _Acc:
    """Aggregates of one query (or one time bucket of it)."""

    __slots__ = ("count", "total", "nonzero", "low", "high", "last_t", "last", "bins", "values", "picked")

    def __init__(self, keeping: bool = True) -> None:
        self.count = 0
        self.total = 0.0
        self.nonzero = 0
        self.low = math.inf
        self.high = -math.inf
        self.last_t = -math.inf
        self.last = 0.0
        self.bins: dict[int, int] = {}  # the histogram, once values are no longer kept
        self.values: array[float] | None = array("d") if keeping else None
        self.picked: dict[int, list[float]] = {}  # pass 2: bin → its values

    def add(self, value: float, t: float) -> None:
        self.count += 1
        self.total += value
        if value:
            self.nonzero += 1
        if value < self.low:
            self.low = value
        if value > self.high:
            self.high = value
        if t >= self.last_t:
            self.last_t, self.last = t, value
        if self.values is not None:
            self.values.append(value)
        else:
            b = _bin(value)
            self.bins[b] = self.bins.get(b, 0) + 1

    def to_histogram(self) -> None:
        """Stop keeping values: the kept ones go into the histogram."""
        if self.values is not None:
            for value in self.values:
                b = _bin(value)
                self.bins[b] = self.bins.get(b, 0) + 1
            self.values = None

    def ranks_needed(self, pcts: Iterable[float]) -> set[int]:
        ranks: set[int] = set()
        for pct in pcts:
            low, high, _ = _ranks(self.count, pct)
            ranks.update((low, high))
        return ranks

    def bins_of(self, ranks: set[int]) -> set[int]:
        """The histogram bins that hold the given 0-based ranks."""
        wanted: set[int] = set()
        seen = 0
        pending = sorted(ranks)
        for b in sorted(self.bins):
            seen += self.bins[b]
            while pending and pending[0] < seen:
                wanted.add(b)
                pending.pop(0)
            if not pending:
                break
        return wanted

    def value_at(self, rank: int) -> float:
        """The value of 0-based rank `rank` (pass 2 has picked its bin)."""
        seen = 0
        for b in sorted(self.bins):
            n = self.bins[b]
            if rank < seen + n:
                return sorted(self.picked[b])[rank - seen]
            seen += n
        raise IndexError(rank)

    def pct(self, pct: float) -> float:
        if self.values is not None:
            raise AssertionError("use the kept values")
        return _interpolated(self.count, pct, self.value_at)


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """k6's percentile (`p(N)` of a Trend): linear interpolation between closest ranks.

    `sorted_values` must be sorted ascending and not empty; `pct` is in [0, 100].
    """
    return _interpolated(len(sorted_values), pct, sorted_values.__getitem__)


def _ranks(count: int, pct: float) -> tuple[int, int, float]:
    """k6's closest ranks (0-based) of `pct` among `count` sorted values, and the high one's weight."""
    rank = pct / 100.0 * (count - 1)
    low = math.floor(rank)
    return low, math.ceil(rank), rank - low


def _interpolated(count: int, pct: float, value_at: Callable[[int], float]) -> float:
    """k6's percentile of `count` sorted values, each read by its 0-based rank."""
    low, high, weight = _ranks(count, pct)
    low_value = value_at(low)
    return low_value if high == low else low_value + (value_at(high) - low_value) * weight


def _bin(value: float) -> int:
    if value > 0:
        return int(math.floor(math.log(value) / _LOG_STEP))
    return -(1 << 40) if value == 0 else -(1 << 41) - int(math.floor(math.log(-value) / _LOG_STEP))


@dataclass
class Measured:
    """Summary-shaped metrics (`{"key": {"type", "contains", "values"}}`) plus what the pass saw."""

    metrics: dict[str, Any]
    buckets: dict[str, list[dict[str, float] | None]]  # key → per window bucket: values, or None (no data)
    defined: set[str] = field(default_factory=set)  # every metric the run emitted
    two_pass: bool = False


class _Plan:
    """The queries of one metric, arranged so a point finds its own in a few dict look-ups:
    no tag filter; one exact tag (by tag key, then value: `name:login`); anything else."""

    __slots__ = ("plain", "by_tag", "other")

    def __init__(self, queries: list[Query]) -> None:
        self.plain: list[Query] = []
        self.by_tag: dict[str, dict[str, list[Query]]] = {}
        self.other: list[Query] = []
        for q in queries:
            if not q.tags:
                self.plain.append(q)
            elif len(q.tags) == 1 and not q.tags[0][1].endswith("*"):
                key, value = q.tags[0]
                self.by_tag.setdefault(key, {}).setdefault(value, []).append(q)
            else:
                self.other.append(q)

    def matching(self, tags: dict[str, Any]) -> list[Query]:
        found = list(self.plain)
        for key, values in self.by_tag.items():
            hit = values.get(tags.get(key))  # type: ignore[arg-type]
            if hit:
                found.extend(hit)
        for q in self.other:
            if _matches(tags, q.tags):
                found.append(q)
        return found


@dataclass
class _State:
    queries: dict[str, list[Query]]
    window: tuple[float, float] | None
    buffer_values: int
    accs: dict[Query, _Acc] = field(default_factory=dict)
    bucket_accs: dict[tuple[Query, int], _Acc] = field(default_factory=dict)
    kinds: dict[str, tuple[str, str]] = field(default_factory=dict)
    plans: dict[bytes, _Plan] = field(default_factory=dict)
    defined_b: set[bytes] = field(default_factory=set)
    time_cache: dict[bytes, float] = field(default_factory=dict)
    keeping: bool = True
    kept: int = 0
    start_ms: float = math.inf
    end_ms: float = -math.inf

    def __post_init__(self) -> None:
        self.plans = {name.encode(): _Plan(qs) for name, qs in self.queries.items()}

    def drop_values(self) -> None:
        """Past the buffer: every accumulator keeps a histogram instead (two-pass method)."""
        self.keeping = False
        for acc in (*self.accs.values(), *self.bucket_accs.values()):
            acc.to_histogram()


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of a plain or gzip raw file; RawFileError on a cut stream or line."""
    source = RawFile(path)
    rest = b""
    number = 0
    for block in source.blocks():
        block = rest + block
        lines = block.split(b"\n")
        rest = lines.pop()
        for line in lines:
            number += 1
            yield number, line
    if source.truncated_reason:
        raise RawFileError(f"{path}: {source.truncated_reason} (after line {number})")
    if rest.strip():
        raise RawFileError(f"{path}:{number + 1}: the last line is cut (no newline at the end of the file)")


def _point(state: _State, line: bytes, path: Path, number: int, second_pass: Callable[[Query, _Acc, float, float], None]
           | None) -> None:
    end = line.find(b'"', 11)
    name = line[11:end]
    plan = state.plans.get(name)
    if second_pass is None:
        if name not in state.defined_b:
            raise RawFileError(f"{path}:{number}: a point of {name.decode(errors='replace')!r} before its metric "
                               "definition (not k6 output?)")
    if plan is None:
        if not line.endswith(b"}"):
            raise RawFileError(f"{path}:{number}: not a k6 JSON record: {line[:80]!r}")
        return
    try:
        data = _loads(line)["data"]
        t = parse_time_ms(data["time"], state.time_cache)
        value = float(data["value"])
        tags = data.get("tags") or {}
    except (ValueError, KeyError, TypeError) as exc:
        raise RawFileError(f"{path}:{number}: a corrupt k6 point ({exc}): {line[:80]!r}") from None
    window = state.window
    if second_pass is None:
        if t < state.start_ms:
            state.start_ms = t
        if t > state.end_ms:
            state.end_ms = t
    for q in plan.matching(tags):
        if q.steady and window is not None and not window[0] <= t < window[1]:
            continue
        if second_pass is not None:
            second_pass(q, state.accs[q], value, t)
            continue
        acc = state.accs.get(q)
        if acc is None:
            acc = state.accs[q] = _Acc(state.keeping)
        acc.add(value, t)
        state.kept += 1
        if q.bucket_ms and window is not None:
            index = int((t - window[0]) // q.bucket_ms)
            bucket = state.bucket_accs.get((q, index))
            if bucket is None:
                bucket = state.bucket_accs[(q, index)] = _Acc(state.keeping)
            bucket.add(value, t)
            state.kept += 1
        if state.keeping and state.kept > state.buffer_values:
            state.drop_values()


def _matches(tags: dict[str, Any], wanted: tuple[tuple[str, str], ...]) -> bool:
    """k6's submetric rule (every listed tag equal), plus `value*` for a prefix (`status:5*`)."""
    for key, value in wanted:
        have = tags.get(key)
        if value.endswith("*"):
            if not isinstance(have, str) or not have.startswith(value[:-1]):
                return False
        elif have != value:
            return False
    return True


def _definition(state: _State, line: bytes, path: Path, number: int, defined: set[str]) -> None:
    try:
        data = _loads(line)["data"]
        name, kind, contains = data["name"], data["type"], data.get("contains", "default")
    except (ValueError, KeyError, TypeError) as exc:
        raise RawFileError(f"{path}:{number}: a corrupt k6 metric definition ({exc}): {line[:80]!r}") from None
    if name in defined:
        raise RawFileError(f"{path}:{number}: metric {name!r} is defined a second time: two runs in one file? "
                           "Judge each run's file on its own")
    defined.add(name)
    state.defined_b.add(name.encode())
    state.kinds.setdefault(name, (kind, contains))


def _scan(state: _State, paths: Sequence[Path], second_pass: Callable[[Query, _Acc, float, float], None] | None) -> None:
    for path in paths:
        defined: set[str] = set()
        for number, line in _lines(path):
            if line.startswith(_METRIC_PREFIX):
                _point(state, line, path, number, second_pass)
            elif line.startswith(_DEFINITION_PREFIX):
                if second_pass is None:
                    _definition(state, line, path, number, defined)
            elif line.strip():
                raise RawFileError(f"{path}:{number}: not a k6 JSON record: {line[:80]!r}")


def run_start(paths: Sequence[Path]) -> tuple[float | None, float | None]:
    """(the wrapper's `prodval_run_start` point, the earliest sample) over the files' first
    16 MB each: when the run's scenarios started, and the best guess without the marker."""
    earliest: float | None = None
    marker: float | None = None
    head = _METRIC_PREFIX + RUN_START_METRIC.encode() + b'"'
    for path in paths:
        read = 0
        for _, line in _lines_prefix(path):
            read += len(line)
            if line.startswith(_METRIC_PREFIX):
                try:
                    t = parse_time_ms(_loads(line)["data"]["time"])
                except (ValueError, KeyError, TypeError):
                    continue  # the full pass names it
                earliest = t if earliest is None else min(earliest, t)
                if line.startswith(head):
                    marker = t if marker is None else min(marker, t)
                    break
            if read > 16 << 20:
                break
    return marker, earliest


def _lines_prefix(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        yield from _lines(path)
    except RawFileError:
        return


def measure(
    paths: Sequence[Path],
    queries: Sequence[Query],
    *,
    window: tuple[float, float] | None,
    pcts: Sequence[float] = (50, 90, 95, 99),
    buffer_values: int = BUFFER_VALUES,
) -> Measured:
    """Measure `queries` over the raw files `paths` (one run; several files = its instances).

    `window` is (start, end) epoch ms of the steady window, for the queries that select
    it; `pcts` the percentiles reported for every trend (others named by a query's key
    are computed too, see `percentiles_wanted`). RawFileError on bad input.
    """
    by_metric: dict[str, list[Query]] = {}
    for q in queries:
        by_metric.setdefault(q.metric, []).append(q)
    state = _State(by_metric, window, buffer_values)
    _scan(state, paths, None)
    wanted_pcts = sorted(set(pcts))
    all_accs = [*state.accs.values(), *state.bucket_accs.values()]
    two_pass = not state.keeping
    if two_pass:
        needed: dict[int, set[int]] = {}
        for acc in all_accs:
            needed[id(acc)] = acc.bins_of(acc.ranks_needed(wanted_pcts))

        def collect(q: Query, acc: _Acc, value: float, t: float) -> None:
            b = _bin(value)
            cells = [acc]
            if q.bucket_ms and window is not None:
                cells.append(state.bucket_accs[(q, int((t - window[0]) // q.bucket_ms))])
            for cell in cells:
                if b in needed[id(cell)]:
                    cell.picked.setdefault(b, []).append(value)

        _scan(state, paths, collect)
    metrics: dict[str, Any] = {}
    for q in queries:
        kind, contains = state.kinds.get(q.metric, ("", "default"))
        found = state.accs.get(q)
        if found is None or not kind:
            continue
        duration_s = _duration_s(q, state)
        metrics[q.key] = {"type": kind, "contains": contains,
                          "values": _values(kind, found, wanted_pcts, duration_s)}
    buckets: dict[str, list[dict[str, float] | None]] = {}
    for q in queries:
        if q.bucket_ms and window is not None and q.key in metrics:
            n = max(1, math.ceil((window[1] - window[0]) / q.bucket_ms))
            kind = state.kinds.get(q.metric, ("trend", ""))[0]
            row: list[dict[str, float] | None] = []
            for i in range(n):
                cell = state.bucket_accs.get((q, i))
                row.append(_values(kind, cell, wanted_pcts, q.bucket_ms / 1000) if cell else None)
            buckets[q.key] = row
    return Measured(metrics=metrics, buckets=buckets, defined=set(state.kinds), two_pass=two_pass)


def _duration_s(q: Query, state: _State) -> float:
    if q.steady and state.window is not None:
        return (state.window[1] - state.window[0]) / 1000
    if state.end_ms > state.start_ms:
        return (state.end_ms - state.start_ms) / 1000
    return 0.0


def _values(kind: str, acc: _Acc, pcts: Sequence[float], duration_s: float) -> dict[str, float]:
    """k6's summary values for one metric type."""
    if kind == "counter":
        return {"count": acc.total, "rate": acc.total / duration_s if duration_s > 0 else 0.0}
    if kind == "rate":
        return {"rate": acc.nonzero / acc.count, "passes": acc.nonzero, "fails": acc.count - acc.nonzero}
    if kind == "gauge":
        return {"value": acc.last, "min": acc.low, "max": acc.high}
    values: dict[str, float] = {"count": acc.count, "avg": acc.total / acc.count, "min": acc.low, "max": acc.high}
    kept = sorted(acc.values) if acc.values is not None else None
    for pct in pcts:
        value = percentile(kept, pct) if kept is not None else acc.pct(pct)
        values["med" if pct == 50 else f"p({pct:g})"] = value
    return values
