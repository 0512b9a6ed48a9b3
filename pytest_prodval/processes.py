"""Child processes that never outlive pytest (k6, the reference stack)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

# `setpriv --pdeathsig KILL` (util-linux) sets PR_SET_PDEATHSIG and execs the child: the
# kernel then kills the child when pytest dies, even by kill -9, without a preexec_fn
# (fork + dlopen in a preexec_fn can deadlock while the bypass renewal thread runs).
# Resolved once, in the parent; without setpriv, children are still stopped by PID.
_SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None


@contextmanager
def _signals_not_ignored() -> Iterator[None]:
    """A child inherits ignored SIGINT/SIGTERM (a background CI job ignores SIGINT); a handled one is
    reset to the default at exec. So for the spawn, an ignored signal gets a handler that does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) == signal.SIG_IGN:
            saved[sig] = signal.signal(sig, lambda signum, frame: None)
    try:
        yield
    finally:
        for sig, previous in saved.items():
            signal.signal(sig, previous)


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, for a program that must bind it itself
    (k6's REST API takes only an address); servers of ours get a bound socket instead (`bound_socket`)."""
    with bound_socket() as sock:
        return int(sock.getsockname()[1])


def bound_socket(host: str = "127.0.0.1") -> Any:
    """A listening TCP socket on a free loopback port, to hand to a child (no probe-then-bind race)."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen[bytes]:
    """Start a child in its own process group (a Ctrl-C reaches pytest only; pytest decides how
    children stop), killed by the kernel if pytest dies (PR_SET_PDEATHSIG via setpriv).

    Does not work across an intermediate shell that forks again: start binaries directly.
    """
    command = [_SETPRIV, "--pdeathsig", "KILL", "--", *argv] if _SETPRIV else list(argv)
    with _signals_not_ignored():
        return subprocess.Popen(
            command,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            process_group=0,
            pass_fds=pass_fds,
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
