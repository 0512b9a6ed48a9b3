"""The `segments` executor: N k6 processes on this machine, split the way k6-operator splits a test.

Each instance gets exactly the flags k6-operator gives runner pod i of N
(`--execution-segment=(i-1)/N:i/N`, `--execution-segment-sequence=0,1/N,...,1`, `--paused`,
`--tag instance_id=i`), its own REST API on a loopback port (the operator's 0.0.0.0:6565
is per pod), its own raw output, summary and log. Once every instance is up and paused,
each is resumed through its REST API, one after another, with the starter pod's exact
request. So this is the faithful local stand-in for the operator, and by itself a way to
spread VUs over several processes (k6 is one Go process; its JS VUs compete for one
runtime's scheduler and one output writer).
"""

from __future__ import annotations

import signal
import subprocess
import time
from contextlib import ExitStack
from typing import IO

import httpx

from .. import processes
from ..k6run import K6Result, Supervision, k6_command, log_tail, supervise
from . import SUMMARY_PATH_VAR, InstanceResult, Launch, segment, segment_flags

READY_TIMEOUT_S = 60.0  # every instance paused and answering its REST API (init context, archive parse)
RESUME_BODY = {"data": {"attributes": {"paused": False}, "id": "default", "type": "status"}}  # the starter's


def resume(address: str, *, timeout_s: float = 5.0) -> None:
    """Un-pause one k6 instance, as k6-operator's starter pod does; httpx.HTTPError if it refuses."""
    response = httpx.patch(f"http://{address}/v1/status", json=RESUME_BODY, timeout=timeout_s)
    response.raise_for_status()


def wait_paused(address: str, proc: subprocess.Popen[bytes], deadline: float) -> bool:
    """Whether the instance at `address` answers its REST API as paused before `deadline` (False: it exited or hung)."""
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            attributes = httpx.get(f"http://{address}/v1/status", timeout=1.0).json()["data"]["attributes"]
            if attributes.get("paused"):
                return True
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    return False


class SegmentsExecutor:
    """N paused k6 processes here, resumed together through their REST APIs."""

    def run(self, launch: Launch) -> list[InstanceResult]:
        """Start every instance paused, resume them once all are up, wait for all."""
        count = launch.count
        ports = [processes.free_loopback_port() for _ in range(count)]
        with ExitStack() as logs:
            procs: list[subprocess.Popen[bytes]] = []
            for index in range(1, count + 1):
                paths = launch.instance_paths(index)
                log: IO[bytes] = logs.enter_context(paths.log.open("ab"))
                extra = ["--paused", "--tag", f"instance_id={index}", *segment_flags(index, count),
                         *launch.instance_flags(paths)]
                argv = k6_command(launch.k6, launch.script, paths.raw, api_address=f"127.0.0.1:{ports[index - 1]}",
                                  extra=extra)
                # One summary file per instance; no web dashboard (each would show only its share).
                env = {**launch.env, SUMMARY_PATH_VAR: str(paths.summary), "K6_WEB_DASHBOARD": "false"}
                procs.append(processes.spawn(argv, env=env, cwd=launch.script.parent, stdout=log, stderr=subprocess.STDOUT))
            started: list[float | None] = [None] * count
            try:
                deadline = time.monotonic() + READY_TIMEOUT_S
                ready = [wait_paused(f"127.0.0.1:{port}", proc, deadline) for port, proc in zip(ports, procs)]
                if all(ready):
                    for i, port in enumerate(ports):
                        resume(f"127.0.0.1:{port}")
                        started[i] = time.time()
                    # The progress line reads one REST API: with several instances it shows only the time
                    # (one instance's VUs and requests would read as the run's).
                    on_tick = launch.progress(ports[0] if count == 1 else None) if launch.progress else None
                    ended = supervise(procs, timeout_s=launch.timeout_s, on_tick=on_tick)
                else:  # an instance died or never got ready: the others must not run a partial test
                    for proc in procs:
                        processes.stop(proc, grace_s=5, sig=signal.SIGINT)
                    ended = Supervision(0.0)
            except BaseException:
                for proc in procs:
                    processes.stop(proc, grace_s=5)
                raise
        finished = time.time()
        results = []
        for index, proc in enumerate(procs, start=1):
            paths = launch.instance_paths(index)
            k6 = K6Result(proc.returncode, ended.duration_s, interrupted=ended.interrupted, timed_out=ended.timed_out,
                          log_tail=log_tail(paths.log))
            lost = None
            if started[index - 1] is None and k6.problem() is None:
                lost = f"never resumed: not every instance was up and paused within {READY_TIMEOUT_S:.0f} s"
            results.append(InstanceResult(index, count, segment(index, count) if count > 1 else None, paths, k6,
                                          started_at=started[index - 1], ended_at=finished, lost=lost))
        return results
