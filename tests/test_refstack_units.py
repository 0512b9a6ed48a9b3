"""Reference stack pieces without processes: knobs, tokens, buckets, seats."""

from __future__ import annotations

import time

import pytest

from pytest_prodval.refstack.faults import AiFaults, ApiFaults, FaultError
from pytest_prodval.refstack.games import Games
from pytest_prodval.refstack.ratelimit import Buckets, Bypass
from pytest_prodval.refstack.security import Jwt, TokenError


def test_knob_updates_are_all_or_nothing_and_reset_restores_defaults() -> None:
    faults = ApiFaults()
    with pytest.raises(FaultError, match="unknown fault knob 'nope'"):
        faults.update({"api_latency_ms": 50, "nope": 1})
    assert faults.api_latency_ms == 0
    faults.update({"api_latency_ms": 50, "health_status": True})
    assert (faults.api_latency_ms, faults.health_code()) == (50, 503)
    faults.update({"reset": True, "token_ttl_s": 5})
    assert (faults.api_latency_ms, faults.token_ttl_s, faults.health_code()) == (0, 5, 200)
    with pytest.raises(FaultError):
        AiFaults().update({"ai_failure_rate": 1.5})


def test_jwt_rejects_other_kinds_bad_signatures_and_expired_tokens() -> None:
    jwt = Jwt()
    token = jwt.issue({"sub": "u", "email": "e", "typ": "access", "exp": time.time() + 60})
    assert jwt.verify(token, kind="access")["sub"] == "u"
    for bad, kind, code in ((token, "refresh", "invalid_token"), (token + "x", "access", "invalid_token"),
                            (Jwt().issue({"typ": "access", "exp": time.time() + 60}), "access", "invalid_token"),
                            (jwt.issue({"typ": "access", "exp": time.time() - 1}), "access", "token_expired")):
        with pytest.raises(TokenError) as caught:
            jwt.verify(bad, kind=kind)
        assert caught.value.code == code


def test_bucket_allows_the_burst_then_refills_at_the_rate() -> None:
    buckets = Buckets()
    assert [buckets.take("k", 50.0, 3) for _ in range(4)] == [True, True, True, False]
    time.sleep(0.05)
    assert buckets.take("k", 50.0, 3)


def test_bypass_matches_the_whole_email_and_switches_off_after_its_lease() -> None:
    bypass = Bypass()
    assert not bypass.covers("loadtest_user_1@loadtest.local")
    bypass.set(enabled=True, lease_s=0.05, pattern=None)
    assert bypass.covers("loadtest_user_1@loadtest.local")
    assert not bypass.covers("loadtest_user_1@loadtest.local.evil.test")
    time.sleep(0.06)
    assert bypass.as_dict()["enabled"] is False and not bypass.covers("loadtest_user_1@loadtest.local")


def test_a_seat_never_joined_over_the_websocket_counts_as_absent_after_the_grace() -> None:
    games = Games()
    game = games.create(creator_id="a", board="square8", max_players=3, ai_seats=1, moves_per_game=5)
    assert game.take_seat("b") == (1, True) and game.take_seat("b") == (1, False)
    game.joined_seats.add(0)
    assert game.absent_seat(grace_s=60) is None
    assert game.absent_seat(grace_s=0) == 1
    games.left_waiting(game)
    assert game.status == "active" and games.list_waiting(board=None, max_players=None, ai_seats=None) == []
