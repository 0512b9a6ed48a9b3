"""k6's raw output file (`--out json=FILE`), read the same way by both of its readers.

The streaming sweep (`rawreader`) and the exact engine (`exact`) must agree on two things,
so they live here once: the bytes of a plain or gzip file in large blocks (a cut or corrupt
gzip stream is noted, not raised: the sweep reports it as `truncated`, the engine as an
error naming the file), and k6's RFC3339 times as epoch milliseconds (floats, like `t0_ms`,
k6's `Date.now()`), cached per second so a point costs a slice and a `float()`.
"""

from __future__ import annotations

import calendar
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = ["RawFile", "parse_time_ms"]

_READ_SIZE = 1 << 22  # bytes of (decompressed) data per block
_GZ_READ_SIZE = 1 << 20  # compressed bytes read at a time
_TIME_CACHE_MAX = 1 << 17


@dataclass
class RawFile:
    """Blocks of (decompressed) bytes from a plain or gzip file; notes a cut gzip stream."""

    path: Path
    truncated_reason: str | None = None

    def blocks(self) -> Iterator[bytes]:
        """The file's bytes in blocks of about 4 MB (lines cross block boundaries)."""
        with open(self.path, "rb") as handle:
            magic = handle.read(2)
            handle.seek(0)
            if magic == b"\x1f\x8b":
                yield from self._gunzip(handle)
            else:
                while block := handle.read(_READ_SIZE):
                    yield block

    def _gunzip(self, handle: IO[bytes]) -> Iterator[bytes]:
        inflater = zlib.decompressobj(31)
        pending = handle.read(_GZ_READ_SIZE)
        while True:
            if not pending:
                pending = handle.read(_GZ_READ_SIZE)
                if not pending:
                    if not inflater.eof:
                        self.truncated_reason = "the gzip stream is cut (no end-of-stream marker)"
                    return
            try:
                out = inflater.decompress(pending, _READ_SIZE)
            except zlib.error as exc:
                self.truncated_reason = f"the gzip stream is corrupt: {exc}"
                return
            if out:
                yield out
            if inflater.eof:  # a member ended; another may follow (concatenated gzip)
                pending = inflater.unused_data or handle.read(_GZ_READ_SIZE)
                if not pending.strip(b"\x00"):
                    return
                inflater = zlib.decompressobj(31)
            else:
                pending = inflater.unconsumed_tail


# ---------------------------------------------------------------------------- times


def _offset_ms(zone: bytes) -> float:
    """Milliseconds to subtract for a zone suffix: b"Z", b"+02:00", b"-0530"."""
    if zone in (b"Z", b"z", b""):
        return 0.0
    sign = -1.0 if zone[:1] == b"-" else 1.0
    digits = zone[1:].replace(b":", b"")
    if len(digits) != 4 or not digits.isdigit():
        raise ValueError(f"bad UTC offset {zone!r}")
    return sign * (int(digits[:2]) * 60 + int(digits[2:])) * 60_000.0


def _second_ms(prefix: bytes) -> float:
    """Epoch ms of b"YYYY-MM-DDTHH:MM:SS" read as UTC."""
    if len(prefix) != 19 or prefix[4:5] != b"-" or prefix[10:11] not in (b"T", b"t", b" ") or prefix[16:17] != b":":
        raise ValueError(f"bad RFC3339 time {prefix!r}")
    fields = (int(prefix[0:4]), int(prefix[5:7]), int(prefix[8:10]), int(prefix[11:13]), int(prefix[14:16]),
              int(prefix[17:19]))
    return calendar.timegm(fields) * 1000.0


def _split_tail(tail: bytes) -> tuple[bytes, bytes]:
    """b".602300718Z" → (b".602300718", b"Z"); b"+00:00" → (b"", b"+00:00")."""
    if tail.endswith((b"Z", b"z")):
        return tail[:-1], tail[-1:]
    for i, c in enumerate(tail):
        if c in (43, 45):  # + -
            return tail[:i], tail[i:]
    return tail, b""


def parse_time_ms(text: bytes | str, cache: dict[bytes, float] | None = None) -> float:
    """RFC3339 time (k6: nanoseconds and `Z`, or a numeric offset) → epoch milliseconds.

    `cache` maps the second-resolution prefix (first 19 characters) to its epoch ms, so
    only the fractional part and the zone are read per call.
    """
    raw = text.encode() if isinstance(text, str) else text
    prefix = raw[:19]
    base = cache.get(prefix) if cache is not None else None
    if base is None:
        base = _second_ms(prefix)
        if cache is not None:
            if len(cache) >= _TIME_CACHE_MAX:
                cache.clear()
            cache[prefix] = base
    frac, zone = _split_tail(raw[19:])
    if zone != b"Z":
        base -= _offset_ms(zone)
    if frac:
        if frac[:1] != b"." or not frac[1:].isdigit():
            raise ValueError(f"bad fractional seconds in {raw!r}")
        return base + float(frac) * 1000.0
    return base
