"""The streaming reader's byte scanner: the points it needs, found in a block of whole lines.

k6 v1.1.0 writes every record on one line in a fixed shape::

    {"type":"Metric","data":{"name":"games_active_delta","type":"counter",...},"metric":"games_active_delta"}
    {"metric":"games_active_delta","type":"Point","data":{"time":"2026-11-27T02:47:23.602300718Z","value":1,"tags":{...}}}

In each block a few `bytes.count` calls check that every line has one of those two shapes
(a block that does not goes through a per-line slow path, which skips and counts bad
lines and rewrites lines of another shape with `json`); then `bytes.find` on the exact
line prefix finds the few metrics the sweep needs, and `time` and `value` are sliced out
of them. All other lines (about 6 of every 7) are never looked at one by one, and no line
is parsed as JSON in the normal case. What the points mean is the sweep's (`rawsweep`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import IO, Any

from .rawfile import parse_time_ms
from .rawsweep import DELTA_METRICS, ERROR_CLASSES, Bucket, Sweep

_POINT_HEAD = b'","type":"Point","data":{"time":"'
_P_DUR = b'\n{"metric":"http_req_duration' + _POINT_HEAD
_P_TOTAL = b"_total" + _POINT_HEAD  # all error counters end in _total
_P_DELTA = b"_active_delta" + _POINT_HEAD  # both lifecycle counters end in _active_delta
_LINE_POINT = b'}\n{"metric":"'
_LINE_METRIC = b'}\n{"type":"Metric","data":{'
_VALUE_KEY = b'","value":'
_ERROR_BYTES = {name.encode(): cls for name, cls in ERROR_CLASSES.items()}
_DELTA_BYTES = {name.encode(): kind for name, kind in DELTA_METRICS.items()}


@dataclass
class Scanner:
    """Reads blocks of whole lines into a `Sweep`; also copies the split scenario's lines out."""

    sweep: Sweep
    split_scenario: bytes | None
    split_out: IO[bytes] | None
    times: dict[bytes, float] = field(default_factory=dict)
    last_line_bad: bool = False

    def time_after(self, data: bytes, start: int) -> tuple[float, int]:
        """Parse the time string starting at `start`; returns (ms, index of its closing quote)."""
        quote = data.index(b'"', start, start + 48)
        return parse_time_ms(data[start:quote], self.times), quote

    # -- one block of whole lines: data = b"}\n" + lines, each ending in b"\n"

    def block(self, data: bytes, start: int, end: int, checked: bool = False) -> None:
        """Lines data[start + 2:end]; data[start:start + 2] must be b"}\n" (the previous line's end)."""
        lines = data.count(b"\n", start, end) - 1
        points = data.count(_LINE_POINT, start, end)
        metrics = _positions(data, _LINE_METRIC, start, end)
        if not checked and (points + len(metrics) != lines or data[end - 2] != 125 or data[start] != 125):
            self.slow_block(data[start + 2:end - 1].split(b"\n"))
            return
        self.last_line_bad = False
        digest = self.sweep.digest
        digest.lines += lines
        digest.points += points
        if points:
            self.note_times(data, start, end)
        self.durations(data, start, end)
        self.counters(data, start, end)
        if self.split_out is not None:
            self.split(data, start, end, metrics)
        self.sweep.close_buckets()

    def note_times(self, data: bytes, start: int, end: int) -> None:
        """The first point of the stream, the last of this block (it drives bucket closing)."""
        sweep, digest = self.sweep, self.sweep.digest
        last = data.rfind(_LINE_POINT, start, end)
        if digest.first_time_ms is None:
            first = data.find(_LINE_POINT, start, end)
            digest.first_time_ms = self.point_time(data, first)
        ms = self.point_time(data, last)
        if ms is not None:
            digest.last_time_ms = ms
            if ms > sweep.newest:
                sweep.newest = ms

    def point_time(self, data: bytes, line: int) -> float | None:
        """The time of the Point line at `line + 2` (`line`: the previous line's end), None if unreadable."""
        at = data.find(b'"time":"', line, data.find(b"\n", line + 2))
        if at < 0:
            return None
        try:
            return self.time_after(data, at + 8)[0]
        except ValueError:
            return None

    def slow_time(self, data: bytes, s: int, q: int) -> float | None:
        """Time of a point the fast path could not read (new second, offset, no fraction); None if bad."""
        try:
            return parse_time_ms(data[s:q], self.times)
        except ValueError:
            return None

    def durations(self, data: bytes, start: int, end: int) -> None:
        """`http_req_duration` values into their buckets, and the request count (the hot loop).

        k6 writes one `http_reqs` point (value 1) and one `http_req_duration` point per HTTP
        request, at the same time, so counting durations counts requests: one scan, not two.
        """
        find = data.find
        times = self.times
        sweep = self.sweep
        digest = sweep.digest
        t0, size = sweep.t0_ms, sweep.bucket_ms
        buckets, opened = sweep.buckets, sweep.open
        width = len(_P_DUR)
        lo = hi = 0.0
        append = None
        bucket = None
        i = find(_P_DUR, start, end)
        while i >= 0:
            s = i + width
            q = find(b'"', s)
            try:
                if data[q - 1] != 90:  # not ...Z: an offset or no fraction
                    raise KeyError
                ms = times[data[s:s + 19]] + float(data[s + 19:q - 1]) * 1000.0
            except (KeyError, ValueError):
                ms = self.slow_time(data, s, q)  # type: ignore[assignment]
            v = q + 10
            comma = find(b",", v, v + 40)
            try:
                if ms is None or comma < 0:
                    raise ValueError
                value = float(data[v:comma])
            except ValueError:
                self.bad_point(data, i, end)
                i = find(_P_DUR, s, end)
                continue
            if not lo <= ms < hi:
                idx = int((ms - t0) // size)
                bucket = buckets.get(idx)
                if bucket is None:
                    bucket = buckets[idx] = Bucket()
                    opened.add(idx)
                lo = t0 + idx * size
                hi = lo + size
                append = None if bucket.durations is None else bucket.durations.append  # closed: too late
            bucket.requests += 1  # type: ignore[union-attr]  # set above on the first point
            if append is None:
                digest.late_values += 1
            else:
                append(value)
            i = find(_P_DUR, s, end)

    def counters(self, data: bytes, start: int, end: int) -> None:
        """The rare counters: error classes and lifecycle deltas (found by name suffix)."""
        for pattern, names in ((_P_TOTAL, _ERROR_BYTES), (_P_DELTA, _DELTA_BYTES)):
            i = data.find(pattern, start, end)
            while i >= 0:
                line = data.rfind(b"\n", start, i)
                s = i + len(pattern)
                name_at = line + 12
                if data[line:name_at] == b'\n{"metric":"':
                    target = names.get(data[name_at:i + len(pattern) - len(_POINT_HEAD)])
                    if target is not None:
                        self.counter_point(data, line, s, end, target, names is _DELTA_BYTES)
                i = data.find(pattern, s, end)

    def counter_point(self, data: bytes, line: int, s: int, end: int, target: str, is_delta: bool) -> None:
        """One error-counter or lifecycle-delta point, its time at `s`, into the sweep."""
        try:
            ms, q = self.time_after(data, s)
            v = q + 10
            stop = data.index(b",", v, v + 40)
            if data[q:v] != _VALUE_KEY:
                raise ValueError("unexpected point layout")
            value = float(data[v:stop])
        except ValueError:
            self.bad_point(data, line, end)
            return
        if is_delta:
            self.sweep.add_delta(target, ms, value)
        else:
            self.sweep.add_errors(target, ms, value)

    def bad_point(self, data: bytes, line: int, end: int) -> None:
        """A needed Point line whose time or value cannot be read: skip and count it."""
        self.sweep.digest.bad_lines += 1
        newline = data.find(b"\n", line + 1, end)
        if newline < 0 or newline >= end - 1:
            self.last_line_bad = True

    def split(self, data: bytes, start: int, end: int, metrics: list[int]) -> None:
        """Copy Metric lines and the split scenario's Point lines, in file order."""
        assert self.split_out is not None and self.split_scenario is not None
        starts = [at + 2 for at in metrics]
        tag = self.split_scenario
        find, rfind = data.find, data.rfind
        i = find(tag, start, end)
        while i >= 0:
            line = rfind(b"\n", start, i) + 1
            if data.startswith(b'{"metric":"', line):
                starts.append(line)
            i = find(tag, i + len(tag), end)
        if not starts:
            return
        if metrics:
            starts.sort()
        write = self.split_out.write
        for line in starts:
            write(data[line:find(b"\n", line) + 1])
        self.sweep.digest.split_lines += len(starts)

    def slow_block(self, raw_lines: list[bytes]) -> None:
        """A block with lines of another shape: skip bad ones, normalise parseable ones."""
        good: list[bytes] = []
        bad = 0
        for line in raw_lines:
            fixed = normalise(line)
            if fixed is None:
                bad += 1
                self.last_line_bad = True
            else:
                good.append(fixed)
                self.last_line_bad = False
        digest = self.sweep.digest
        digest.bad_lines += bad
        digest.lines += bad
        last_bad = self.last_line_bad
        if good:
            data = b"}\n" + b"\n".join(good) + b"\n"
            self.block(data, 0, len(data), checked=True)
        self.last_line_bad = last_bad


def _positions(data: bytes, pattern: bytes, start: int, end: int) -> list[int]:
    """Where `pattern` occurs in data[start:end] (for rare patterns)."""
    found: list[int] = []
    i = data.find(pattern, start, end)
    while i >= 0:
        found.append(i)
        i = data.find(pattern, i + 1, end)
    return found


def normalise(line: bytes) -> bytes | None:
    """A line in k6's exact shape (as is, or rewritten from any valid JSON record), or None."""
    if line.endswith(b"}") and (line.startswith(b'{"metric":"') or line.startswith(b'{"type":"Metric","data":{')):
        return line
    try:
        record: Any = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    kind, name, data = record.get("type"), record.get("metric"), record.get("data")
    if kind == "Metric" and isinstance(name, str):
        return json.dumps({"type": "Metric", "data": data, "metric": name}, separators=(",", ":")).encode()
    if kind != "Point" or not isinstance(name, str) or not isinstance(data, dict):
        return None
    if not isinstance(data.get("time"), str) or not isinstance(data.get("value"), int | float):
        return None
    point = {"time": data["time"], "value": data["value"], "tags": data.get("tags") or {}}
    body = json.dumps(point, separators=(",", ":"))
    return b'{"metric":' + json.dumps(name).encode() + b',"type":"Point","data":' + body.encode() + b"}"
