"""Target environments (`scenarios/_environments.toml`): where a run goes and how it gets there.

An `Environment` names the target's URLs (values may reference variables as ${VAR} or
${VAR:-default}, expanded once by `resolve_environment`, so a file can be committed without a
host or a secret in it), the source of its server metrics, the bypass switch, criteria it
cannot judge, extra k6 outputs, and the `ExecutorConfig`: where the k6 instances run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .outputs import check_env_key, parse_output
from .scenario_models import ScenarioFileError, StrictModel

ExecutorKind = Literal["local", "segments", "k6-operator"]


class RunnerResources(StrictModel):
    """Kubernetes resources of each k6 runner pod, e.g. requests = {cpu = "1", memory = "512Mi"}."""

    requests: dict[str, str] = Field(default_factory=dict)
    limits: dict[str, str] = Field(default_factory=dict)


class ExecutorConfig(StrictModel):
    """`[ENV.executor]`: where a scenario's k6 instances run (executors/), and how many.

    `parallelism` is the number of instances; `vus_per_instance` derives it from a
    scenario's peak VUs instead. The k6-operator keys say where and how on Kubernetes.
    """

    kind: ExecutorKind = "local"
    parallelism: int | None = Field(default=None, ge=1)
    vus_per_instance: int | None = Field(default=None, ge=1)
    # k6-operator only
    namespace: str = "default"
    context: str | None = None  # kubectl context; None: kubectl's current one
    image: str = "grafana/k6:1.1.0"
    runner: RunnerResources = RunnerResources()
    cleanup: bool = True  # delete everything the run created (also after Ctrl-C/SIGTERM)
    storage_class: str | None = None  # a ReadWriteMany class for the results volume (None: the cluster default)
    storage: str = "1Gi"  # size of the results volume
    # ReadWriteOnce is enough when every runner lands on one node (kind); else ReadWriteMany.
    storage_access_mode: Literal["ReadWriteMany", "ReadWriteOnce"] = "ReadWriteMany"
    startup_timeout_s: float = Field(default=300.0, gt=0)  # image pulls, scheduling, the initializer
    poll_s: float = Field(default=1.0, gt=0, le=60)  # how often the TestRun's stage is read
    collector_image: str = "busybox:1.36"  # the pod that reads the results volume back
    kubectl: str = "kubectl"
    # The pods see only what the run gives them: PRODVAL_CONFIG and the target's URLs (BASE_URL,
    # WS_URL, PRODVAL_*_URL) in the archive, the pool password and bypass token in the Secret.
    # A script that reads more names them: values from this environment, into the archive
    # (`forward_env`, visible in the ConfigMap) or into the Secret (`forward_secrets`).
    forward_env: list[str] = Field(default_factory=list)
    forward_secrets: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_way_to_count(self) -> ExecutorConfig:
        if self.parallelism is not None and self.vus_per_instance is not None:
            raise ValueError("set parallelism or vus_per_instance, not both")
        if self.kind == "local" and (self.parallelism or 1) > 1:
            raise ValueError(f"kind 'local' runs one k6 process (parallelism={self.parallelism}); use kind 'segments' "
                             "for several processes on this machine")
        return self

    def instances(self, peak_vus: int) -> int:
        """How many k6 instances run a scenario with `peak_vus` VUs (never more instances than VUs)."""
        if self.kind == "local":
            return 1
        if self.parallelism is not None:
            return self.parallelism
        if self.vus_per_instance is not None:
            return max(1, min(peak_vus, -(-peak_vus // self.vus_per_instance)))
        return 1


class Environment(StrictModel):
    """A target environment; values may reference variables as ${VAR} or ${VAR:-default}."""

    name: str
    description: str = ""
    embedded: bool = False  # the reference stack started by the plugin
    production: bool = False
    base_url: str | None = None
    ws_url: str | None = None
    ai_service_url: str | None = None
    metrics_url: str | None = None  # the target's Prometheus text endpoint (RingRift: BASE_URL/metrics)
    prometheus_url: str | None = None  # a Prometheus server scraping the target (PromQL over HTTP)
    # Label equality that selects the target's series on a shared Prometheus, e.g. {job = "ringrift"}.
    prometheus_match: dict[str, str] = Field(default_factory=dict)
    profile: str | None = None
    # The bypass switch for servers configured by environment (RingRift: no admin endpoint),
    # e.g. ["kubectl", "set", "env", "deploy/api", "RATE_LIMIT_BYPASS_ENABLED=true"].
    bypass_on: list[str] | None = None
    bypass_off: list[str] | None = None
    # Criteria whose source this target does not have: criterion name -> why (shown as skipped).
    not_applicable: dict[str, str] = Field(default_factory=dict)
    executor: ExecutorConfig = ExecutorConfig()
    # Extra k6 outputs as k6 takes --out (outputs.py), and their K6_* settings, e.g.
    # outputs = ["experimental-prometheus-rw"], output_env = {K6_PROMETHEUS_RW_SERVER_URL = "${PROM_RW_URL}"}.
    outputs: list[str] = Field(default_factory=list)
    output_env: dict[str, str] = Field(default_factory=dict)

    @field_validator("outputs")
    @classmethod
    def _valid_outputs(cls, values: list[str]) -> list[str]:
        for value in values:
            if "${" not in value:  # checked again once the variables are expanded
                parse_output(value)
        return values

    @field_validator("output_env")
    @classmethod
    def _valid_output_env(cls, values: dict[str, str]) -> dict[str, str]:
        for key in values:
            check_env_key(key)
        return values


def expand_vars(text: str, env: Mapping[str, str]) -> str:
    """Expand ${VAR} and ${VAR:-default} (defaults may nest: ${A:-${B}/metrics}); a missing
    variable without default raises KeyError(VAR)."""

    def replace(match: re.Match[str]) -> str:
        name, default = match["name"], match["default"]
        value = env.get(name) or default
        if value is None:
            raise KeyError(name)
        return value

    innermost = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}$]*))?\}")
    while True:  # innermost first, so an outer default sees its inner variables expanded
        expanded = innermost.sub(replace, text)
        if expanded == text:
            return expanded
        text = expanded


def resolve_environment(env: Environment, variables: Mapping[str, str] | None = None) -> Environment:
    """Expand variables in an environment's URLs; missing variables raise ScenarioFileError."""
    variables = os.environ if variables is None else variables

    def expand(field: str, value: str) -> str:
        try:
            return expand_vars(value, variables)
        except KeyError as exc:
            raise ScenarioFileError(
                f"environment {env.name!r}: {field} needs the variable {exc.args[0]} (e.g. export {exc.args[0]}=...)"
            ) from None

    updates: dict[str, Any] = {}
    for field in ("base_url", "ws_url", "ai_service_url", "metrics_url", "prometheus_url"):
        value = getattr(env, field)
        if value is not None:
            updates[field] = expand(field, value).rstrip("/") or None
    updates["outputs"] = [expand(f"outputs[{i}]", value) for i, value in enumerate(env.outputs)]
    for i, value in enumerate(updates["outputs"]):
        try:
            parse_output(value)
        except ValueError as exc:
            raise ScenarioFileError(f"environment {env.name!r}: outputs[{i}]: {exc}") from None
    updates["output_env"] = {key: expand(f"output_env.{key}", value) for key, value in env.output_env.items()}
    return env.model_copy(update=updates)
