"""The HTML report: content, escaping, offline-ness, and a real render in headless Chromium."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import require_tool

from pytest_prodval.html import margin, nice_step, render_html, write_html
from pytest_prodval.models import (
    BypassRecord,
    ConcurrencyMeasurement,
    CriterionResult,
    SeriesPoint,
    SloReport,
)

SCENARIO = "BCAP_STAGING_BASELINE_20G_60P"


def criterion(name: str, metric: str, expression: str, threshold: float, observed: float | None, unit: str,
              verdict: str = "pass", **extra: Any) -> CriterionResult:
    """One criterion result as criteria.evaluate would make it."""
    agg, op = re.match(r"^([a-z]+(?:\(\d+\))?)\s*(<=|>=|==|!=|<|>)", expression).groups()  # type: ignore[union-attr]
    return CriterionResult(name=name, scenario_id=extra.pop("scenario_id", SCENARIO), metric=metric, expression=expression,
                           aggregation=agg, operator=op, threshold=threshold, observed=observed, unit=unit,
                           profile=extra.pop("profile", "staging"), samples=extra.pop("samples", 41230), verdict=verdict,
                           **extra)


def make_report(scenario_id: str = SCENARIO, *, timestamp: str = "20261127T024723Z", env: str = "staging",
                profile: str = "staging", failing: bool = True, complete: bool = True, series_points: int = 60,
                ai: bool = False) -> SloReport:
    """A realistic SLO report: passing criteria, (optionally) failing ones, an error, a warning and 60 series points."""
    crit = [
        criterion("failed_requests_rate", "req_errors{phase:steady}", "rate<0.01", 0.01, 0.0041, "%",
                  hint="Look at the error classes: 401 → token TTL, 429 → pool size / bypass, 5xx → capacity."),
        criterion("http_401_rate", "status_401{phase:steady}", "rate<0.001", 0.001, 0.0, "%"),
        criterion("contract_failures", "contract_failures_total", "count==0", 0, 0, "count"),
        criterion("concurrent_games", "prodval_concurrent_games", "peak>=20", 20, 21, "games", samples=412),
        criterion("concurrent_players", "prodval_concurrent_players", "peak>=60", 60, 63, "players", samples=412),
        criterion("move_e2e_latency_p95", "move_e2e_latency{phase:steady}", "p(95)<300", 300, 92.5, "ms", samples=18200),
        criterion("ws_message_latency_p95", "ws_message_latency", "p(95)<500", 500, 120.0, "ms", level="warn"),
    ]
    if failing:
        crit += [
            criterion("api_latency_p95", "http_req_duration{phase:steady}", "p(95)<800", 800, 951.3, "ms", "fail",
                      message="p(95)=951 ms, expected < 800 ms over 41,230 requests",
                      hint="API latency: check API CPU, database and the slowest endpoints (game_create, game_state)."),
            criterion("http_429_rate", "status_429{phase:steady}", "rate<0.001", 0.001, 0.0123, "%", "fail",
                      message="rate=1.23%, expected < 0.10%",
                      hint="429s: increase LOADTEST_USER_POOL_SIZE or enable the staging bypass for load-test users (plan §8)."),
            criterion("id_lifecycle_mismatches", "id_lifecycle_mismatches_total", "count==0", 0, None, "count", "error",
                      samples=0, message="k6 reported no id_lifecycle_mismatches_total <script>alert(1)</script>",
                      hint="A game created or joined moments ago answered 404: check replication / cache of game ids."),
        ]
    else:
        crit.append(criterion("api_latency_p95", "http_req_duration{phase:steady}", "p(95)<800", 800, 412.0, "ms"))
    if ai:
        crit.append(criterion("ai_move_latency_p95", "ai_move_latency{phase:steady}", "p(95)<1500", 1500, 870.0, "ms"))
    series = []
    for i in range(series_points):
        t = i * 5.0
        load = min(1.0, t / 60) if t < 240 else max(0.0, (300 - t) / 60)
        errors = {"429": int(6 * load) if 100 <= t < 160 else 0, "401": 1 if i % 17 == 3 else 0}
        if i in (30, 31):
            errors["capacity"] = 4
        series.append(SeriesPoint(t=t, requests=int(900 * load + 20 * math.sin(i)), p50_ms=80 + 40 * load,
                                  p95_ms=300 + 500 * load + 60 * math.sin(i / 3), p99_ms=None if i == 45 else 700 + 800 * load,
                                  errors={k: v for k, v in errors.items() if v},
                                  games=round(21 * load), players=round(63 * load)))
    report = SloReport(
        scenario_id=scenario_id, marker="baseline", env=env, profile=profile, timestamp=timestamp,
        started_at="2026-11-27T02:47:23+00:00", finished_at="2026-11-27T02:52:31+00:00", k6_version="v1.1.0",
        k6_exit_code=0 if complete else 99, complete=complete,
        incomplete_reason=None if complete else "raw output BCAP_x.json.gz is truncated",
        steady_window_s=(60.0, 240.0), targets={"games": 20, "players": 60, "board": "square8"},
        token_ttl_s=900, token_ttl_source="login expiresIn",
        concurrency={
            "games": ConcurrencyMeasurement(peak=21, time_weighted_mean=19.6, share_at_or_above_target=0.93, target=20, events=412),
            "players": ConcurrencyMeasurement(peak=63, time_weighted_mean=58.8, share_at_or_above_target=0.9, target=60, events=1236),
        },
        bypass=BypassRecord(pattern="loadtest+*@example.test", enabled_at="02:47:10Z", disabled_at="02:52:40Z"),
        criteria=crit, series=series,
        artifacts={"slo_report": f"{scenario_id}_{env}_{timestamp}_slo_report.json", "raw": f"{scenario_id}_{env}_{timestamp}.json.gz"},
    )
    report.verdict = report.decide()
    return report


def test_every_criterion_is_shown_with_formatted_values_and_hints() -> None:
    report = make_report()
    html = render_html(report)
    for c in report.criteria:
        assert c.name in html
    assert report.verdict == "ERROR" and ">ERROR<" in html
    assert "951 ms" in html  # ms over 100: no decimals
    assert "92.5 ms" in html
    assert "1.23%" in html and "0.0123" not in html  # percent units are fractions
    assert "0.41%" in html
    assert "n/a" in html  # the errored criterion has no value
    assert "151 ms beyond · 18.9%" in html
    assert "1.13 pp beyond · 12.3× the threshold" in html
    assert "increase LOADTEST_USER_POOL_SIZE" in html and "check API CPU" in html
    assert "Look at the error classes" not in html  # hints only beside failures, errors, warnings


def test_untrusted_text_is_escaped() -> None:
    html = render_html(make_report())
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_page_is_self_contained() -> None:
    report = make_report()
    report.artifacts["evil"] = "https://cdn.example.com/x.js"
    html = render_html(report)
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert "http://" not in html and "https://cdn" not in html.replace("https://cdn.example.com/x.js</span>", "")
    assert "@import" not in html and "url(" not in html


def test_verdict_banner_and_empty_series() -> None:
    report = make_report(failing=False, complete=False, series_points=0)
    html = render_html(report)
    assert "INCOMPLETE RUN" in html and "truncated" in html
    assert "no time series recorded" in html and "<svg" not in html
    go = make_report(failing=False)
    assert go.verdict == "GO"
    html = render_html(go)
    assert 'class="verdict v-GO"' in html and "Run complete" in html
    assert html.count("<svg") == 4


def test_series_without_errors_or_concurrency_says_so() -> None:
    report = make_report(failing=False)
    for p in report.series:
        p.errors, p.games, p.players = {}, None, None
    html = render_html(report)
    assert "no errors recorded" in html and "no concurrency recorded" in html
    assert html.count("<svg") == 2


def test_baseline_column_and_margin() -> None:
    report = make_report()
    base = make_report(failing=False, timestamp="20261120T010000Z")
    html = render_html(report, base)
    assert "compared with" in html and "20261120T010000Z" in html
    assert "+539 ms" in html  # 951.3 - 412
    c = next(c for c in base.criteria if c.name == "concurrent_games")
    assert margin(c) == ("1 games headroom · 5.0%", True)
    assert nice_step(97) == 20 and nice_step(0.5) == 0.1


def test_write_html_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "out" / "r_report.html"
    write_html(make_report(), target)
    assert target.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in target.parent.iterdir()] == ["r_report.html"]


def _chromium() -> str:
    return require_tool("chromium", "chromium-browser", "google-chrome", install="apt-get install -y chromium")


@pytest.mark.parametrize("kind", ["full", "incomplete"])
def test_renders_in_headless_chromium(tmp_path: Path, kind: str) -> None:
    report = make_report() if kind == "full" else make_report(failing=False, complete=False, series_points=0)
    page = tmp_path / "report.html"
    write_html(report, page, baseline=make_report(failing=False, timestamp="20261120T010000Z") if kind == "full" else None)
    png = tmp_path / "shot.png"
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}", "--window-size=1280,2000", page.as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=90, check=False)
    assert png.exists(), "chromium wrote no screenshot"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 30_000  # a blank 1280x2000 page compresses to a few kB
    keep = os.environ.get("PRODVAL_SCREENSHOT_DIR")
    if keep:  # for people who want to look at the renders
        shutil.copy(png, Path(keep) / f"report_{kind}.png")


def test_an_html_report_that_cannot_be_rendered_costs_a_warning_not_the_verdicts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A template error (here: write_html raising) must not turn judged criteria into errors."""
    import pytest_prodval.html as html_module
    from pytest_prodval import artifacts
    from pytest_prodval.items import ProdvalWarning

    def broken(*args: Any, **kwargs: Any) -> None:
        raise ValueError("template broke")

    class Session:
        def baseline_report(self, scenario_id: str) -> None:
            return None

    monkeypatch.setattr(html_module, "write_html", broken)
    report = make_report()
    report.artifacts["html"] = "old.html"
    verdicts = [c.verdict for c in report.criteria]
    with pytest.warns(ProdvalWarning, match="HTML report could not be written .*template broke.*JSON report and JUnit"):
        artifacts._write_html(Session(), report, tmp_path / "r.html")
    assert "html" not in report.artifacts and [c.verdict for c in report.criteria] == verdicts
    monkeypatch.undo()
    artifacts._write_html(Session(), report, tmp_path / "r.html")
    assert report.artifacts["html"] == "r.html" and (tmp_path / "r.html").stat().st_size > 0
