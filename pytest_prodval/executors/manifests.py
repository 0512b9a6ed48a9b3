"""The Kubernetes objects of one k6-operator run, as plain JSON-able dicts (no cluster needed).

One run creates, all labelled `app.kubernetes.io/managed-by: pytest-prodval` and
`prodval/run: NAME` (so a killed pytest's leftovers are one `kubectl delete -l` away):

* ConfigMap `NAME-script`: the `k6 archive` of the scenario script, made after the final
  configuration (PRODVAL_CONFIG is inside the archive; secrets are not).
* Secret `NAME-secrets`: the pool password and bypass token, given to every runner with
  `envFrom`; no manifest, log or artifact carries their values.
* PersistentVolumeClaim `NAME-results`: the results volume every runner writes to, each
  pod to its own files (`raw-<pod>.json.gz`, `summary-<pod>.json`): one shared file would
  be corrupted by concurrent writers.
* TestRun `NAME` (k6.io/v1alpha1): `parallelism` runners, no `cleanup: post` (the plugin
  reads the runners' exit codes and logs first, then deletes everything itself).
* Pod `NAME-collector`: mounts the volume after the run so `kubectl cp` can read it back.

Why a volume and not `kubectl cp` from the runner pods: a runner's container is the k6
process itself (k6-operator sets its command), so the pod is finished the moment k6
exits and a finished container cannot be copied from; what is not on a volume is lost
with the pod (a lost node, an eviction, `cleanup: post`). The per-pod file names use
Kubernetes' own `$(VAR)` expansion in container commands and env values, with the pod's
name from the downward API: k6-operator gives every runner the same arguments and env.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

from ..scenarios import ExecutorConfig

MOUNT = "/prodval"  # where every runner (and the collector) mounts the results volume
ARCHIVE_FILE = "archive.tar"
POD_VAR = "PRODVAL_POD"
RAW_NAME = "raw-$(PRODVAL_POD).json.gz"
SUMMARY_NAME = "summary-$(PRODVAL_POD).json"
CONFIGMAP_LIMIT = 1_000_000  # bytes: etcd's object limit is ~1 MiB, base64 adds a third
MANAGED_BY = {"app.kubernetes.io/managed-by": "pytest-prodval"}


def run_name(scenario_id: str, stamp: str) -> str:
    """A DNS-1123 name for the run's objects, short enough for the operator's `NAME-service-N`."""
    base = re.sub(r"[^a-z0-9]+", "-", scenario_id.lower()).strip("-")[:24].strip("-")
    return f"pv-{base}-{stamp.lower().replace('t', '').rstrip('z')[-10:]}"


def _meta(name: str, run: str, namespace: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": {**MANAGED_BY, "prodval/run": run}}


def configmap(run: str, namespace: str, archive: bytes) -> dict[str, Any]:
    """The script archive as binary data (a k6 archive is a tar file)."""
    if len(archive) > CONFIGMAP_LIMIT:
        raise ValueError(f"the k6 archive is {len(archive):,} bytes; a ConfigMap holds at most ~{CONFIGMAP_LIMIT:,}")
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(f"{run}-script", run, namespace),
            "binaryData": {ARCHIVE_FILE: base64.b64encode(archive).decode()}}


def secret(run: str, namespace: str, values: Mapping[str, str]) -> dict[str, Any]:
    """The secrets the runners need as environment variables (applied through stdin, never written)."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": _meta(f"{run}-secrets", run, namespace),
            "stringData": dict(values)}


def results_claim(run: str, namespace: str, config: ExecutorConfig) -> dict[str, Any]:
    """The results volume (ReadWriteMany when runners may land on different nodes)."""
    spec: dict[str, Any] = {"accessModes": [config.storage_access_mode], "resources": {"requests": {"storage": config.storage}}}
    if config.storage_class:
        spec["storageClassName"] = config.storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": _meta(f"{run}-results", run, namespace),
            "spec": spec}


def testrun(run: str, namespace: str, config: ExecutorConfig, parallelism: int, *, summary_export: bool = False,
            extra_args: list[str] | None = None) -> dict[str, Any]:
    """The TestRun: fixed k6 flags in `arguments` (split on whitespace by the operator); the per-pod
    output paths in the runner's env (`K6_OUT`), where Kubernetes expands `$(PRODVAL_POD)`.

    Not `--out` in `arguments`: the initializer runs `k6 archive ... <arguments>` through `sh -c`
    without the runner's env, where `$(PRODVAL_POD)` would be a shell command substitution.
    """
    arguments = ["--no-usage-report", "--no-color", "--log-format", "json", *(extra_args or [])]
    runner: dict[str, Any] = {
        "image": config.image,
        "env": [
            {"name": POD_VAR, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "K6_OUT", "value": f"json={MOUNT}/{RAW_NAME}"},
            # The game script's handleSummary writes PRODVAL_SUMMARY_PATH; a user's script gets k6's export.
            {"name": "K6_SUMMARY_EXPORT" if summary_export else "PRODVAL_SUMMARY_PATH", "value": f"{MOUNT}/{SUMMARY_NAME}"},
            {"name": "K6_WEB_DASHBOARD", "value": "false"},
        ],
        "envFrom": [{"secretRef": {"name": f"{run}-secrets"}}],
        "volumes": [{"name": "prodval-results", "persistentVolumeClaim": {"claimName": f"{run}-results"}}],
        "volumeMounts": [{"name": "prodval-results", "mountPath": MOUNT}],
        "metadata": {"labels": {**MANAGED_BY, "prodval/run": run}},
    }
    resources = {k: v for k, v in (("requests", config.runner.requests), ("limits", config.runner.limits)) if v}
    if resources:
        runner["resources"] = resources
    return {
        "apiVersion": "k6.io/v1alpha1", "kind": "TestRun", "metadata": _meta(run, run, namespace),
        "spec": {
            "parallelism": parallelism,
            "script": {"configMap": {"name": f"{run}-script", "file": ARCHIVE_FILE}},
            "arguments": " ".join(arguments),
            "runner": runner,
        },
    }


def collector(run: str, namespace: str, config: ExecutorConfig) -> dict[str, Any]:
    """A pod that mounts the results volume read-only and waits, so its files can be copied out."""
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": _meta(f"{run}-collector", run, namespace),
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "collector", "image": config.collector_image, "command": ["sleep", "3600"],
                            "volumeMounts": [{"name": "prodval-results", "mountPath": MOUNT, "readOnly": True}]}],
            "volumes": [{"name": "prodval-results", "persistentVolumeClaim": {"claimName": f"{run}-results"}}],
        },
    }


def without_secrets(manifest: dict[str, Any]) -> dict[str, Any]:
    """A manifest fit for an artifact: a Secret keeps its keys, never its values; archives are elided."""
    shown = dict(manifest)
    if manifest.get("kind") == "Secret":
        shown["stringData"] = {key: "<redacted>" for key in manifest.get("stringData", {})}
    if manifest.get("kind") == "ConfigMap":
        shown["binaryData"] = {key: f"<{len(value)} base64 characters>" for key, value in manifest.get("binaryData", {}).items()}
    return shown
