"""Child processes that never outlive pytest (k6, the reference stack)."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Ask Linux to SIGKILL this child when the process that started it dies, even by kill -9."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # Own process group, so a Ctrl-C in the terminal reaches pytest only and pytest decides
    # how children stop (orderly: SIGINT/SIGTERM, then SIGKILL). A signal ignored by pytest
    # (a background job of a non-interactive shell ignores SIGINT) must not stay ignored here.
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (another process may still take it: callers retry)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a child that is killed if pytest dies (PR_SET_PDEATHSIG) and can be stopped as a group.

    Does not work across an intermediate shell that forks again: start binaries directly.
    """
    return subprocess.Popen(
        list(argv),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdout=stdout,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )


def stop(proc: subprocess.Popen[bytes], *, grace_s: float = 10.0, sig: int = signal.SIGTERM) -> int | None:
    """Stop a child started by `spawn`: `sig` to its group, SIGKILL after `grace_s`; returns its exit code."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return proc.wait()
    try:
        return proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return proc.wait()
