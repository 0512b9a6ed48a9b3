"""Concurrency, defined (README "Concurrency, defined"): the running sum of ±1 lifecycle deltas.

A game is active from the moment all its seats are filled until it ends; a player is a
seat (human or AI) of an active game. The k6 script emits +1/-1 points
(`games_active_delta`, `players_active_delta`); the plugin sorts them by time and sweeps
them over the steady window. Also used to merge deltas of several load generators on one
time axis: the sweep does not care where a delta came from.
"""

from __future__ import annotations

from collections.abc import Iterable

from .models import ConcurrencyMeasurement


def peak_concurrency(
    deltas: Iterable[tuple[float, float]], window: tuple[float, float] | None, target: int | None = None
) -> ConcurrencyMeasurement:
    """Sweep of lifecycle deltas `(time_ms, delta)` over `window` = (start_ms, end_ms).

    `window` None means from the first to the last delta.
    The deltas may come in any order (they are sorted here). The level at the window
    start is the sum of every delta at or before it (games already running count);
    deltas at the same instant are applied together (no zero-length spikes). Returns
    the peak level in the window, its time-weighted mean, the share of the window at
    or above `target` (None without a target) and `events` = the non-zero deltas at or
    before the window end (those that shape the level in the window).
    """
    ordered = sorted((t, v) for t, v in deltas if v)
    if window is None:
        window = (ordered[0][0], ordered[-1][0]) if ordered else (0.0, 0.0)
    start, end = window
    if end < start:
        raise ValueError(f"window ends before it starts: {window}")
    level = 0.0
    events = 0
    i, n = 0, len(ordered)
    while i < n and ordered[i][0] <= start:
        level += ordered[i][1]
        i += 1
        events += 1
    peak = level
    area = 0.0
    above = 0.0
    last = start
    while i < n and ordered[i][0] <= end:
        t = ordered[i][0]
        span = t - last
        area += level * span
        if target is not None and level >= target:
            above += span
        while i < n and ordered[i][0] == t:
            level += ordered[i][1]
            i += 1
            events += 1
        peak = max(peak, level)
        last = t
    span = end - last
    area += level * span
    if target is not None and level >= target:
        above += span
    length = end - start
    if length > 0:
        mean = area / length
        share = above / length if target is not None else None
    else:
        mean = level
        share = (1.0 if level >= target else 0.0) if target is not None else None
    return ConcurrencyMeasurement(
        peak=round(peak), time_weighted_mean=mean, share_at_or_above_target=share, target=target, events=events
    )


def levels_at(deltas: list[tuple[float, float]], times: list[float]) -> list[int]:
    """Running sum of `deltas` (sorted) at each of the ascending `times` (inclusive)."""
    out: list[int] = []
    level = 0.0
    i, n = 0, len(deltas)
    for t in times:
        while i < n and deltas[i][0] <= t:
            level += deltas[i][1]
            i += 1
        out.append(round(level))
    return out
