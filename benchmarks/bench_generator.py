"""Generator throughput: k6 through the plugin's executors vs bare k6 with no outputs, against nginx.

    python benchmarks/bench_generator.py [--vus 20] [--duration 15s] [--repeat 2] [--segments 2]

Starts Debian's nginx (apt-get install nginx-light) on a free 127.0.0.1 port with its own
config in a temporary folder (one worker, `return 200`), stopped by its PID at the end.
Then alternates, in the same run (A B C D E, E D C B A, ...), the same script (benchmarks/data/throughput.js):

* A, bare: `k6 run --no-usage-report --address "" --quiet <script>`: no outputs at all;
* B, plugin: the plugin's `local` executor with the plugin's own k6 command line and
  environment (k6run.k6_command, k6run.k6_env: raw `--out json=<...>.json.gz`, web-dashboard
  export, JSON log, REST API on loopback);
* C, segments (`--segments N`, 0 to skip): the `segments` executor with N processes, the
  flags k6-operator gives its runner pods;
* D, the plugin without its web dashboard (what the raw output alone costs), and E, bare k6
  plus only the dashboard export (what the dashboard alone costs).

Throughput is http_reqs / s from each run's own summary. Prints each run, the medians and
the ratios B/A and C/A; target B/A >= 0.95. Also the load average and foreign k6 processes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_overhead import machine_note  # noqa: E402

from pytest_prodval import processes  # noqa: E402
from pytest_prodval.artifacts import RunPaths, load_summary  # noqa: E402
from pytest_prodval.executors import Launch, executor_for  # noqa: E402
from pytest_prodval.k6run import find_k6, k6_env, run_k6  # noqa: E402
from pytest_prodval.scenarios import ExecutorConfig  # noqa: E402

SCRIPT = REPO / "benchmarks" / "data" / "throughput.js"
NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {folder}/body;
  proxy_temp_path {folder}/proxy;
  fastcgi_temp_path {folder}/fastcgi;
  uwsgi_temp_path {folder}/uwsgi;
  scgi_temp_path {folder}/scgi;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    location / {{ return 200 "ok\\n"; }}
  }}
}}
"""


def start_nginx(folder: Path) -> tuple[object, str]:
    """nginx on a free loopback port (our own config, no root paths); returns (process, URL)."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        sys.exit("nginx is not installed: apt-get install -y nginx-light")
    port = processes.free_loopback_port()
    (folder / "nginx.conf").write_text(NGINX_CONF.format(folder=folder, port=port))
    log = (folder / "nginx.out").open("ab")
    proc = processes.spawn([binary, "-p", str(folder), "-c", str(folder / "nginx.conf")], stdout=log, stderr=log)
    import httpx

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5).status_code == 200:
                return proc, f"http://127.0.0.1:{port}/"
        except httpx.HTTPError:
            time.sleep(0.05)
    processes.stop(proc)
    sys.exit(f"nginx did not start: {(folder / 'error.log').read_text(errors='replace')[-500:]}")


def rate(summaries: list[Path]) -> float:
    """Summed http_reqs / s over one or more instance summaries."""
    return sum(float(load_summary(path)["metrics"]["http_reqs"]["values"]["rate"]) for path in summaries)


def bare(k6: str, folder: Path, env: dict[str, str]) -> float:
    """A: k6 with no outputs at all."""
    summary = folder / "summary.json"
    argv = [k6, "run", "--no-usage-report", "--address", "", "--quiet", str(SCRIPT)]
    result = run_k6(argv, env={**env, "PRODVAL_SUMMARY_PATH": str(summary)}, cwd=SCRIPT.parent,
                    log_path=folder / "k6.log", timeout_s=300)
    assert result.ok, result.problem()
    return rate([summary])


def through_executor(kind: str, count: int, k6: str, folder: Path, env: dict[str, str], duration_s: float) -> float:
    """B / C: the plugin's executor with the plugin's k6 environment (raw output, dashboard export)."""
    paths = RunPaths.create(folder, "BENCH", "local", time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    run_env = {**k6_env({}, None, paths.dashboard, duration_s), "PRODVAL_SUMMARY_PATH": str(paths.summary)}
    run_env.update({k: v for k, v in env.items() if k.startswith(("TARGET_", "BENCH_", "K6_WEB_DASHBOARD"))})
    run_env.pop("PRODVAL_CONFIG")
    launch = Launch(scenario_id="BENCH", k6=k6, script=SCRIPT, config={}, env=run_env, secrets={}, paths=paths,
                    count=count, timeout_s=300)
    instances = executor_for(ExecutorConfig(kind=kind, parallelism=count if kind != "local" else None)).run(launch)
    problems = [p for p in (i.problem() for i in instances) if p]
    assert not problems, problems
    return rate([i.paths.summary for i in instances])


def _bare_with_dashboard(k6: str, folder: Path, env: dict[str, str], duration_s: float, _: int) -> float:
    """E: bare k6 plus only the plugin's web-dashboard export (what the dashboard alone costs)."""
    dashboard = k6_env({}, None, folder / "dashboard.html", duration_s)
    keys = [k for k in dashboard if k.startswith("K6_WEB_DASHBOARD")]
    return bare(k6, folder, {**env, **{k: dashboard[k] for k in keys}})


def _plugin_without_dashboard(k6: str, folder: Path, env: dict[str, str], duration_s: float, _: int) -> float:
    """D: the plugin's command line (raw .json.gz output) without the web dashboard (what raw output alone costs)."""
    return through_executor("local", 1, k6, folder, {**env, "K6_WEB_DASHBOARD": "false"}, duration_s)


SIDES = {
    "A bare": lambda k6, folder, env, duration_s, _: bare(k6, folder, env),
    "B plugin": lambda k6, folder, env, duration_s, _: through_executor("local", 1, k6, folder, env, duration_s),
    "C segments": lambda k6, folder, env, duration_s, n: through_executor("segments", n, k6, folder, env, duration_s),
    "D plugin, no dashboard": _plugin_without_dashboard,
    "E bare + dashboard": _bare_with_dashboard,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vus", type=int, default=20)
    parser.add_argument("--duration", default="15s")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--segments", type=int, default=2, help="instances of the segments executor (0: skip)")
    args = parser.parse_args()
    k6 = find_k6("k6")
    if k6 is None:
        sys.exit("k6 not found")
    from pytest_prodval.scenarios import parse_duration

    duration_s = parse_duration(args.duration)
    with tempfile.TemporaryDirectory(prefix="prodval-bench-gen-") as tmp:
        folder = Path(tmp)
        (folder / "nginx").mkdir()
        nginx, url = start_nginx(folder / "nginx")
        env = {**os.environ, "TARGET_URL": url, "BENCH_VUS": str(args.vus), "BENCH_DURATION": args.duration}
        print(f"nginx {url}, {args.vus} VUs, {args.duration}; {machine_note()}")
        runs: dict[str, list[float]] = {name: [] for name in SIDES}
        try:
            for n in range(args.repeat):
                order = list(SIDES) if n % 2 == 0 else list(reversed(SIDES))  # A B C D E, then E D C B A
                for name in order:
                    if name.startswith("C") and not args.segments:
                        continue
                    run = folder / f"run{n}-{name[0]}"
                    run.mkdir()
                    value = SIDES[name](k6, run, env, duration_s, args.segments)
                    runs[name].append(value)
                    print(f"  {name:<22} {value:>10,.0f} req/s   ({machine_note()})", flush=True)
                    shutil.rmtree(run, ignore_errors=True)
        finally:
            processes.stop(nginx)  # by its PID (process group)
        medians = {name: statistics.median(values) for name, values in runs.items() if values}
        print(json.dumps({name: round(value) for name, value in medians.items()}))
        base = medians["A bare"]
        for name, value in medians.items():
            if name != "A bare":
                target = "  (target >= 0.95)" if name.startswith("B") else ""
                print(f"{name} / bare: {value / base:.3f}x{target}")


if __name__ == "__main__":
    main()
