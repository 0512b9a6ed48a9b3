"""Command-line options, ini keys and env vars → one validated `Settings` object.

Precedence for every setting: command-line option → environment variable → ini key →
default; the source of each value is kept and echoed in the report header.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import BaseModel, ConfigDict

from .outputs import parse_output

if TYPE_CHECKING:
    from .scenarios import Environment

ENV_DEST = "prodval_env"
SHORT_ENV_DEST = "prodval_env_short"

# The plan's §3.4 pattern for the staging bypass (RATE_LIMIT_BYPASS_USER_PATTERN).
PLAN_BYPASS_PATTERN = r"loadtest.*@loadtest\.local"

# Hosts that look like production unless the user configures their own patterns.
DEFAULT_PRODUCTION_HOSTS = r"(^|[.-])(prod|production|live)([.-]|$)"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _time_scale(value: str) -> float:
    try:
        scale = float(value)
    except ValueError:
        raise pytest.UsageError(f"--prodval-time-scale: {value!r} is not a number; expected e.g. 0.05") from None
    if not 0 < scale <= 10:
        raise pytest.UsageError(f"--prodval-time-scale: {value} must be > 0 and <= 10 (1 = the plan's durations)")
    return scale


EXECUTOR_KINDS = ("local", "segments", "k6-operator")


def _executor_kind(value: str | None) -> str | None:
    if value is None:
        return None
    if value not in EXECUTOR_KINDS:
        raise pytest.UsageError(f"--prodval-executor / PRODVAL_EXECUTOR: {value!r} is not an executor; "
                                f"expected one of {', '.join(EXECUTOR_KINDS)}")
    return value


def _parallelism(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.strip().isdigit() or int(value) < 1:
        raise pytest.UsageError(f"--prodval-parallelism / PRODVAL_PARALLELISM: {value!r} is not a whole number >= 1")
    return int(value)


def _flag(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise pytest.UsageError(f"{name}: {value!r} is not a boolean; expected true or false")


def add_options(parser: pytest.Parser) -> None:
    """Register the namespaced options and ini keys (`--env` is added separately, see plugin)."""
    group = parser.getgroup("prodval", "production validation (pytest-prodval)")
    group.addoption("--prodval-env", dest=ENV_DEST, metavar="NAME",
                    help="Environment to validate (staging, perf, local, ...); nothing runs without one. Env var PRODVAL_ENV")
    group.addoption("--prodval-scenarios", metavar="DIR",
                    help="Folder with scenario, criteria and environment files (default: scenarios/ beside the ini file, else in the current folder)")
    group.addoption("--prodval-results-dir", metavar="DIR",
                    help="Where run artifacts go (default: tests/load/results)")
    group.addoption("--prodval-profile", metavar="PROFILE",
                    help="Judge every criterion at this SLO profile instead of the scenario's own")
    group.addoption("--prodval-time-scale", metavar="FACTOR",
                    help="Multiply every stage duration by FACTOR (e.g. 0.05 for a quick run); concurrency targets stay")
    group.addoption("--prodval-from-results", metavar="PATH",
                    help="Re-evaluate criteria from any k6 run: raw --out json file (.gz or not, any name), summary export, handleSummary JSON, our artifacts, or a folder of them; no k6, no network")
    group.addoption("--prodval-scenario", metavar="NAME",
                    help="With --prodval-from-results: the scenario (id or marker) whose criteria judge files whose names do not say")
    group.addoption("--prodval-k6", metavar="PATH", help="The k6 binary (default: k6 on PATH). Env var PRODVAL_K6")
    group.addoption("--prodval-seed", metavar="BOOL",
                    help="Seed the load-test user pool before the run (default: true for embedded stacks, else SEED_LOADTEST_USERS)")
    group.addoption("--prodval-bypass", metavar="BOOL",
                    help="Enable the staging rate-limit bypass during k6 runs (default: RATE_LIMIT_BYPASS_ENABLED)")
    group.addoption("--prodval-baseline", metavar="PATH",
                    help="Adds run-over-run comparison criteria against an SLO report, or against the median of "
                         "the last N GO runs of the same scenario and env in a results folder")
    group.addoption("--prodval-baseline-runs", metavar="N",
                    help="Baseline = the median of the last N GO runs (default 5); without --prodval-baseline, "
                         "of the results folder")
    group.addoption("--prodval-update-docs", action="store_true", default=None,
                    help="Update docs/testing/BASELINE_CAPACITY.md and the readiness checklist from the results")
    group.addoption("--prodval-executor", metavar="KIND",
                    help="Run k6 as local (one process), segments (N processes here) or k6-operator (Kubernetes), "
                         "instead of the environment's [ENV.executor] kind. Env var PRODVAL_EXECUTOR")
    group.addoption("--prodval-parallelism", metavar="N",
                    help="Number of k6 instances for segments / k6-operator (overrides parallelism and "
                         "vus_per_instance). Env var PRODVAL_PARALLELISM")
    group.addoption("--prodval-out", action="append", default=[], metavar="VALUE",
                    help="An extra k6 output as k6 takes --out (experimental-prometheus-rw, influxdb=URL, csv=PATH, ...); "
                         "repeatable, added to the environment's outputs")
    group.addoption("--prodval-junit-properties", action="store_true", default=None,
                    help="Also write testcase <properties> in JUnit XML (not valid against strict junit-10.xsd)")
    parser.addini("prodval_env", "Default environment (see --prodval-env)")
    parser.addini("prodval_scenarios", "Scenarios folder, relative to the ini file")
    parser.addini("prodval_results_dir", "Results folder, relative to the ini file")
    parser.addini("prodval_profile", "Default SLO profile override")
    parser.addini("prodval_time_scale", "Default time scale")
    parser.addini("prodval_production_hosts", "Regex of host names that are production and must never be targeted")


def add_short_env_option(parser: pytest.Parser) -> bool:
    """Add `--env` unless an earlier plugin or conftest already owns it; return whether we added it."""
    if option_taken(parser, "--env"):
        return False
    parser.getgroup("prodval").addoption(
        "--env", dest=SHORT_ENV_DEST, metavar="NAME", help="Short for --prodval-env (unless a conftest defines --env)"
    )
    return True


def option_taken(parser: pytest.Parser, name: str) -> bool:
    """Whether any option group already defines `name` (argparse would refuse a second one).

    Private pytest API, kept here alone: `Parser._anonymous` / `_groups` (checked on pytest
    9.0.3 and 9.2.0); pytest has no public way to ask whether an option exists before adding it.
    """
    groups = [getattr(parser, "_anonymous", None), *getattr(parser, "_groups", [])]
    return any(name in option.names() for group in groups if group is not None for option in group.options)


@dataclass(frozen=True)
class PoolSettings:
    """The load-test user pool (plan §3.2, §3.3) — the password is kept apart, never in config."""

    prefix: str = "loadtest_user_"
    domain: str = "loadtest.local"
    size: int = 400

    def email(self, n: int) -> str:
        """The pool user for (1-based) index n; VU n logs in as user ((n-1) % size)+1."""
        return f"{self.prefix}{n}@{self.domain}"

    @property
    def email_format(self) -> str:
        """The e-mail pattern, `{n}` for the index: the one fact Python and the k6 script share."""
        return f"{self.prefix}{{n}}@{self.domain}"


def _env_number(env: Mapping[str, str], name: str, default: float | None, *, minimum: float = 0.0,
                whole: bool = False, above: bool = False) -> float | None:
    """A numeric environment variable, or a UsageError that names it and what is expected."""
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    bad = not math.isfinite(value) or value < minimum or (above and value <= minimum) or (whole and not value.is_integer())
    if bad:
        kind = "a whole number" if whole else "a number"
        bound = f"> {minimum:g}" if above else f">= {minimum:g}"
        raise pytest.UsageError(f"{name}={text!r}: expected {kind} {bound}")
    return value


def _baseline_runs(text: str | None, baseline: Path | None) -> int | None:
    """--prodval-baseline-runs: a whole number >= 1, and only with a folder (a report is one run)."""
    if text is None:
        return None
    try:
        runs = int(text)
    except ValueError:
        runs = 0
    if runs < 1:
        raise pytest.UsageError(f"--prodval-baseline-runs: {text!r} is not a whole number >= 1")
    if baseline is not None and baseline.is_file():
        raise pytest.UsageError(f"--prodval-baseline-runs: {baseline} is one SLO report; give a results folder to take a median")
    return runs


def _env_faults(env: Mapping[str, str], name: str) -> dict[str, Any] | None:
    text = env.get(name, "").strip()
    if not text:
        return None
    try:
        faults = json.loads(text)
    except ValueError as exc:
        raise pytest.UsageError(f"{name}: not JSON ({exc}); expected e.g. '{{\"error_5xx_rate\": 0.05}}'") from None
    if not isinstance(faults, dict):
        raise pytest.UsageError(f"{name}: expected a JSON object of fault knobs, got {type(faults).__name__}")
    return faults


def pool_from_env(env: Mapping[str, str]) -> PoolSettings:
    """LOADTEST_USER_POOL_* (defaults as in the plan); a bad value is a UsageError naming the variable."""
    size = _env_number(env, "LOADTEST_USER_POOL_SIZE", 400, minimum=1, whole=True)
    prefix = env.get("LOADTEST_USER_POOL_PREFIX") or "loadtest_user_"
    domain = env.get("LOADTEST_USER_POOL_DOMAIN") or "loadtest.local"
    if not re.fullmatch(r"[A-Za-z0-9._+-]+", prefix):
        raise pytest.UsageError(f"LOADTEST_USER_POOL_PREFIX={prefix!r}: expected letters, digits and . _ + - only")
    if not re.fullmatch(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+", domain):
        raise pytest.UsageError(f"LOADTEST_USER_POOL_DOMAIN={domain!r}: expected a domain such as loadtest.local")
    return PoolSettings(prefix=prefix, domain=domain, size=int(size or 400))


class Settings(BaseModel):
    """All settings of a session, validated once at configure time."""

    model_config = ConfigDict(frozen=True)

    env: str | None
    env_source: str | None
    scenarios_dir: Path
    scenarios_source: str
    results_dir: Path
    profile: str | None
    time_scale: float
    from_results: Path | None
    from_scenario: str | None
    k6_bin: str
    seed: bool | None
    bypass: bool
    baseline: Path | None  # an SLO report, or a folder of runs (median of the last GO ones)
    baseline_runs: int | None  # --prodval-baseline-runs
    update_docs: bool
    junit_properties: bool
    executor_kind: str | None = None  # --prodval-executor / PRODVAL_EXECUTOR
    parallelism: int | None = None  # --prodval-parallelism / PRODVAL_PARALLELISM
    production_hosts: re.Pattern[str]
    short_env_option: bool
    moved_rootdir: Path | None = None  # pytest's rootdir, when an option's value moved it away from the project
    outputs: tuple[str, ...] = ()  # --prodval-out, after the environment's `outputs`
    pool: PoolSettings = PoolSettings()
    token_ttl_fallback_s: float | None = None  # LOADTEST_AUTH_TOKEN_TTL_S (plan §3.5)
    refresh_window_s: float = 60.0  # LOADTEST_AUTH_REFRESH_WINDOW_S
    bypass_lease_s: float = 120.0  # PRODVAL_BYPASS_LEASE_S
    bypass_pattern: str = PLAN_BYPASS_PATTERN  # RATE_LIMIT_BYPASS_USER_PATTERN
    local_faults: dict[str, Any] | None = None  # PRODVAL_LOCAL_FAULTS
    local_ai_faults: dict[str, Any] | None = None  # PRODVAL_LOCAL_AI_FAULTS

    @property
    def active(self) -> bool:
        """Whether this session validates anything (an environment or offline results)."""
        return self.env is not None or self.from_results is not None

    def header_lines(self) -> list[str]:
        """Lines for pytest's report header."""
        lines = [f"prodval: env={self.env or '-'} (from {self.env_source or 'nowhere: plugin idle'})"]
        if self.active:
            lines.append(
                f"prodval: scenarios={self.scenarios_dir} (from {self.scenarios_source}), results={self.results_dir}, "
                f"profile={self.profile or 'per scenario'}, time-scale={self.time_scale:g}"
            )
        if self.baseline is not None or self.baseline_runs is not None:
            from .baseline import DEFAULT_RUNS

            where = self.baseline or self.results_dir
            lines.append(f"prodval: baseline {where}" + ("" if where.is_file() else
                         f" (median of the last {self.baseline_runs or DEFAULT_RUNS} GO runs of each scenario and env)"))
        if self.from_results:
            lines.append(f"prodval: re-evaluating {self.from_results} (no k6, no network)")
        if self.moved_rootdir is not None:
            lines.append(f"prodval: pytest took its rootdir from an option's value ({self.moved_rootdir}; pytest reads "
                         "existing paths among the arguments), so the terminal shows paths relative to it and the "
                         "project's ini file is not read; JUnit names are unaffected. Write the option as "
                         "--prodval-results-dir=DIR or add --rootdir .")
        if not self.short_env_option:
            lines.append("prodval: --env belongs to another plugin or conftest here; use --prodval-env")
        return lines


def _pick(config: pytest.Config, option: Any, env_var: str | None, ini: str | None) -> tuple[str | None, str | None]:
    """First value set among option → env var → ini, with its source."""
    if option not in (None, ""):
        return str(option), "option"
    if env_var and os.environ.get(env_var):
        return os.environ[env_var], f"env {env_var}"
    if ini:
        value = config.getini(ini)
        if value:
            return str(value), f"ini {ini}"
    return None, None


def project_dir(config: pytest.Config) -> Path:
    """The folder defaults are relative to: the ini file's, else where pytest was started.

    Not `config.rootpath`: pytest derives rootdir from existing paths among the arguments,
    option values included, so `--prodval-results-dir /some/dir` would move it there.
    """
    return Path(config.inipath).parent if config.inipath else Path(config.invocation_params.dir)


def _moved_rootdir(config: pytest.Config, values: list[str | None]) -> Path | None:
    """pytest's rootdir when it is the value of one of our path options (pytest 8/9 take existing
    paths among all arguments, option values too, for the rootdir when no ini file says)."""
    rootpath = Path(config.rootpath)
    if config.inipath is not None or rootpath == Path(config.invocation_params.dir):
        return None
    given = [(Path(config.invocation_params.dir) / value).resolve() for value in values if value]
    return rootpath if any(path.is_relative_to(rootpath.resolve()) for path in given) else None


def _folder(config: pytest.Config, value: str, source: str | None) -> Path:
    """A path setting: relative to the ini file when it comes from there, else to where pytest was started."""
    base = project_dir(config) if source and source.startswith("ini") else Path(config.invocation_params.dir)
    return (base / value).resolve()


def load_settings(config: pytest.Config) -> Settings:
    """Build Settings from the config; bad values raise pytest.UsageError."""
    opt = config.option
    short_env = getattr(opt, SHORT_ENV_DEST, None)
    env, env_source = _pick(config, getattr(opt, ENV_DEST, None) or short_env, "PRODVAL_ENV", "prodval_env")
    if env_source == "option":
        env_source = "option --env" if short_env and not getattr(opt, ENV_DEST, None) else "option --prodval-env"
    rootdir = project_dir(config)
    scen, scen_source = _pick(config, opt.prodval_scenarios, "PRODVAL_SCENARIOS", "prodval_scenarios")
    scenarios_dir = _folder(config, scen, scen_source) if scen else rootdir / "scenarios"
    results, results_source = _pick(config, opt.prodval_results_dir, "PRODVAL_RESULTS_DIR", "prodval_results_dir")
    profile, _ = _pick(config, opt.prodval_profile, "PRODVAL_PROFILE", "prodval_profile")
    scale, _ = _pick(config, opt.prodval_time_scale, "PRODVAL_TIME_SCALE", "prodval_time_scale")
    from_results = _folder(config, opt.prodval_from_results, "option") if opt.prodval_from_results else None
    if from_results is not None and not from_results.exists():
        raise pytest.UsageError(f"--prodval-from-results: {from_results} does not exist")
    if opt.prodval_scenario and from_results is None:
        raise pytest.UsageError("--prodval-scenario names the scenario of --prodval-from-results files; give that option too")
    seed_text, _ = _pick(config, opt.prodval_seed, "SEED_LOADTEST_USERS", None)
    bypass_text, _ = _pick(config, opt.prodval_bypass, "RATE_LIMIT_BYPASS_ENABLED", None)
    baseline = _folder(config, opt.prodval_baseline, "option") if opt.prodval_baseline else None
    if baseline is not None and not baseline.exists():
        raise pytest.UsageError(f"--prodval-baseline: {baseline} does not exist (expected a *_slo_report.json or a results folder)")
    baseline_runs = _baseline_runs(opt.prodval_baseline_runs, baseline)
    hosts, _ = _pick(config, None, "PRODVAL_PRODUCTION_HOSTS", "prodval_production_hosts")
    try:
        production_hosts = re.compile(hosts or DEFAULT_PRODUCTION_HOSTS, re.IGNORECASE)
    except re.error as exc:
        raise pytest.UsageError(f"prodval_production_hosts: {hosts!r} is not a regular expression: {exc}") from None
    k6_bin, _ = _pick(config, opt.prodval_k6, "PRODVAL_K6", None)
    for value in opt.prodval_out:
        try:
            parse_output(value)
        except ValueError as exc:
            raise pytest.UsageError(f"--prodval-out {exc}") from None
    env_vars = os.environ
    pattern = env_vars.get("RATE_LIMIT_BYPASS_USER_PATTERN") or PLAN_BYPASS_PATTERN
    try:
        re.compile(pattern)
    except re.error as exc:
        raise pytest.UsageError(f"RATE_LIMIT_BYPASS_USER_PATTERN={pattern!r} is not a regular expression: {exc}") from None
    return Settings(
        env=env,
        env_source=env_source,
        scenarios_dir=scenarios_dir,
        scenarios_source=scen_source or "default",
        results_dir=_folder(config, results, results_source) if results else rootdir / "tests" / "load" / "results",
        profile=profile,
        time_scale=_time_scale(scale) if scale else 1.0,
        from_results=from_results,
        from_scenario=opt.prodval_scenario,
        k6_bin=k6_bin or "k6",
        seed=_flag(seed_text, "--prodval-seed / SEED_LOADTEST_USERS") if seed_text is not None else None,
        bypass=_flag(bypass_text, "--prodval-bypass / RATE_LIMIT_BYPASS_ENABLED") if bypass_text is not None else False,
        baseline=baseline,
        baseline_runs=baseline_runs,
        update_docs=bool(opt.prodval_update_docs),
        junit_properties=bool(opt.prodval_junit_properties),
        executor_kind=_executor_kind(_pick(config, opt.prodval_executor, "PRODVAL_EXECUTOR", None)[0]),
        parallelism=_parallelism(_pick(config, opt.prodval_parallelism, "PRODVAL_PARALLELISM", None)[0]),
        production_hosts=production_hosts,
        short_env_option=hasattr(opt, SHORT_ENV_DEST),
        moved_rootdir=_moved_rootdir(config, [opt.prodval_results_dir, opt.prodval_from_results]),
        outputs=tuple(opt.prodval_out),
        pool=pool_from_env(env_vars),
        token_ttl_fallback_s=_env_number(env_vars, "LOADTEST_AUTH_TOKEN_TTL_S", None, above=True),
        refresh_window_s=float(_env_number(env_vars, "LOADTEST_AUTH_REFRESH_WINDOW_S", 60.0) or 0.0),
        bypass_lease_s=float(_env_number(env_vars, "PRODVAL_BYPASS_LEASE_S", 120.0, above=True) or 120.0),
        bypass_pattern=pattern,
        local_faults=_env_faults(env_vars, "PRODVAL_LOCAL_FAULTS"),
        local_ai_faults=_env_faults(env_vars, "PRODVAL_LOCAL_AI_FAULTS"),
    )


def refuse_production(environment: Environment, pattern: re.Pattern[str]) -> None:
    """UsageError before anything is sent if the environment is, or looks like, production."""
    from urllib.parse import urlsplit

    name, production = environment.name, environment.production
    urls = [environment.base_url, environment.ws_url, environment.ai_service_url, environment.metrics_url,
            environment.prometheus_url]
    if production:
        raise pytest.UsageError(
            f"environment {name!r} is marked production: pytest-prodval only targets staging or perf stacks (plan scope)"
        )
    for url in filter(None, urls):
        host = urlsplit(url).hostname or ""
        if pattern.search(host):
            raise pytest.UsageError(
                f"environment {name!r}: {url} looks like production (host {host!r} matches {pattern.pattern!r}); "
                "pytest-prodval only targets staging or perf stacks. If this host is not production, set "
                "PRODVAL_PRODUCTION_HOSTS / ini prodval_production_hosts to a pattern that excludes it"
            )


def with_executor_overrides(environment: Environment, settings: Settings, where: Path) -> Environment:
    """The environment with --prodval-executor / --prodval-parallelism applied; a UsageError if the result is invalid."""
    from pydantic import ValidationError

    from .scenarios import ExecutorConfig

    data = environment.executor.model_dump()
    if settings.executor_kind is not None:
        data["kind"] = settings.executor_kind
        if settings.executor_kind == "local":
            data["parallelism"] = data["vus_per_instance"] = None
    if settings.parallelism is not None:
        data["parallelism"], data["vus_per_instance"] = settings.parallelism, None
    try:
        executor = ExecutorConfig.model_validate(data)
    except ValidationError as exc:
        message = "; ".join(error["msg"] for error in exc.errors())
        raise pytest.UsageError(f"{where}: [{environment.name}.executor] with the command-line overrides: {message}") from None
    return environment.model_copy(update={"executor": executor})
