"""Facts Python and the k6 script share, written once here and sent in PRODVAL_CONFIG.facts.

The script reads them instead of repeating them (docs/contract.md §6); the plugin reads
the same names when it judges, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

# Trend statistics k6 puts in its summary: `count` and `p(99)` are not in k6's default.
SUMMARY_TREND_STATS = ["avg", "min", "med", "max", "p(90)", "p(95)", "p(99)", "count"]

# The rate-limit bypass header (RingRift's `shouldBypassRateLimit`); its value is a secret.
BYPASS_HEADER = "X-RateLimit-Bypass-Token"
BYPASS_TOKEN_VAR = "RATE_LIMIT_BYPASS_TOKEN"

# `name` tag of every HTTP request of the game script.
REQUEST_NAMES = ["login", "refresh", "game_create", "game_list", "game_join", "game_state", "game_leave", "ws_connect"]

# Rates the plugin breaks down per request name for triage hints (true = failed / 429 / up).
TRIAGE_RATES = ["req_errors", "status_429", "status_401", "server_available"]
TRIAGE_COUNTERS = ["contract_failures_total", "id_lifecycle_mismatches_total"]
# Joins answered 200 whose seat a later join took (the script's seatLost): named in the hints.
SEAT_LOST = "game_aborts_total{reason:seat_lost}"

# A 400 with one of these codes answers a join that lost a race for the last seat: an
# expected answer, not a contract failure (RingRift's join route; its docs say
# GAME_ALREADY_JOINED, its code says ALREADY_JOINED: both are accepted).
EXPECTED_JOIN_ERRORS = ["GAME_FULL", "GAME_NOT_JOINABLE", "ALREADY_JOINED", "GAME_ALREADY_JOINED"]

# How the script classifies an answer (REFERENCE §1, bugs fixed): status class → counters.
ERROR_CLASSES = {
    "401": ["auth_token_expired_total"],
    "429": ["rate_limit_hit_total", "capacity_failures_total"],
    "5xx": ["capacity_failures_total"],
    "0": ["capacity_failures_total"],
    "400": ["contract_failures_total"],
    "403": ["contract_failures_total"],
    "404_known_game": ["id_lifecycle_mismatches_total"],
}

# Counters the script emits a 0 sample for in setup(), so "none happened" is a measurement.
COUNTERS = [
    "contract_failures_total", "id_lifecycle_mismatches_total", "auth_token_expired_total", "rate_limit_hit_total",
    "capacity_failures_total", "games_active_delta", "players_active_delta", "game_aborts_total", "ws_errors_total",
    "games_completed_total", "game_shape_unformable_total",
]

# The ±1 lifecycle counters the plugin sweeps for concurrency (docs/contract.md §6 step 5).
CONCURRENCY_DELTAS = {"games": "games_active_delta", "players": "players_active_delta"}

# `k6 archive` (k6-operator) runs the script's init code, which needs a pool password; the
# archive gets this stand-in (never the secret) and each runner's Secret overrides it.
ARCHIVE_PASSWORD_PLACEHOLDER = "prodval-archive-placeholder-not-a-password"


def for_script() -> dict[str, Any]:
    """The `facts` object of PRODVAL_CONFIG."""
    return {
        "bypassHeader": BYPASS_HEADER,
        "requestNames": REQUEST_NAMES,
        "expectedJoinErrors": EXPECTED_JOIN_ERRORS,
        "errorClasses": ERROR_CLASSES,
        "counters": COUNTERS,
        "concurrencyDeltas": CONCURRENCY_DELTAS,
        "archivePasswordPlaceholder": ARCHIVE_PASSWORD_PLACEHOLDER,
    }
