"""A fake `kubectl` plus a fake k6-operator, for the k6-operator executor's end-to-end tests.

No Kubernetes cluster can run here, so this is the one test double: `kubectl` (this file
behind a small launcher put first on PATH, state in $FAKE_K8S_STATE) stores the objects it
is given; creating a `TestRun` starts the fake operator, which does what k6-operator v1.6.0
does (/work/shared/data/k6-operator/README.md), with real k6 processes:

* runner i of N runs `k6 run --quiet [--execution-segment=(i-1)/N:i/N
  --execution-segment-sequence=0,1/N,...,1 when N > 1] <spec.arguments split on whitespace>
  /test/<file> --address=0.0.0.0:6565 --paused --tag instance_id=i --tag testrun_name=NAME`
  (the order of pkg/resources/jobs/runner.go);
  Kubernetes expands `$(VAR)` in the command and in env values; the pod's environment is
  only what the manifest gives it (env, envFrom Secret/ConfigMap, downward API pod name);
* the script ConfigMap is mounted at /test, volumes (PVCs) at their mountPaths: each is a
  folder here, paths in the command and env are mapped onto them;
* the starter resumes the paused runners one by one with
  `PATCH /v1/status {"data":{"attributes":{"paused":false},"id":"default","type":"status"}}`;
* `.status.stage`: initialization → initialized → created → started → finished (error if
  the script ConfigMap or the Secret is missing).

The one deviation: every pod has its own IP in a cluster, so `--address=0.0.0.0:6565`
becomes 127.0.0.1 on a free port (loopback only here).

Knobs (environment of the kubectl call that creates the TestRun, `i` or `RUNNAME-PART:i`): FAKE_K8S_LOSE_POD=i kills
runner i with SIGKILL 1 s after the start and deletes its pod (a lost node: no exit code, no
log, a cut raw file, no summary); FAKE_K8S_FAIL_POD=i sends it SIGTERM 1 s after the start
(an evicted pod: k6 exits 105). The operator stops by itself after FAKE_K8S_DEADLINE_S (90).
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
import signal
import string
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

STATE = Path(os.environ.get("FAKE_K8S_STATE", "/nonexistent"))
RESUME = {"data": {"attributes": {"paused": False}, "id": "default", "type": "status"}}


def _obj_path(ns: str, kind: str, name: str) -> Path:
    return STATE / "objects" / ns / kind.lower() / f"{name}.json"


def _load(ns: str, kind: str, name: str) -> dict[str, Any] | None:
    path = _obj_path(ns, kind, name)
    return json.loads(path.read_text()) if path.exists() else None


def _save(ns: str, obj: dict[str, Any]) -> None:
    path = _obj_path(ns, obj["kind"], obj["metadata"]["name"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def _pvc_dir(ns: str, claim: str) -> Path:
    return STATE / "volumes" / ns / claim


def _status(ns: str, run: str) -> Path:
    return STATE / "status" / ns / f"{run}.json"


def _set_stage(ns: str, run: str, stage: str) -> None:
    path = _status(ns, run)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"stage": stage}))
    os.replace(tmp, path)


def _now() -> str:
    """A Kubernetes timestamp (RFC 3339, seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _fail(message: str, code: int = 1) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


# ------------------------------------------------------------------------------ kubectl


def kubectl(argv: list[str]) -> int:
    """The kubectl subset the executor uses: create, get, logs, wait, cp, delete."""
    with (STATE / "calls.jsonl").open("a") as log:
        log.write(json.dumps({"t": time.time(), "argv": argv}) + "\n")
    ns, context, rest = "default", None, []
    args = iter(argv)
    for arg in args:
        if arg in ("--namespace", "-n"):
            ns = next(args)
        elif arg == "--context":
            context = next(args)
        else:
            rest.append(arg)
    if context is not None and context != os.environ.get("FAKE_K8S_CONTEXT", context):
        return _fail(f'context "{context}" does not exist')
    verb, *params = rest
    if verb == "create" and params == ["-f", "-"]:
        return _create(ns, json.loads(sys.stdin.read()))
    if verb == "get" and params[0] == "testrun":
        obj = _load(ns, "testrun", params[1])
        if obj is None:
            return _fail(f'testruns.k6.io "{params[1]}" not found')
        status = _status(ns, params[1])
        print(json.loads(status.read_text())["stage"] if status.exists() else "", end="")
        return 0
    if verb == "get" and params[0] == "pods":
        selector = dict(item.split("=", 1) for item in params[params.index("-l") + 1].split(","))
        folder = STATE / "objects" / ns / "pod"
        pods = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.exists() else []
        items = [p for p in pods if all(p["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())]
        print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
        return 0
    if verb == "logs":
        if _load(ns, "pod", params[0]) is None:
            return _fail(f'pods "{params[0]}" not found')
        log_file = STATE / "logs" / ns / f"{params[0]}.log"
        sys.stdout.write(log_file.read_text(errors="replace") if log_file.exists() else "")
        return 0
    if verb == "wait":
        name = params[-2].split("/", 1)[1] if params[-1].startswith("--timeout") else params[-1].split("/", 1)[1]
        if _load(ns, "pod", name) is None:
            return _fail(f'pods "{name}" not found')
        print(f"pod/{name} condition met")
        return 0
    if verb == "cp":
        source, dest = params
        pod_ref, path = source.split(":", 1)
        pod_ns, pod_name = pod_ref.split("/", 1)
        pod = _load(pod_ns, "pod", pod_name)
        if pod is None:
            return _fail(f'pods "{pod_name}" not found')
        local = _map_path(path, _mounts(pod_ns, pod["spec"]["volumes"], pod["spec"]["containers"][0]["volumeMounts"]))
        shutil.copytree(local, dest)
        return 0
    if verb == "delete":
        return _delete(ns, params[0], params[1])
    return _fail(f"fake kubectl does not know {' '.join(rest)}")


def _create(ns: str, obj: dict[str, Any]) -> int:
    kind, name = obj["kind"], obj["metadata"]["name"]
    if _load(ns, kind, name) is not None:
        return _fail(f'{kind.lower()}s "{name}" already exists')
    if obj["metadata"].get("namespace", ns) != ns:
        return _fail("the namespace of the object does not match the namespace of the command")
    _save(ns, obj)
    with (STATE / "created.jsonl").open("a") as log:  # what the cluster was given, kept after deletes
        log.write(json.dumps(obj) + "\n")
    if kind == "PersistentVolumeClaim":
        _pvc_dir(ns, name).mkdir(parents=True, exist_ok=True)
    if kind == "TestRun":
        _set_stage(ns, name, "")
        log = (STATE / f"operator-{name}.log").open("ab")
        proc = subprocess.Popen([sys.executable, __file__, "--operate", ns, name], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, start_new_session=True, env=dict(os.environ))
        (STATE / f"operator-{name}.pid").write_text(str(proc.pid))
    print(f"{kind.lower()}/{name} created")
    return 0


def _delete(ns: str, kind: str, name: str) -> int:
    kind = {"persistentvolumeclaim": "PersistentVolumeClaim", "configmap": "ConfigMap"}.get(kind, kind)
    path = _obj_path(ns, kind, name)
    if kind.lower() == "testrun":
        pid_file = STATE / f"operator-{name}.pid"
        if pid_file.exists():
            try:
                os.killpg(int(pid_file.read_text()), signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pod in (STATE / "objects" / ns / "pod").glob(f"{name}-*.json"):
            if json.loads(pod.read_text())["metadata"].get("labels", {}).get("k6_cr") == name:
                pod.unlink()
    if kind == "PersistentVolumeClaim":
        shutil.rmtree(_pvc_dir(ns, name), ignore_errors=True)
    if path.exists():
        path.unlink()
        print(f'{kind.lower()} "{name}" deleted')
    return 0


# ------------------------------------------------------------------------------ the operator


def _mounts(ns: str, volumes: list[dict[str, Any]], mounts: list[dict[str, Any]]) -> dict[str, Path]:
    by_name = {v["name"]: v for v in volumes}
    mapping = {}
    for mount in mounts:
        claim = by_name[mount["name"]]["persistentVolumeClaim"]["claimName"]
        if not _pvc_dir(ns, claim).exists():
            raise RuntimeError(f'persistentvolumeclaim "{claim}" not found')
        mapping[mount["mountPath"].rstrip("/")] = _pvc_dir(ns, claim)
    return mapping


def _map_path(text: str, mounts: dict[str, Path]) -> str:
    for mount, local in mounts.items():
        text = re.sub(rf"(?<![\w/]){re.escape(mount)}(?=/|$)", str(local), text)
    return text


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion ($$(VAR) stays literal; unknown variables stay as written)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]), text)


def _pod_env(ns: str, runner: dict[str, Any], pod_name: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in runner.get("envFrom", []):
        ref = source.get("secretRef") or source.get("configMapRef")
        kind = "Secret" if "secretRef" in source else "ConfigMap"
        obj = _load(ns, kind, ref["name"])
        if obj is None:
            raise RuntimeError(f'{kind.lower()} "{ref["name"]}" not found (CreateContainerConfigError)')
        env.update(obj.get("stringData", {}))
        env.update({k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()} if kind == "Secret"
                   else obj.get("data", {}))
    for item in runner.get("env", []):
        if "valueFrom" in item:
            field = item["valueFrom"]["fieldRef"]["fieldPath"]
            env[item["name"]] = {"metadata.name": pod_name, "metadata.namespace": ns}[field]
        else:
            env[item["name"]] = _expand(item.get("value", ""), env)
    return env


def _knob(name: str, run: str) -> int | None:
    """The runner index a knob names for this TestRun: `i`, or `part-of-the-run-name:i`."""
    text = os.environ.get(name, "")
    where, _, index = text.rpartition(":")
    return int(index) if index and (not where or where in run) else None


def operate(ns: str, run: str) -> int:
    """Run one TestRun to its end, the way k6-operator would."""
    deadline = time.monotonic() + float(os.environ.get("FAKE_K8S_DEADLINE_S", "90"))
    procs: dict[int, subprocess.Popen[bytes]] = {}
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    import httpx  # here, not at the top: every kubectl call starts this file, only the operator needs it

    from pytest_prodval.processes import free_loopback_port, spawn, stop

    def on_term(signum: int, frame: Any) -> None:
        for proc in procs.values():
            stop(proc, grace_s=5, sig=signal.SIGKILL)
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    testrun = _load(ns, "testrun", run)
    assert testrun is not None
    spec = testrun["spec"]
    _set_stage(ns, run, "initialization")
    script = spec["script"]["configMap"]
    configmap = _load(ns, "ConfigMap", script["name"])
    file = script.get("file", "test.js")
    if configmap is None or file not in {**configmap.get("binaryData", {}), **configmap.get("data", {})}:
        _set_stage(ns, run, "error")
        return 1
    test_dir = STATE / "mounts" / ns / run / "test"
    test_dir.mkdir(parents=True, exist_ok=True)
    content = configmap.get("binaryData", {}).get(file)
    (test_dir / file).write_bytes(base64.b64decode(content) if content else configmap["data"][file].encode())
    _set_stage(ns, run, "initialized")
    count = int(spec["parallelism"])
    runner = spec.get("runner", {})
    k6 = os.environ.get("FAKE_K8S_K6") or shutil.which("k6") or "k6"
    ports: dict[int, int] = {}
    pods: dict[int, dict[str, Any]] = {}
    try:
        mounts = {"/test": test_dir, **_mounts(ns, runner.get("volumes", []), runner.get("volumeMounts", []))}
        for i in range(1, count + 1):
            pod_name = f"{run}-{i}-" + "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
            env = _pod_env(ns, runner, pod_name)
            command = ["k6", "run", "--quiet"]  # k6-operator's runner.go order
            if count > 1:
                sequence = ",".join(["0", *(f"{j}/{count}" for j in range(1, count)), "1"])
                command += [f"--execution-segment={i - 1}/{count}:{i}/{count}", f"--execution-segment-sequence={sequence}"]
            command += [*spec.get("arguments", "").split(), f"/test/{file}", "--address=0.0.0.0:6565", "--paused",
                        "--tag", f"instance_id={i}", "--tag", f"testrun_name={run}"]
            command = [_expand(token, env) for token in command]
            ports[i] = free_loopback_port()
            local = [k6] + [_map_path(t, mounts).replace("0.0.0.0:6565", f"127.0.0.1:{ports[i]}") for t in command[1:]]
            local_env = {"PATH": os.environ.get("PATH", ""), "HOME": str(test_dir),
                         **{k: _map_path(v, mounts) for k, v in env.items()}}
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": pod_name, "namespace": ns,
                                "labels": {**runner.get("metadata", {}).get("labels", {}), "app": "k6", "k6_cr": run,
                                           "runner": "true", "job-name": f"{run}-{i}"}},
                   "spec": {"containers": [{"name": "k6", "image": runner.get("image", "grafana/k6"), "command": command}]},
                   "status": {"phase": "Running"}}
            pods[i] = pod
            _save(ns, pod)
            log_file = STATE / "logs" / ns / f"{pod_name}.log"
            log_file.parent.mkdir(parents=True, exist_ok=True)
            with log_file.open("ab") as log:
                procs[i] = spawn(local, env=local_env, cwd=test_dir, stdout=log, stderr=subprocess.STDOUT)
            pod["status"]["startTime"] = _now()
    except RuntimeError as exc:
        print(exc, flush=True)
        _set_stage(ns, run, "error")
        return 1
    _set_stage(ns, run, "created")
    for i, port in ports.items():  # the starter: wait for every runner, then resume them one by one
        while time.monotonic() < deadline and procs[i].poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/status", timeout=1).json()["data"]["attributes"]["paused"]:
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                time.sleep(0.05)
    for port in ports.values():
        try:
            httpx.patch(f"http://127.0.0.1:{port}/v1/status", json=RESUME, timeout=5)
        except httpx.HTTPError:
            pass
    _set_stage(ns, run, "started")
    knobs = {"FAKE_K8S_LOSE_POD": signal.SIGKILL, "FAKE_K8S_FAIL_POD": signal.SIGTERM}
    harmed = {index: knob for knob in knobs if (index := _knob(knob, run)) is not None}
    hurt_at = time.monotonic() + 1.0
    while any(p.poll() is None for p in procs.values()) and time.monotonic() < deadline:
        if harmed and time.monotonic() >= hurt_at:
            for i, knob in harmed.items():
                os.killpg(procs[i].pid, knobs[knob])
            harmed = {}
        time.sleep(0.1)
    for i, proc in procs.items():
        code = stop(proc, grace_s=5, sig=signal.SIGKILL)
        pod = pods[i]
        if _knob("FAKE_K8S_LOSE_POD", run) == i:  # the node is gone, and the pod with it
            _obj_path(ns, "pod", pod["metadata"]["name"]).unlink(missing_ok=True)
            (STATE / "logs" / ns / f"{pod['metadata']['name']}.log").unlink(missing_ok=True)
            continue
        pod["status"] = {"phase": "Succeeded" if code == 0 else "Failed", "containerStatuses": [
            {"name": "k6", "state": {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                                    "startedAt": pod["status"]["startTime"], "finishedAt": _now()}}}]}
        _save(ns, pod)
    _set_stage(ns, run, "finished")
    return 0


def main(argv: list[str]) -> int:
    """`kubectl ...`, or (internal) `--operate NAMESPACE TESTRUN`."""
    if argv[:1] == ["--operate"]:
        return operate(argv[1], argv[2])
    return kubectl(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
