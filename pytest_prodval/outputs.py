"""Extra k6 outputs: metrics where teams keep them (Prometheus, InfluxDB, OpenTelemetry, CSV).

An environment's `outputs = [...]` plus every `--prodval-out VALUE`, each written as k6 takes
`--out` (`influxdb=http://...`, `csv=path`, `experimental-prometheus-rw`). The plugin's own
`--out json=<raw>` and web dashboard stay. Two things k6 leaves to its user are done here:

* `experimental-prometheus-rw` takes its URL only from `K6_PROMETHEUS_RW_SERVER_URL` (k6
  ignores an argument after `=` and would write to localhost:9090), so
  `experimental-prometheus-rw=URL` becomes the bare output plus that variable.
* Every sample of a run with extra outputs carries the tags `testid` (the run's artifact stem
  `<SCENARIO_ID>_<env>_<timestamp>`), `scenario_id` and `env`, so a dashboard selects one run.
  Runs without extra outputs are not tagged: the raw file is per run already.

URLs in outputs may carry credentials (`https://user:pw@host`, `?token=...`): they are
scrubbed wherever an output is shown or written, and known to the redactor for k6's log.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .secrets import MASK

# `k6 run --out bogus` on k6 v1.1.0 lists these.
BUILTIN_OUTPUTS = ("cloud", "csv", "experimental-opentelemetry", "experimental-prometheus-rw", "influxdb", "json",
                   "statsd")
FILE_OUTPUTS = ("csv", "json")  # the argument is a path: made absolute, `{testid}` filled per run
PROMETHEUS_RW = "experimental-prometheus-rw"
PROMETHEUS_RW_URL = "K6_PROMETHEUS_RW_SERVER_URL"
_ENV_KEY = re.compile(r"^K6_[A-Za-z0-9_-]+$")
_SECRET_KEY = re.compile(r"pass|pwd|token|secret|key|auth|sig|cred|headers", re.IGNORECASE)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


@dataclass(frozen=True)
class K6Output:
    """One `--out` value: k6's output name and its argument (after `=`, may be empty)."""

    name: str
    arg: str = ""

    def __str__(self) -> str:
        return f"{self.name}={self.arg}" if self.arg else self.name


def parse_output(text: str) -> K6Output:
    """`name[=argument]` as k6 takes `--out`; ValueError naming what is wrong and what is expected."""
    name, _, arg = text.strip().partition("=")
    shown = scrub_url(text)
    if name == "web-dashboard":
        raise ValueError(f"{shown!r}: the plugin already runs k6's web dashboard (exported as <run>_k6_dashboard.html)")
    if name not in BUILTIN_OUTPUTS:
        where = f"{shown!r}: " if arg else ""
        raise ValueError(f"{where}{name!r} is not a k6 output; expected one of {', '.join(BUILTIN_OUTPUTS)} "
                         "(as k6 takes --out, e.g. influxdb=http://host:8086/k6)")
    if name in FILE_OUTPUTS and not arg:
        raise ValueError(f"{shown!r}: expected a file, e.g. {name}=results/{{testid}}.{name}")
    if name == PROMETHEUS_RW and arg and not arg.startswith(("http://", "https://")):
        raise ValueError(f"{shown!r}: expected {PROMETHEUS_RW}=http(s)://host:port/api/v1/write or {PROMETHEUS_RW} "
                         f"with {PROMETHEUS_RW_URL} set")
    return K6Output(name, arg)


def check_env_key(key: str) -> str:
    """An output setting must be one of k6's `K6_*` variables (ValueError otherwise)."""
    if not _ENV_KEY.match(key):
        raise ValueError(f"{key!r} is not a k6 variable; expected K6_... such as {PROMETHEUS_RW_URL}")
    return key


def scrub_url(text: str) -> str:
    """`text` with every URL's password and secret-looking query values (token, key, ...) masked."""

    def scrub(match: re.Match[str]) -> str:
        url = match.group(0)
        try:
            parts = urlsplit(url)
        except ValueError:  # not parseable: mask whatever sits between `//user:` and `@`
            return re.sub(r"//([^:/@]*):[^@/]*@", rf"//\1:{MASK}@", url)
        netloc, query = parts.netloc, parts.query
        if parts.password:
            netloc = f"{parts.username or ''}:{MASK}@{netloc.rpartition('@')[2]}"
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_KEY.search(k) for k, _ in pairs):
            query = urlencode([(k, MASK if _SECRET_KEY.search(k) else v) for k, v in pairs], safe="*")
        if (netloc, query) == (parts.netloc, parts.query):
            return url  # nothing secret: the URL exactly as written
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))

    return _URL.sub(scrub, text)


def secrets_in(values: Iterable[str], env: Mapping[str, str]) -> set[str]:
    """Secrets for the redactor: URL passwords and secret query values, and secret-named K6_* values."""
    found: set[str] = set()
    texts = [*values, *env.values()]
    for key, value in env.items():
        if _SECRET_KEY.search(key.removeprefix("K6_")) and not _URL.fullmatch(value):
            found.add(value)
    for text in texts:
        for url in _URL.findall(text):
            try:
                parts = urlsplit(url)
                if parts.password:
                    found.add(parts.password)
            except ValueError:
                continue
            found.update(v for k, v in parse_qsl(parts.query) if _SECRET_KEY.search(k))
    return {s for s in found if s}


@dataclass
class K6Outputs:
    """The extra outputs of a session: what k6 gets per run, and how they are shown (scrubbed)."""

    outputs: list[K6Output] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # K6_* settings from the environment file
    base_dir: Path = Path(".")  # relative file outputs are relative to where pytest was started
    inherited: dict[str, str] = field(default_factory=dict)  # K6_* variables k6 inherits from pytest's environment

    @classmethod
    def of(cls, environment: list[str], extra: Iterable[str], env: Mapping[str, str], base_dir: Path,
           process_env: Mapping[str, str] | None = None) -> K6Outputs:
        """The environment's outputs, then `--prodval-out`'s (a repeated value once); ValueError if unusable."""
        chosen: list[K6Output] = []
        for text in [*environment, *extra]:
            output = parse_output(text)
            if output not in chosen:
                chosen.append(output)
        urls = {o.arg for o in chosen if o.name == PROMETHEUS_RW}
        if len(urls) > 1:  # one variable holds its URL: two remote writes cannot be told apart
            shown = ", ".join(sorted(scrub_url(u) or "(from " + PROMETHEUS_RW_URL + ")" for u in urls))
            raise ValueError(f"k6 takes one {PROMETHEUS_RW} output per run (its URL is {PROMETHEUS_RW_URL}); got {shown}")
        for key in env:
            check_env_key(key)
        inherited = {k: v for k, v in (process_env or {}).items() if k.startswith("K6_")}
        return cls(chosen, dict(env), base_dir, inherited)

    def __bool__(self) -> bool:
        return bool(self.outputs)

    def args(self, testid: str, *, scenario_id: str, env_name: str) -> list[str]:
        """k6 arguments for one run: each output as `--out`, and the run's tags."""
        if not self.outputs:
            return []
        argv: list[str] = []
        for output in self.outputs:
            if output.name == PROMETHEUS_RW:
                argv += ["--out", PROMETHEUS_RW]
            elif output.name in FILE_OUTPUTS:
                argv += ["--out", f"{output.name}={self._path(output.arg, testid)}"]
            else:
                argv += ["--out", str(output)]
        for tag, value in (("testid", testid), ("scenario_id", scenario_id), ("env", env_name)):
            argv += ["--tag", f"{tag}={value}"]
        return argv

    def run_env(self) -> dict[str, str]:
        """k6 variables for the outputs (the environment file's, the remote-write URL given inline)."""
        if not self.outputs:
            return {}
        variables = dict(self.env)
        for output in self.outputs:
            if output.name == PROMETHEUS_RW and output.arg:
                variables[PROMETHEUS_RW_URL] = output.arg
        return variables

    def described(self, testid: str | None = None) -> list[str]:
        """The outputs as shown in the report header and the SLO report: credentials masked."""
        shown = []
        for output in self.outputs:
            text = str(output)
            if output.name in FILE_OUTPUTS:
                text = f"{output.name}={self._path(output.arg, testid) if testid else output.arg}"
            elif output.name == PROMETHEUS_RW and not output.arg:
                url = self.env.get(PROMETHEUS_RW_URL) or self.inherited.get(PROMETHEUS_RW_URL)
                text = f"{output.name}={url or 'http://localhost:9090/api/v1/write (k6 default)'}"
            shown.append(scrub_url(text))
        return shown

    def secrets(self) -> set[str]:
        """Credentials in the outputs, their settings and the K6_* variables k6 inherits."""
        return secrets_in([o.arg for o in self.outputs], {**self.inherited, **self.env})

    def _path(self, arg: str, testid: str) -> str:
        path = Path(arg.replace("{testid}", testid))
        return str(path if path.is_absolute() else (self.base_dir / path).resolve())
