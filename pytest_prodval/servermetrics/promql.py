"""Prometheus as the source: the same series read from a Prometheus server's HTTP API (PROMETHEUS_URL).

It fetches the *raw samples* (an instant query of a range selector, `name[range]` at the
window's end) instead of `increase()` or `query_range`: `increase()` extrapolates to the
window edges (fractional counts of integer counters, and a series born in the window
loses its first increment), and `query_range` resamples at a step, which can skip or
repeat a scrape and so hide a counter reset. Raw samples let both sources share one
record and one judge, with the same reset and edge rules. Alignment: an edge resolves to
the last Prometheus scrape at or before it, so the two sources agree exactly when nothing
changed within one Prometheus scrape interval before each edge; otherwise they differ by
the increments of that interval.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from .record import (
    HISTOGRAM_SUFFIXES, Mark, ScrapeRecord, Scrubber, SeriesRecord, ServerMetricsError, ServerMetricsRecord,
    TargetRecord, aliases,
)


def _promql_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class PrometheusQuery:
    """Fetches the raw samples of the wanted names for a window from a Prometheus server's HTTP API."""

    def __init__(
        self,
        url: str,
        *,
        match: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
        headers: Mapping[str, str] | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        self._base = url.rstrip("/")
        self._scrub = Scrubber(url, headers)
        self._match = ",".join(f"{k}={_promql_string(v)}" for k, v in sorted((match or {}).items()))
        self._owns_client = client is None
        self._client = client or httpx.Client(timeout=timeout_s, headers=dict(headers or {}))
        self._types: dict[str, str] = {}

    def close(self) -> None:
        """Close the HTTP client (if this object made it)."""
        if self._owns_client:
            self._client.close()

    def _get(self, path: str, params: Mapping[str, str] | tuple[tuple[str, str], ...]) -> Any:
        where = f"Prometheus {self._scrub.url}{path}"
        try:
            response = self._client.get(self._base + path, params=params)
        except httpx.HTTPError as exc:
            raise ServerMetricsError(self._scrub(f"{where}: {type(exc).__name__}: {exc}")) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ServerMetricsError(self._scrub(f"{where}: HTTP {response.status_code}, not a Prometheus API answer"))
        if response.status_code != 200 or body.get("status") != "success":
            raise ServerMetricsError(self._scrub(f"{where}: HTTP {response.status_code}: {body.get('error')}"))
        return body["data"]

    def _matrix(self, selector: str, range_s: float, at: float) -> list[dict[str, Any]]:
        query = f"{selector}[{math.ceil(range_s * 1000)}ms]"
        data = self._get("/api/v1/query", {"query": query, "time": f"{at:.3f}"})
        if data.get("resultType") != "matrix":
            raise ServerMetricsError(f"Prometheus answered {data.get('resultType')} to {query}")
        return list(data["result"])

    def _declared_type(self, metric: str) -> str:
        """The TYPE the target declared (classic text names counters x_total, OpenMetrics x), else by suffix."""
        if metric not in self._types:
            declared = {entry.get("type") for key in aliases(metric)
                        for entry in self._get("/api/v1/metadata", {"metric": key}).get(key, [])}
            guess = "counter" if metric.endswith("_total") else "gauge"
            self._types[metric] = "counter" if "counter" in declared else ("gauge" if declared else guess)
        return self._types[metric]

    def fetch(
        self, names: Iterable[str], start: float, end: float, *, lookback_s: float = 300.0,
        marks: Mapping[str, float] | None = None,
    ) -> ServerMetricsRecord:
        """Raw samples in (start - lookback_s, end] of each name, plus `up` for the targets' scrapes."""
        wanted = sorted(set(names))
        range_s = end - start + lookback_s
        match = "{" + self._match + "}" if self._match else ""
        record = ServerMetricsRecord(source="prometheus", endpoint=self._scrub.url + match, wanted=wanted,
                                     marks=[Mark(label=k, t=v) for k, v in (marks or {}).items()])
        times: dict[tuple[str, str], dict[float, bool]] = {}
        for row in self._matrix(f"up{match}", range_s, end):
            key = (row["metric"].get("job", ""), row["metric"].get("instance", ""))
            times.setdefault(key, {}).update({float(t): float(v) == 1.0 for t, v in row["values"]})
        fetched: list[tuple[SeriesRecord, tuple[str, str], list[tuple[float, float]]]] = []
        for name in wanted:
            alternatives = [name, name + "_total", *(name + s for s in HISTOGRAM_SUFFIXES)]
            inner = f'__name__=~"{"|".join(re.escape(a) for a in alternatives)}"' + (f",{self._match}" if match else "")
            rows = self._matrix("{" + inner + "}", range_s, end)
            histogram = any(r["metric"]["__name__"] == name + "_bucket" and "le" in r["metric"] for r in rows)
            for row in rows:
                labels = dict(row["metric"])
                metric = labels.pop("__name__")
                if histogram:
                    if metric not in [name + s for s in HISTOGRAM_SUFFIXES]:
                        continue
                    family, kind = name, "histogram"
                elif metric not in (name, name + "_total"):
                    continue
                elif self._declared_type(metric) == "counter":
                    family, kind = metric[:-6] if metric.endswith("_total") else metric, "counter"
                else:
                    family, kind = metric, "gauge"
                key = (labels.get("job", ""), labels.get("instance", ""))
                values = [(float(t), float(v)) for t, v in row["values"]]
                for t, _ in values:
                    times.setdefault(key, {}).setdefault(t, True)
                fetched.append((SeriesRecord(name=metric, family=family, type=kind, labels=labels), key, values))
        keys = sorted(times)
        positions: list[dict[float, int]] = []
        for key in keys:
            ordered = sorted(times[key].items())
            positions.append({t: i for i, (t, _) in enumerate(ordered)})
            record.targets.append(TargetRecord(name="/".join(key), scrapes=[
                ScrapeRecord(t=t, ok=ok, error=None if ok else "target down (up=0)") for t, ok in ordered]))
        for series, key, values in fetched:
            series.target = keys.index(key)
            series.points = [(positions[series.target][t], v) for t, v in values]
            record.series.append(series)
        gaps = sorted({round(b.t - a.t, 3) for tr in record.targets for a, b in zip(tr.scrapes, tr.scrapes[1:])})
        record.interval_s = gaps[len(gaps) // 2] if gaps else None
        params = (("match[]", match or '{__name__=~".+"}'), ("start", f"{start - lookback_s:.3f}"), ("end", f"{end:.3f}"))
        record.names_seen = sorted(set(self._get("/api/v1/label/__name__/values", params)) | self._declared_names())
        return record

    def _declared_names(self) -> set[str]:
        """Names the scraped targets declare (HELP/TYPE). A labelled counter before its first increment
        (ringrift_ai_fallback_total in a run without fallbacks) has no series, so only its metadata shows
        that the target exposes it; the direct scrape sees it the same way. Empty when Prometheus cannot say."""
        try:
            if self._match:
                rows = self._get("/api/v1/targets/metadata", {"match_target": "{" + self._match + "}"})
                return {str(row["metric"]) for row in rows if isinstance(row, dict) and "metric" in row}
            return {str(name) for name in self._get("/api/v1/metadata", {})}
        except (ServerMetricsError, TypeError):
            return set()
