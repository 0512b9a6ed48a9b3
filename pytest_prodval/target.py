"""Step 1 of a run: the target — where the load goes, and what the preflight learnt about it.

`Target` is what the `prodval_target` fixture gives: the environment's URLs, or those of
the embedded reference stack started on 127.0.0.1 (`--env local`). `Prepared` is the
checked target after preflight and seeding; under xdist the controller sends it to the
workers as JSON (never a secret in it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel

from .models import BypassRecord

if TYPE_CHECKING:
    from .settings import Settings

SOCKET_IO_PATH = "/socket.io/"
SOCKET_IO_QUERY = {"EIO": "4", "transport": "websocket"}


def normalise_ws_url(ws_url: str) -> str:
    """The one WebSocket URL preflight and k6 both use: RingRift's Socket.IO endpoint.

    A bare `ws://host:port` (the plan's `WS_URL`) gets `/socket.io/`; the Engine.IO query
    `EIO=4&transport=websocket` is added when missing. `http(s)://` becomes `ws(s)://`.
    """
    parts = urlsplit(ws_url.strip())
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"WS_URL {ws_url!r} is not a ws:// or wss:// URL")
    path = parts.path if parts.path not in ("", "/") else SOCKET_IO_PATH
    if not path.endswith("/"):
        path += "/"
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    for key, value in SOCKET_IO_QUERY.items():
        query.setdefault(key, value)
    return urlunsplit((scheme, parts.netloc, path, urlencode(query), ""))


@dataclass(frozen=True)
class Target:
    """Where the load goes (already checked not to be production)."""

    base_url: str
    ws_url: str  # normalised (normalise_ws_url)
    ai_service_url: str | None = None
    metrics_url: str | None = None  # the target's Prometheus text endpoint, scraped by the plugin
    prometheus_url: str | None = None  # or a Prometheus server that scrapes the target
    prometheus_match: tuple[tuple[str, str], ...] = ()  # its labels there, e.g. (("job", "ringrift"),)
    admin_token: str | None = None  # the embedded stack's own; for staging PRODVAL_ADMIN_TOKEN
    embedded: bool = False


class Prepared(BaseModel):
    """The checked target of this session (sent to xdist workers as JSON: no secrets)."""

    base_url: str | None = None
    ws_url: str | None = None
    ai_service_url: str | None = None
    metrics_url: str | None = None
    prometheus_url: str | None = None
    prometheus_match: dict[str, str] = {}
    embedded: bool = False
    k6_path: str | None = None
    k6_version: str | None = None
    token_ttl_s: float | None = None
    token_ttl_source: str | None = None
    seeded: str | None = None  # the seeding summary line, when the pool was seeded
    error: str | None = None
    error_check: str | None = None
    hint: str | None = None
    bypass: BypassRecord | None = None
    bypass_by_controller: bool = False

    @classmethod
    def of(cls, target: Target) -> Prepared:
        """The URLs of a target, nothing checked yet."""
        return cls(base_url=target.base_url, ws_url=target.ws_url, ai_service_url=target.ai_service_url,
                   metrics_url=target.metrics_url, prometheus_url=target.prometheus_url,
                   prometheus_match=dict(target.prometheus_match), embedded=target.embedded)

    def target(self, admin_token: str | None = None) -> Target:
        """Back to a Target (on a worker: the controller's)."""
        return Target(self.base_url or "", self.ws_url or "", self.ai_service_url, self.metrics_url,
                      self.prometheus_url, tuple(sorted(self.prometheus_match.items())), admin_token, self.embedded)


@contextmanager
def embedded_stack(log_dir: Path, settings: Settings) -> Iterator[Target]:
    """Start the reference stack on 127.0.0.1 for the session; stopped when the context ends.

    Its fault knobs come from PRODVAL_LOCAL_FAULTS / PRODVAL_LOCAL_AI_FAULTS (validated at configure).
    """
    from .refstack.launcher import LocalStack

    log_dir.mkdir(parents=True, exist_ok=True)
    stack = LocalStack(log_dir=log_dir, faults=settings.local_faults, ai_faults=settings.local_ai_faults)
    try:
        stack.start()
        yield Target(stack.base_url, normalise_ws_url(stack.ws_url), stack.ai_url,
                     metrics_url=stack.metrics_url, admin_token=stack.admin_token, embedded=True)
    finally:
        stack.stop()
