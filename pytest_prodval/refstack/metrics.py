"""The API's Prometheus metrics under RingRift's names, labels and buckets (contract.md §4).

A per-process `CollectorRegistry`, not prometheus_client's global one: a test that builds
two `Api` objects in one interpreter gets two independent sets of counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

AI_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8)
MOVE_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Every metric the stack models, registered on its own registry."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.http_requests = Counter("http_requests_total", "Total number of HTTP requests",
                                     ["method", "path", "status"], registry=r)
        self.http_duration = Histogram("http_request_duration_seconds", "Duration of HTTP requests in seconds",
                                       ["method", "path", "status"], buckets=HTTP_BUCKETS, registry=r)
        self.games_total = Counter("ringrift_games_total", "Total number of games created by type", ["type"],
                                   registry=r)
        self.games_active = Gauge("ringrift_games_active", "Number of currently active games", registry=r)
        self.moves_total = Counter("ringrift_moves_total", "Total number of moves made by type", ["type"], registry=r)
        self.users_active = Gauge("ringrift_users_active", "Number of currently connected users", registry=r)
        self.websocket_connections = Gauge("ringrift_websocket_connections", "Number of active WebSocket connections",
                                           registry=r)
        self.ai_requests = Counter("ringrift_ai_requests_total", "Total AI service requests by outcome", ["outcome"],
                                   registry=r)
        self.ai_duration = Histogram("ringrift_ai_request_duration_seconds",
                                     "Duration of AI service requests in seconds", ["ai_type", "difficulty"],
                                     buckets=AI_BUCKETS, registry=r)
        self.ai_fallbacks = Counter("ringrift_ai_fallback_total", "Total number of AI fallbacks by reason",
                                    ["reason"], registry=r)
        self.rate_limit_hits = Counter("ringrift_rate_limit_hits_total", "Total number of rate limit violations",
                                       ["endpoint", "limiter"], registry=r)
        self.move_latency = Histogram("ringrift_game_move_latency_seconds", "Game move processing latency in seconds",
                                      ["board_type", "phase"], buckets=MOVE_BUCKETS, registry=r)

    def render(self) -> bytes:
        """The text exposition of every metric."""
        return generate_latest(self.registry)
