"""Server-side criteria: the target's own Prometheus metrics, judged next to k6's view.

k6 sees the service from outside; `/metrics` is the server's own account (AI fallbacks,
which limiter answered 429, games it thinks are active). Two sources feed one record, and
one judge reads it, live or offline:

* `scrape`: `Scraper` reads `/metrics` itself, on a schedule and at the window's edges;
* `promql`: `PrometheusQuery` reads the same series' raw samples from a Prometheus server;
* `record`: `ServerMetricsRecord`, the plain-JSON artifact both write (no credentials);
* `judge`: `ServerMetrics` judges a record over a window (deltas, ratios, gauges,
  bucket-interpolated quantiles; no scrape is no data, never a pass).

Every public name is importable from here.
"""

from .judge import (
    Breakdown, BreakdownRow, Selector, ServerMetricResult, ServerMetrics, Status, histogram_quantile, parse_selector,
    wanted_names,
)
from .promql import PrometheusQuery
from .record import (
    ARTIFACT_SUFFIX, SCHEMA_VERSION, Mark, ScrapeRecord, SeriesRecord, ServerMetricsError, ServerMetricsRecord,
    TargetRecord, load_record, redact_url, save_record,
)
from .scrape import Scraper

__all__ = [
    "ARTIFACT_SUFFIX", "SCHEMA_VERSION", "Breakdown", "BreakdownRow", "Mark", "PrometheusQuery", "ScrapeRecord",
    "Scraper", "Selector", "SeriesRecord", "ServerMetricResult", "ServerMetrics", "ServerMetricsError",
    "ServerMetricsRecord", "Status", "TargetRecord", "histogram_quantile", "load_record", "parse_selector",
    "redact_url", "save_record", "wanted_names",
]
