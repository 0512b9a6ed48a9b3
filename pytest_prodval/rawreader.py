"""Streaming reader of k6's raw output (`--out json=FILE`, NDJSON, optionally gzip): concurrency and the time series.

One pass over the file, memory that does not grow with its size, and no JSON parsing of
the lines in the normal case. Next to the exact engine (`exact`, any metric exactly, a
pass per question), this pass answers the questions a window sum cannot: the ±1 lifecycle
deltas swept into concurrency, per-second requests, percentiles and error classes, and the
WebSocket companion's lines copied to a file of their own. Three parts, in the order the
bytes flow: `rawfile` (blocks of a plain or gzip file, RFC3339 times), `rawscan` (the
points it needs, found in a block of whole lines), `rawsweep` (the state they go into and
the digest made of it). This module is the pass over one run's files: a block of each in
turn, the lines across block boundaries, the tail of each file.

Times are epoch milliseconds (floats) throughout, like `t0_ms` (k6's `Date.now()`).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .concurrency import peak_concurrency
from .exact import percentile
from .rawfile import RawFile, parse_time_ms
from .rawscan import Scanner, normalise
from .rawsweep import DELTA_METRICS, ERROR_CLASSES, RawDigest, Sweep

__all__ = [
    "DELTA_METRICS",
    "ERROR_CLASSES",
    "RawDigest",
    "parse_time_ms",
    "peak_concurrency",
    "percentile",
    "read_raw",
]


def read_raw(
    path: Path | Sequence[Path],
    *,
    t0_ms: float,
    steady: tuple[float, float] | None,
    targets: dict[str, int],
    bucket_s: float = 1.0,
    split_scenario: str | None = "ws_companion",
    split_to: Path | None = None,
    lag_s: float = 5.0,
) -> RawDigest:
    """Read a k6 raw output file (NDJSON or gzip) in one streaming pass.

    `path` may also be the files of one run's instances (segments, runner pods): they are read
    as one stream, a block of each in turn (instances started together write the same span of
    time at about the same rate, so the interleaved stream stays within `lag_s` of time order),
    and the ±1 deltas of all of them are swept on one time axis.

    `t0_ms`: the run's t0 (epoch ms, the script's `setup()` `Date.now()`); `steady`: the
    steady window in seconds after t0 (None: from the first to the last point);
    `targets`: {"games": n, "players": m} for the share of the window at/above target;
    `bucket_s`: series bucket width; `split_to`: also write every Metric line and every
    Point line tagged `scenario:<split_scenario>` there (gzip if it ends in `.gz`);
    `lag_s`: how long a bucket stays open for late (out-of-order) points.

    A file that ends mid-line, with an unparseable line, or with a cut/corrupt gzip
    stream gives `truncated=True` and everything read before; it never raises for that.
    """
    if bucket_s <= 0:
        raise ValueError("bucket_s must be > 0")
    paths = [Path(path)] if isinstance(path, (str, Path)) else [Path(p) for p in path]
    split_out: Any = None  # a GzipFile or a buffered file
    if split_to is not None:
        split_out = gzip.open(split_to, "wb", compresslevel=5) if split_to.name.endswith(".gz") \
            else open(split_to, "wb", buffering=1 << 20)
    sweep = Sweep(t0_ms=float(t0_ms), bucket_ms=bucket_s * 1000.0, lag_ms=max(lag_s, 0.0) * 1000.0)
    scanner = Scanner(
        sweep,
        split_scenario=f'"scenario":{json.dumps(split_scenario)}'.encode() if split_scenario else None,
        split_out=split_out if split_scenario else None,
    )
    sources = [RawFile(p) for p in paths]
    try:
        feeds = [_feed(scanner, source) for source in sources]
        while feeds:  # one block of each file in turn
            feeds = [feed for feed in feeds if next(feed, None) is not None]
    finally:
        if split_out is not None:
            split_out.close()
    digest = sweep.finish(steady, targets)
    for source in sources:
        if source.truncated_reason and not digest.truncated:
            digest.truncated = True
            digest.truncated_reason = source.truncated_reason if len(sources) == 1 else \
                f"{source.path.name}: {source.truncated_reason}"
    return digest


def _feed(scanner: Scanner, source: RawFile) -> Iterator[bool]:
    """Feed one file's blocks of whole lines to `scanner`, yielding before each block (so its last
    block and its tail are read in one step: `last_line_bad` is still this file's)."""
    rest = b""
    for chunk in source.blocks():
        yield True
        first = chunk.find(b"\n")
        if first < 0:
            rest += chunk
            continue
        head = b"".join((b"}\n", rest, chunk[:first + 1]))  # the line across the block boundary
        scanner.block(head, 0, len(head))
        last = chunk.rfind(b"\n")
        if last > first:
            if first > 0 and chunk[first - 1] == 125:  # "}\n" before the region: no copy
                scanner.block(chunk, first - 1, last + 1)
            else:
                region = b"}\n" + chunk[first + 1:last + 1]
                scanner.block(region, 0, len(region))
        rest = chunk[last + 1:]
    _finish_tail(scanner, rest)


def _finish_tail(scanner: Scanner, rest: bytes) -> None:
    """The bytes after the last newline: a complete record is read, a partial one reported."""
    digest = scanner.sweep.digest
    if rest.strip():
        fixed = normalise(rest.strip())
        if fixed is not None and _is_json(fixed):
            data = b"}\n" + fixed + b"\n"
            scanner.block(data, 0, len(data), checked=True)
            return
        digest.truncated = True
        digest.truncated_reason = f"the file ends mid-line ({len(rest)} bytes after the last newline)"
        return
    if scanner.last_line_bad:
        digest.truncated = True
        digest.truncated_reason = "the last line is not a k6 record"


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True
