"""The `k6-operator` executor: one scenario as a k6-operator `TestRun`, driven with `kubectl`.

Flow (objects in manifests.py): `k6 archive` of the configured script → create ConfigMap,
Secret, results volume and TestRun in the environment's context and namespace → follow
`.status.stage` until `finished` or `error` → read every runner pod's exit code and log →
read the results volume back through a collector pod (`kubectl cp`) → delete everything.

Every object's deletion is registered before it is created, so Ctrl-C / SIGTERM (a
KeyboardInterrupt here) or any failure still removes it; `cleanup = false` keeps them for
a post-mortem. The Secret goes to kubectl on stdin: its values are never in a file, an
argument or a log. Preflight, seeding and the bypass ran once on the controller before.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .. import facts
from ..artifacts import write_atomic
from ..k6run import K6Result, log_tail
from ..scenarios import ExecutorConfig
from . import InstanceResult, Launch, manifests, segment

KUBECTL_TIMEOUT_S = 60.0
DONE_STAGES = {"finished", "error", "stopped"}


class OperatorError(Exception):
    """kubectl or the operator could not do what the run needs (the message names the step)."""


class Kubectl:
    """kubectl in the environment's context and namespace, every call bounded in time."""

    def __init__(self, config: ExecutorConfig, redact: Callable[[str], str]) -> None:
        binary = shutil.which(config.kubectl)
        if binary is None:
            raise OperatorError(f"{config.kubectl!r} is not on PATH (the k6-operator executor drives the cluster with kubectl)")
        self.base = [binary, *(["--context", config.context] if config.context else []), "--namespace", config.namespace]
        self.redact = redact

    def __call__(self, *args: str, stdin: bytes | None = None, check: bool = True,
                 timeout_s: float = KUBECTL_TIMEOUT_S) -> str:
        """Run `kubectl ARGS`; its stdout, or OperatorError with its (redacted) stderr."""
        try:
            done = subprocess.run([*self.base, *args], input=stdin, capture_output=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise OperatorError(f"kubectl {' '.join(args[:2])} did not answer within {timeout_s:.0f} s") from None
        if check and done.returncode != 0:
            lines = done.stderr.decode(errors="replace").strip().splitlines()
            why = self.redact(lines[-1]) if lines else "no message"
            raise OperatorError(f"kubectl {' '.join(args[:2])} failed (exit {done.returncode}): {why}")
        return done.stdout.decode(errors="replace")

    def create(self, manifest: dict[str, Any]) -> None:
        """Create one object from stdin (JSON is YAML). `create`, not `apply`: apply would copy the whole
        object, a Secret's values included, into its last-applied-configuration annotation."""
        self("create", "-f", "-", stdin=json.dumps(manifest).encode())

    def delete(self, kind: str, name: str) -> None:
        """Delete an object if it is still there; never raises (cleanup runs after failures too)."""
        try:
            self("delete", kind, name, "--ignore-not-found", "--wait=false", check=False)
        except OperatorError:
            pass


# What every script may read from the plugin, put into the archive (never a secret).
ARCHIVED_VARS = ("BASE_URL", "WS_URL", "PRODVAL_BASE_URL", "PRODVAL_WS_URL")


def archive(launch: Launch, folder: Path, forward_env: list[str]) -> bytes:
    """`k6 archive` of the script with the final PRODVAL_CONFIG, the target's URLs and the `forward_env`
    variables; the password is a placeholder the runner's Secret overrides."""
    out = folder / manifests.ARCHIVE_FILE
    variables = {name: launch.env[name] for name in (*ARCHIVED_VARS, *forward_env)
                 if name in launch.env and name not in launch.secrets}
    variables["PRODVAL_CONFIG"] = json.dumps(launch.config)
    variables["LOADTEST_USER_POOL_PASSWORD"] = facts.ARCHIVE_PASSWORD_PLACEHOLDER
    argv = [launch.k6, "archive", "--quiet", "-O", str(out),
            *(arg for name, value in variables.items() for arg in ("-e", f"{name}={value}")), str(launch.script)]
    done = subprocess.run(argv, cwd=launch.script.parent, capture_output=True, timeout=120,
                          env={k: v for k, v in launch.env.items() if k not in launch.secrets})
    if done.returncode != 0:
        why = launch.redact(done.stderr.decode(errors="replace").strip()[-500:])
        raise OperatorError(f"k6 archive failed (exit {done.returncode}): {why}")
    return out.read_bytes()


class OperatorExecutor:
    """A TestRun of `launch.count` runner pods; results read back from the run's volume."""

    def __init__(self, config: ExecutorConfig) -> None:
        self.config = config

    def run(self, launch: Launch) -> list[InstanceResult]:
        """Run the scenario on the cluster; every problem becomes an instance problem, never an exception."""
        started = time.time()
        run = manifests.run_name(launch.scenario_id, launch.paths.stem.rsplit("_", 1)[-1])
        state = _RunState(launch.count)
        try:
            with ExitStack() as cleanup, tempfile.TemporaryDirectory(prefix="prodval-k8s-") as tmp:
                kubectl = Kubectl(self.config, launch.redact)
                self._run(launch, kubectl, run, Path(tmp), cleanup, state)
        except KeyboardInterrupt:
            state.interrupted = True
        except (OperatorError, ValueError, OSError, subprocess.SubprocessError) as exc:
            state.failure = launch.redact(str(exc))
        return state.results(launch, started)

    def _run(self, launch: Launch, kubectl: Kubectl, run: str, tmp: Path, cleanup: ExitStack, state: _RunState) -> None:
        namespace = self.config.namespace
        missing = [name for name in (*self.config.forward_env, *self.config.forward_secrets) if name not in launch.env]
        if missing:
            raise OperatorError(f"[ENV.executor] forwards {', '.join(missing)}, which this environment does not set")
        spaced = [arg for arg in launch.extra_args if any(c.isspace() for c in arg)]
        if spaced:  # the operator splits spec.arguments on whitespace
            raise OperatorError(f"extra k6 output arguments with whitespace cannot pass through a TestRun: {spaced}")
        # Extra outputs' K6_* settings may hold credentials (a remote-write password): into the Secret too.
        secrets = {**launch.secrets, **launch.output_env, **{name: launch.env[name] for name in self.config.forward_secrets}}
        objects = [
            manifests.configmap(run, namespace, archive(launch, tmp, self.config.forward_env)),
            manifests.secret(run, namespace, secrets),
            manifests.results_claim(run, namespace, self.config),
            manifests.testrun(run, namespace, self.config, launch.count, summary_export=launch.summary_export,
                              extra_args=list(launch.extra_args)),
        ]
        write_atomic(launch.paths.k8s_manifests,
                     json.dumps([manifests.without_secrets(o) for o in objects], indent=2))
        for manifest in objects:
            if self.config.cleanup:  # registered before it exists: an interrupted create is cleaned up too
                cleanup.callback(kubectl.delete, manifest["kind"].lower(), manifest["metadata"]["name"])
            kubectl.create(manifest)
        state.stage = self._follow(kubectl, run, launch)
        state.pods = self._pods(kubectl, run)
        for index, pod in state.pods.items():
            state.logs[index] = kubectl("logs", pod["metadata"]["name"], check=False)
        collector = manifests.collector(run, namespace, self.config)
        if self.config.cleanup:
            cleanup.callback(kubectl.delete, "pod", collector["metadata"]["name"])
        kubectl.create(collector)
        wait_s = self.config.startup_timeout_s
        kubectl("wait", "--for=condition=Ready", f"pod/{collector['metadata']['name']}", f"--timeout={wait_s:.0f}s",
                timeout_s=wait_s + KUBECTL_TIMEOUT_S)
        copied = tmp / "results"
        kubectl("cp", f"{namespace}/{collector['metadata']['name']}:{manifests.MOUNT}", str(copied))
        state.collect(copied, launch, run)

    def _follow(self, kubectl: Kubectl, run: str, launch: Launch) -> str:
        """Poll the TestRun's stage until it is done; bounded by startup + the run's own time bound."""
        deadline = time.monotonic() + self.config.startup_timeout_s + launch.timeout_s
        begun: float | None = None
        tick = launch.progress(None) if launch.progress else None
        stage = ""
        while time.monotonic() < deadline:
            stage = kubectl("get", "testrun", run, "-o", "jsonpath={.status.stage}", check=False).strip()
            if stage in DONE_STAGES:
                return stage
            if stage == "started":
                begun = begun or time.monotonic()
                if tick is not None:
                    tick(time.monotonic() - begun)
            time.sleep(self.config.poll_s)
        raise OperatorError(f"TestRun {run} did not finish within {self.config.startup_timeout_s + launch.timeout_s:.0f} s "
                            f"(last stage {stage or 'none'})")

    def _pods(self, kubectl: Kubectl, run: str) -> dict[int, dict[str, Any]]:
        """The runner pods by instance index (from the Job name `RUN-i` the operator gives runner i)."""
        listing = json.loads(kubectl("get", "pods", "-l", f"k6_cr={run},runner=true", "-o", "json") or "{}")
        pods: dict[int, dict[str, Any]] = {}
        for pod in listing.get("items", []):
            name = pod["metadata"]["name"]
            job = pod["metadata"].get("labels", {}).get("job-name") or name.rsplit("-", 1)[0]
            match = re.fullmatch(rf"{re.escape(run)}-(\d+)", job)
            if match:
                pods[int(match[1])] = pod
        return pods


class _RunState:
    """What is known so far about each runner of one TestRun."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.stage = ""
        self.pods: dict[int, dict[str, Any]] = {}
        self.logs: dict[int, str] = {}
        self.interrupted = False
        self.failure: str | None = None
        self.twice: dict[int, list[str]] = {}  # instance -> the pods whose files it has

    def collect(self, copied: Path, launch: Launch, run: str) -> None:
        """Move each pod's files from the copied volume to its instance's names in the results folder.

        The instance comes from the file's pod name (`RUN-i-xxxxx`, the Job `RUN-i` of runner i), so
        the cut raw file of a pod that is gone is kept too; two pods' files for one instance mean it
        ran twice, which the run cannot use.
        """
        pattern = re.compile(rf"^(?:raw|summary)-{re.escape(run)}-(\d+)-[a-z0-9]+\.json(?:\.gz)?$")
        pods: dict[int, set[str]] = {}
        for source in sorted(copied.iterdir()) if copied.is_dir() else []:
            match = pattern.match(source.name)
            if not match or not 1 <= int(match[1]) <= self.count:
                continue
            index = int(match[1])
            pods.setdefault(index, set()).add(source.name.split("-", 1)[1].rsplit(".json", 1)[0])
            paths = launch.instance_paths(index)
            shutil.move(source, paths.raw if source.name.startswith("raw-") else paths.summary)
        self.twice = {index: sorted(names) for index, names in pods.items() if len(names) > 1}

    def results(self, launch: Launch, started: float) -> list[InstanceResult]:
        """One InstanceResult per runner; a runner with no pod or no exit is lost, naming why."""
        ended = time.time()
        results = []
        for index in range(1, self.count + 1):
            paths = launch.instance_paths(index)
            write_atomic(paths.log, self.logs.get(index, ""))
            pod = self.pods.get(index)
            exit_code, lost = _exit_of(pod)
            began, finished = _times_of(pod)
            if self.failure:
                lost = self.failure
            elif self.interrupted:
                lost = None
            elif pod is None:
                lost = f"no runner pod (TestRun stage {self.stage or 'unknown'}): its node or pod is gone"
            elif index in self.twice:
                lost = f"files of more than one pod ({', '.join(self.twice[index])}): the runner ran twice"
            k6 = K6Result(exit_code, ended - started, interrupted=self.interrupted, log_tail=log_tail(paths.log))
            results.append(InstanceResult(index, self.count, segment(index, self.count) if self.count > 1 else None,
                                          paths, k6, started_at=began or started, ended_at=finished or ended, lost=lost))
        return results


def _exit_of(pod: dict[str, Any] | None) -> tuple[int | None, str | None]:
    """The k6 container's exit code, or why there is none."""
    if pod is None:
        return None, None
    for status in pod.get("status", {}).get("containerStatuses", []):
        terminated = status.get("state", {}).get("terminated")
        if terminated is not None:
            return int(terminated.get("exitCode", -1)), None
    return None, f"pod {pod['metadata']['name']} has no terminated k6 container (phase {pod.get('status', {}).get('phase')})"


def _times_of(pod: dict[str, Any] | None) -> tuple[float | None, float | None]:
    """When the runner's k6 container started and finished (epoch s), from its terminated state."""
    from datetime import datetime

    for status in (pod or {}).get("status", {}).get("containerStatuses", []):
        terminated = status.get("state", {}).get("terminated") or {}
        times = [terminated.get(key) for key in ("startedAt", "finishedAt")]
        try:
            parsed = [datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() if t else None for t in times]
        except ValueError:
            return None, None
        return parsed[0], parsed[1]
    return None, None
