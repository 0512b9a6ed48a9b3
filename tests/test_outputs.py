"""Extra k6 outputs: parsed and passed as k6 takes them, tagged per run, credentials scrubbed.

The real part: Debian's Prometheus with its remote-write receiver on 127.0.0.1 receives a
tiny run's series (embedded stack, `--prodval-out experimental-prometheus-rw`, the URL from
K6_PROMETHEUS_RW_SERVER_URL with a password and a token in it) and PromQL over HTTP returns
them under the run's testid.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
from conftest import REPO, prometheus_server

from pytest_prodval.outputs import K6Outputs, parse_output, scrub_url, secrets_in
from pytest_prodval.scenarios import ScenarioFileError, load_catalogue, resolve_environment

TESTID = "BCAP_TINY_1G_2P_local_20261201T120000Z"


def test_outputs_become_k6_arguments_and_variables(tmp_path: Path) -> None:
    outputs = K6Outputs.of(
        ["experimental-prometheus-rw=https://rw.example:9090/api/v1/write", "influxdb=http://influx:8086/k6"],
        ["csv=out/{testid}.csv", "influxdb=http://influx:8086/k6"],  # a repeated value runs once
        {"K6_PROMETHEUS_RW_TREND_AS_NATIVE_HISTOGRAM": "true"}, tmp_path,
    )
    assert outputs.args(TESTID, scenario_id="BCAP_TINY_1G_2P", env_name="local") == [
        "--out", "experimental-prometheus-rw",  # k6 ignores an argument here: the URL goes by variable
        "--out", "influxdb=http://influx:8086/k6",
        "--out", f"csv={tmp_path / 'out' / TESTID}.csv",
        "--tag", f"testid={TESTID}", "--tag", "scenario_id=BCAP_TINY_1G_2P", "--tag", "env=local",
    ]
    assert outputs.run_env() == {"K6_PROMETHEUS_RW_TREND_AS_NATIVE_HISTOGRAM": "true",
                                 "K6_PROMETHEUS_RW_SERVER_URL": "https://rw.example:9090/api/v1/write"}
    assert K6Outputs().args(TESTID, scenario_id="X", env_name="local") == [] and K6Outputs().run_env() == {}


@pytest.mark.parametrize(("value", "expected"), [
    ("bogus=1", "'bogus' is not a k6 output; expected one of cloud, csv, *"),
    ("csv", "expected a file, e.g. csv=results/{testid}.csv"),
    ("web-dashboard", "the plugin already runs k6's web dashboard*"),
    ("experimental-prometheus-rw=localhost:9090", "expected experimental-prometheus-rw=http(s)://*"),
])
def test_bad_outputs_are_named(value: str, expected: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_output(value)
    assert caught.match(expected.replace("(", r"\(").replace(")", r"\)").replace("*", ".*").replace("{", r"\{")
                        .replace("}", r"\}"))


def test_two_remote_write_urls_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one experimental-prometheus-rw output per run"):
        K6Outputs.of(["experimental-prometheus-rw=http://a:9090/api/v1/write"],
                     ["experimental-prometheus-rw=http://b:9090/api/v1/write"], {}, tmp_path)


def test_credentials_in_urls_are_masked_and_known_to_the_redactor() -> None:
    text = "influxdb=https://k6:Influx-Pass-1@influx:8086/k6?token=Tok-ABCD&db=k6 and http://plain:8086/x"
    assert scrub_url(text) == "influxdb=https://k6:***@influx:8086/k6?token=***&db=k6 and http://plain:8086/x"
    assert scrub_url("http://k6:Pw-1234@[::1/write") == "http://k6:***@[::1/write"  # unparseable, still masked
    secrets = secrets_in([text], {"K6_INFLUXDB_PASSWORD": "Env-Pass-22", "K6_PROMETHEUS_RW_HEADERS_AUTHORIZATION": "Bearer B-1234",
                                  "K6_PROMETHEUS_RW_PUSH_INTERVAL": "1s"})
    assert secrets == {"Influx-Pass-1", "Tok-ABCD", "Env-Pass-22", "Bearer B-1234"}


def test_environment_outputs_are_expanded_and_checked(tmp_path: Path) -> None:
    folder = tmp_path / "scenarios"
    shutil.copytree(REPO / "scenarios", folder)
    with (folder / "_environments.toml").open("a") as handle:
        handle.write('\n[local.output_env]\nK6_PROMETHEUS_RW_SERVER_URL = "${RW_URL}"\n'
                     '\n[teamenv]\nembedded = true\noutputs = ["influxdb=${INFLUX_URL:-http://influx:8086/k6}"]\n')
    catalogue = load_catalogue(folder)
    team = resolve_environment(catalogue.environments["teamenv"], {})
    assert team.outputs == ["influxdb=http://influx:8086/k6"]
    with pytest.raises(ScenarioFileError, match="environment 'local': output_env.K6_PROMETHEUS_RW_SERVER_URL needs the variable RW_URL"):
        resolve_environment(catalogue.environments["local"], {})
    with pytest.raises(ScenarioFileError, match=r"outputs\[0\]: 'nope' is not a k6 output"):
        resolve_environment(catalogue.environments["teamenv"].model_copy(update={"outputs": ["${X}"]}), {"X": "nope"})
    (folder / "_environments.toml").write_text('[bad]\noutputs = ["csv"]\n[bad.output_env]\nPATH = "/bin"\n')
    with pytest.raises(ScenarioFileError) as caught:
        load_catalogue(folder)
    assert "bad.outputs: Value error, 'csv': expected a file" in str(caught.value)
    assert "bad.output_env: Value error, 'PATH' is not a k6 variable" in str(caught.value)


def test_a_bad_prodval_out_is_a_usage_error(pytester: pytest.Pytester, scenarios_dir: Path) -> None:
    result = pytester.runpytest("--env", "local", "--prodval-out", "influx=http://x", "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--prodval-out 'influx=http://x': 'influx' is not a k6 output; expected one of*"])


RW_PASSWORD = "Rw-Secret-Pass-789"
RW_TOKEN = "Rw-Query-Token-321"


@pytest.mark.slow
def test_prometheus_remote_write_receives_the_run_under_its_testid(
        pytester: pytest.Pytester, scenarios_dir: Path, tmp_path_factory: pytest.TempPathFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(REPO / "tests" / "data" / "tiny.toml", scenarios_dir / "tiny.toml")
    with (scenarios_dir / "_environments.toml").open("a") as handle:  # settings from the environment file
        handle.write('\n[local.output_env]\nK6_PROMETHEUS_RW_TREND_AS_NATIVE_HISTOGRAM = "true"\n'
                     'K6_PROMETHEUS_RW_PUSH_INTERVAL = "1s"\n')
    results = pytester.path / "res"
    with prometheus_server(tmp_path_factory.mktemp("prometheus-rw"), [], job="none", extra_args=[
            "--web.enable-remote-write-receiver", "--enable-feature=native-histograms"]) as prometheus:
        # The URL from the environment, with credentials Prometheus ignores and nothing may show.
        url = f"http://prodval:{RW_PASSWORD}@{prometheus.removeprefix('http://')}/api/v1/write?token={RW_TOKEN}"
        monkeypatch.setenv("K6_PROMETHEUS_RW_SERVER_URL", url)
        result = pytester.runpytest_subprocess(
            "--env", "local", "-m", "tiny", "--prodval-out", "experimental-prometheus-rw",
            "--prodval-results-dir", str(results), "--junitxml", "slo.xml", timeout=120)
        result.stdout.fnmatch_lines(["prodval: extra k6 outputs: experimental-prometheus-rw=http://prodval:***@127.0.0.1:*"
                                     "/api/v1/write?token=*** (samples tagged testid, scenario_id, env)"])
        report = json.loads(next(results.glob("*_slo_report.json")).read_text())
        testid = report["testid"]
        assert testid == f"BCAP_TINY_1G_2P_local_{report['timestamp']}" and report["k6_exit_code"] in (0, 99)
        requests = httpx.get(f"{prometheus}/api/v1/query", params={"query": f'k6_http_reqs_total{{testid="{testid}"}}'},
                             timeout=5).json()
        durations = httpx.get(f"{prometheus}/api/v1/query",
                              params={"query": f'k6_http_req_duration_seconds{{testid="{testid}"}}'}, timeout=5).json()
    series = requests["data"]["result"]
    assert series, requests
    assert {s["metric"]["testid"] for s in series} == {testid}
    assert {(s["metric"]["scenario_id"], s["metric"]["env"]) for s in series} == {("BCAP_TINY_1G_2P", "local")}
    # k6 counted these requests itself; Prometheus holds the same total
    summary = json.loads(next(results.glob("*_summary.json")).read_text())
    assert sum(float(s["value"][1]) for s in series) == summary["metrics"]["http_reqs"]["values"]["count"]
    assert durations["data"]["result"] and all("histogram" in s for s in durations["data"]["result"])  # native
    assert report["outputs"] == [scrub_url(f"experimental-prometheus-rw={url}")]
    for path in [*results.rglob("*"), pytester.path / "slo.xml"]:
        if path.is_file() and not path.name.endswith(".gz"):
            text = path.read_text(errors="replace")
            assert RW_PASSWORD not in text and RW_TOKEN not in text, path
    assert RW_TOKEN not in result.stdout.str() and RW_PASSWORD not in result.stdout.str()
