"""The exact engine on k6-shaped raw files: bounded memory changes nothing, bad input names the line."""

from __future__ import annotations

import gzip
import json
import math
import random
from pathlib import Path

import pytest

from pytest_prodval import exact
from pytest_prodval.models import CriterionResult
from pytest_prodval.rules import apply
from pytest_prodval.scenarios import load_catalogue

from conftest import SCENARIOS, _point

T0 = 1_800_000_000_000


def _definition(name: str, kind: str) -> str:
    return json.dumps({"type": "Metric", "data": {"name": name, "type": kind, "contains": "default", "thresholds": [],
                                                  "submetrics": None}, "metric": name}, separators=(",", ":"))


def _raw(path: Path, n: int = 3000, seed: int = 3) -> list[tuple[float, float, str]]:
    """A raw file of `n` requests over 60 s (out of order, as k6 flushes); returns (t, ms, name)."""
    rng = random.Random(seed)
    lines = [_definition("http_req_duration", "trend"), _definition("http_req_failed", "rate")]
    samples = []
    for _ in range(n):
        t = T0 + rng.uniform(0, 60_000)
        ms = round(rng.lognormvariate(3, 1), 6) if rng.random() > 0.01 else 0.0
        name = rng.choice(["login", "game_state"])
        samples.append((t, ms, name))
        lines.append(_point("http_req_duration", int(t), ms).replace('"phase":"ramp"', f'"name":"{name}"'))
        lines.append(_point("http_req_failed", int(t), 1 if ms > 100 else 0))
    path.write_text("\n".join(lines) + "\n")
    return [(int(t), ms, name) for t, ms, name in samples]


def _k6_p(values: list[float], pct: float) -> float:
    values = sorted(values)
    i = pct / 100 * (len(values) - 1)
    return values[math.floor(i)] + (values[math.ceil(i)] - values[math.floor(i)]) * (i - math.floor(i))


@pytest.mark.parametrize("buffer_values", [10, 10_000_000], ids=["two-pass", "one-pass"])
def test_percentiles_are_k6s_formula_over_the_window_whatever_the_buffer(tmp_path: Path, buffer_values: int) -> None:
    samples = _raw(tmp_path / "raw.json")
    window = (T0 + 10_000.0, T0 + 50_000.0)
    queries = exact.queries_for(["http_req_duration{phase:steady}", "http_req_duration{name:login}",
                                 "http_req_failed{phase:steady}"], {"http_req_duration{phase:steady}": 5_000})
    measured = exact.measure([tmp_path / "raw.json"], queries, window=window, pcts=(50, 95, 99, 99.9),
                             buffer_values=buffer_values)
    assert measured.two_pass is (buffer_values == 10)
    steady = [ms for t, ms, _ in samples if window[0] <= t < window[1]]
    got = measured.metrics["http_req_duration{phase:steady}"]["values"]
    assert got["count"] == len(steady) and got["min"] == min(steady) and got["max"] == max(steady)
    for pct, key in ((50, "med"), (95, "p(95)"), (99, "p(99)"), (99.9, "p(99.9)")):
        assert got[key] == _k6_p(steady, pct), key
    login = [ms for _, ms, name in samples if name == "login"]
    assert measured.metrics["http_req_duration{name:login}"]["values"]["p(95)"] == _k6_p(login, 95)
    failed = measured.metrics["http_req_failed{phase:steady}"]["values"]
    assert failed["passes"] == sum(1 for ms in steady if ms > 100) and failed["fails"] == len(steady) - failed["passes"]
    # Per 5 s bucket of the window, exact too: 8 buckets, each its own p(95).
    rows = measured.buckets["http_req_duration{phase:steady}"]
    assert len(rows) == 8
    for i, row in enumerate(rows):
        inside = [ms for t, ms, _ in samples if window[0] + i * 5000 <= t < window[0] + (i + 1) * 5000]
        assert row is not None and row["p(95)"] == _k6_p(inside, 95)


def test_several_files_are_one_run(tmp_path: Path) -> None:
    a, b = _raw(tmp_path / "a.json", seed=1), _raw(tmp_path / "b.json", seed=2)
    q = exact.queries_for(["http_req_duration"])
    merged = exact.measure([tmp_path / "a.json", tmp_path / "b.json"], q, window=None, buffer_values=10)
    values = [ms for _, ms, _ in a + b]
    got = merged.metrics["http_req_duration"]["values"]
    assert got["count"] == len(values) and got["p(95)"] == _k6_p(values, 95) and got["med"] == _k6_p(values, 50)


@pytest.mark.parametrize(("damage", "message"), [
    ("cut", ":6002: the last line is cut"),
    ("garbage", ":5: not a k6 JSON record"),
    ("bad-json", ":7: a corrupt k6 point"),
    ("twice", "defined a second time"),
    ("gzip-cut", "the gzip stream is cut"),
])
def test_bad_input_is_an_error_naming_file_and_line(tmp_path: Path, damage: str, message: str) -> None:
    path = tmp_path / "raw.json"
    _raw(path)
    data = path.read_bytes()
    lines = data.split(b"\n")
    if damage == "cut":
        data = data[:-30]
    elif damage == "garbage":
        lines[4] = b"\x00garbage"
        data = b"\n".join(lines)
    elif damage == "bad-json":
        lines[6] = lines[6].replace(b'"value":', b'"value":,')
        data = b"\n".join(lines)
    elif damage == "twice":
        data = data + data
    else:
        path = tmp_path / "raw.json.gz"
        data = gzip.compress(data)[:-100]
    path.write_bytes(data)
    with pytest.raises(exact.RawFileError, match="raw.json") as info:
        exact.measure([path], exact.queries_for(["http_req_duration"]), window=None)
    assert message in str(info.value)


def _result(verdict: str) -> CriterionResult:
    return CriterionResult(name="threshold__http_req_duration__p95_lt_500", scenario_id="X", metric="http_req_duration",
                           expression="p(95)<500", aggregation="p(95)", operator="<", threshold=500, observed=120,
                           unit="ms", profile="staging", verdict=verdict, message="m")  # type: ignore[arg-type]


def test_k6s_verdict_is_recorded_and_a_disagreement_is_an_error_naming_both() -> None:
    catalogue = load_catalogue(SCENARIOS)
    criterion = catalogue.criteria_for(catalogue.scenario("baseline"))[0].model_copy(
        update={"k6_threshold": "http_req_duration", "expression_text": "p(95)<500", "coverage": None})
    export = {"metrics": {"http_req_duration": {"p(95)": 120, "thresholds": {"p(95)<500": False}}}}
    handle = {"metrics": {"http_req_duration": {"values": {}, "thresholds": {"p(95)<500": {"ok": False}}}}}
    agreed = apply(_result("pass"), criterion, buckets=None, summary=export)
    assert (agreed.verdict, agreed.k6_verdict) == ("pass", "pass") and "k6 agrees" in agreed.message
    disagree = apply(_result("pass"), criterion, buckets=None, summary=handle)
    assert disagree.verdict == "error" and disagree.k6_verdict == "fail"
    assert "k6's own verdict on http_req_duration: p(95)<500 is fail, ours is pass" in disagree.message
    unknown = apply(_result("pass"), criterion, buckets=None, summary=None)
    assert unknown.verdict == "pass" and "not in its summary" in unknown.message


def test_steady_stage_of_a_scripts_own_stages(tmp_path: Path) -> None:
    from pytest_prodval.scenarios import Scenario

    (tmp_path / "staged.js").write_text(
        "import http from 'k6/http';\n"
        "export const options = { scenarios: { ramp: { executor: 'ramping-vus', startTime: '2s', stages: [\n"
        "  { duration: '10s', target: 5 }, { duration: '1m', target: 5 }, { duration: '5s', target: 0 } ] } } };\n"
        "export default function () { http.get(__ENV.BASE_URL); }\n")
    scenario = Scenario.model_validate({"id": "X", "marker": "x", "script": "staged.js", "catalogues": ["generic"],
                                        "steady_stage": 1, "source": tmp_path / "x.toml"})
    assert scenario.steady_window_s() == (12.0, 72.0)  # startTime 2 s + the 10 s ramp, then the 1 min hold
