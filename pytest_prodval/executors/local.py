"""The `local` executor: one k6 process on this machine (the default, and what every run was before)."""

from __future__ import annotations

import time

from .. import processes
from ..k6run import k6_command, run_k6
from . import InstanceResult, Launch


class LocalExecutor:
    """One k6 process with its REST API on a free loopback port (for the progress line)."""

    def run(self, launch: Launch) -> list[InstanceResult]:
        """Run k6 once, to its end."""
        paths = launch.instance_paths(1)
        port = processes.free_loopback_port()
        argv = k6_command(launch.k6, launch.script, paths.raw, api_address=f"127.0.0.1:{port}",
                          extra=launch.instance_flags(paths))
        started = time.time()
        result = run_k6(argv, env=launch.env, cwd=launch.script.parent, log_path=paths.log, timeout_s=launch.timeout_s,
                        on_tick=launch.progress(port) if launch.progress else None)
        return [InstanceResult(1, 1, None, paths, result, started_at=started, ended_at=time.time())]
