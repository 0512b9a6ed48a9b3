"""Reference stack pieces without processes: knobs, register policy, tokens, limiters, bypass, engine, games."""

from __future__ import annotations

import base64
import json
import time

import pytest

from pytest_prodval.refstack.engine import Engine, Player
from pytest_prodval.refstack.faults import AiFaults, ApiFaults, FaultError
from pytest_prodval.refstack.games import Games, JoinError
from pytest_prodval.refstack.metrics import Metrics
from pytest_prodval.refstack.ratelimit import Buckets, Bypass, Counted, DEFAULT_BYPASS_PATTERN, Limited, RateLimiter
from pytest_prodval.refstack.security import Jwt, TokenError, Users, issue_tokens, registration_problem

GOOD = {"username": "pool_user-1", "email": "a@b.test", "password": "Passw0rdX", "confirmPassword": "Passw0rdX"}


def test_knob_updates_are_all_or_nothing_and_reset_restores_defaults() -> None:
    faults = ApiFaults()
    with pytest.raises(FaultError, match="unknown fault knob 'nope'"):
        faults.update({"api_latency_ms": 50, "nope": 1})
    assert faults.api_latency_ms == 0
    faults.update({"api_latency_ms": 50, "health_status": True, "route_500": ["game_list", "login", "login"]})
    assert (faults.api_latency_ms, faults.health_code(), faults.route_500) == (50, 503, ["game_list", "login"])
    with pytest.raises(FaultError, match="unknown name"):
        faults.update({"reset": True, "unbypassed_limiters": ["gameMoves", "noSuchLimiter"]})
    assert faults.api_latency_ms == 50  # the failed update did not reset either
    faults.update({"reset": True, "token_ttl_s": 5, "unbypassed_limiters": ["gameMoves"]})
    assert (faults.api_latency_ms, faults.token_ttl_s, faults.health_code(), faults.route_500) == (0, 5, 200, [])
    for bad in ({"ai_failure_rate": 1.5}, {"ai_fallback_rate": -0.1}, {"think_ms": "slow"}):
        with pytest.raises(FaultError):
            AiFaults().update(bad)
    with pytest.raises(FaultError, match="list of names"):
        ApiFaults().update({"route_500": "game_list"})


@pytest.mark.parametrize(("change", "rule"), [
    ({"username": "ab"}, "username must be 3-20"), ({"username": "bad name!"}, "username must be 3-20"),
    ({"email": "not-an-email"}, "email"), ({"password": "Sh0rt", "confirmPassword": "Sh0rt"}, "8-128"),
    ({"password": "PASSW0RDX", "confirmPassword": "PASSW0RDX"}, "lower-case"),
    ({"password": "passw0rdx", "confirmPassword": "passw0rdx"}, "upper-case"),
    ({"password": "Passwordx", "confirmPassword": "Passwordx"}, "digit"),
    ({"confirmPassword": "Passw0rdY"}, "confirmPassword must match"),
])
def test_register_policy_names_the_broken_rule(change: dict[str, str], rule: str) -> None:
    assert registration_problem(GOOD) is None
    problem = registration_problem({**GOOD, **change})
    assert problem is not None and rule in problem


def test_tokens_carry_ringrifts_claims_and_refuse_the_other_kind_bad_signatures_and_expiry() -> None:
    jwt, users = Jwt(), Users()
    user = users.register("A@B.test", "alice", "Passw0rdX")
    assert users.conflict("a@b.TEST", "bob") == "EMAIL_EXISTS" and users.conflict("c@d.test", "ALICE") == "USERNAME_EXISTS"
    access, refresh = issue_tokens(jwt, user, ttl_s=60)
    header, payload = (json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))) for p in access.split(".")[:2])
    assert header == {"alg": "HS256", "typ": "JWT"}
    assert set(payload) == {"userId", "email", "tv", "iat", "exp", "aud", "iss"} and payload["exp"] - payload["iat"] == 60
    assert jwt.verify(access, kind="access")["userId"] == user.id == jwt.verify(refresh, kind="refresh")["userId"]
    expired, _ = issue_tokens(jwt, user, ttl_s=0)
    for bad, kind, code in ((access, "refresh", "AUTH_TOKEN_INVALID"), (access + "x", "access", "AUTH_TOKEN_INVALID"),
                            (issue_tokens(Jwt(), user, ttl_s=60)[0], "access", "AUTH_TOKEN_INVALID"),
                            (expired, "access", "AUTH_TOKEN_EXPIRED")):
        with pytest.raises(TokenError) as caught:
            jwt.verify(bad, kind=kind)
        assert caught.value.code == code
    opaque, _ = issue_tokens(jwt, user, ttl_s=60, opaque=True)
    assert opaque.count(".") == 0 and jwt.verify(opaque, kind="access")["userId"] == user.id


def test_bucket_allows_the_burst_then_says_how_long_to_wait() -> None:
    buckets = Buckets()
    assert [buckets.take("k", 50.0, 3) == 0 for _ in range(4)] == [True, True, True, False]
    assert 0 < buckets.take("k", 50.0, 3) <= 0.02
    time.sleep(0.05)
    assert buckets.take("k", 50.0, 3) == 0


def test_bypass_from_env_by_token_or_pattern_and_its_lease() -> None:
    assert DEFAULT_BYPASS_PATTERN == r"^loadtest\..+@loadtest\.local$"  # RingRift's: the pool does not match it
    off = Bypass.from_env({"RATE_LIMIT_BYPASS_TOKEN": "t" * 16})
    assert not off.covers(token="t" * 16, email="loadtest.a@loadtest.local")
    env = Bypass.from_env({"RATE_LIMIT_BYPASS_ENABLED": "true", "RATE_LIMIT_BYPASS_TOKEN": "t" * 16})
    assert env.covers(token="t" * 16, email=None) and not env.covers(token="t" * 15, email=None)
    assert env.covers(token=None, email="loadtest.a@loadtest.local")
    assert not env.covers(token=None, email="loadtest_user_1@loadtest.local")
    assert Bypass.from_env({"RATE_LIMIT_BYPASS_ENABLED": "true", "RATE_LIMIT_BYPASS_TOKEN": "short"}).token is None
    leased = Bypass()
    leased.set(enabled=True, lease_s=0.05, pattern=r"loadtest.*@loadtest\.local")
    assert leased.covers(token=None, email="loadtest_user_1@loadtest.local")
    time.sleep(0.06)
    assert leased.as_dict()["enabled"] is False and not leased.covers(token=None, email="loadtest_user_1@loadtest.local")


def test_limiters_name_the_one_that_refused_and_unbypassed_limiters_stay_on() -> None:
    faults, metrics = ApiFaults(user_burst=2, user_rate_per_s=0.5), Metrics()
    bypass = Bypass(enabled=True, pattern=r"^pool")
    limiter = RateLimiter(faults, bypass, metrics)
    check = dict(endpoint="/x", ip="1.2.3.4", user="u1", token=None, email="other@x.test")
    # Allowed and counted: what RingRift's X-RateLimit-Limit / -Remaining headers show.
    assert [limiter.check(("apiAuthenticated", "gameMoves"), **check) for _ in range(2)] == [  # type: ignore[arg-type]
        Counted(limit=2, remaining=1), Counted(limit=2, remaining=0)]
    refused = limiter.check(("apiAuthenticated", "gameMoves"), **check)  # type: ignore[arg-type]
    assert isinstance(refused, Limited) and (refused.limiter, refused.retry_after_s) == ("apiAuthenticated", 2)
    assert metrics.registry.get_sample_value("ringrift_rate_limit_hits_total",
                                             {"endpoint": "/x", "limiter": "apiAuthenticated"}) == 1
    pooled = {**check, "user": "u2", "email": "pool@x.test"}
    assert all(limiter.check(("gameMoves",), **pooled) is None for _ in range(5))  # type: ignore[arg-type]  # bypassed: uncounted
    faults.unbypassed_limiters = ["gameMoves"]  # bypassed requests were never charged: a full bucket
    assert [isinstance(limiter.check(("gameMoves",), **pooled), Counted) for _ in range(3)] == [True, True, False]  # type: ignore[arg-type]


def _engine(humans: int = 1, ais: int = 1, **kwargs: float) -> Engine:
    players = [Player(f"h{n}", f"h{n}", n, "human") for n in range(1, humans + 1)]
    players += [Player(f"ai-{n}", "AI", n, "ai", 3) for n in range(humans + 1, humans + ais + 1)]
    return Engine("g", "square8", players, length=int(kwargs.get("length", 0)), choice_rate=kwargs.get("choice", 0.0))


def test_engine_rotates_players_gives_unique_move_ids_and_ends_naturally() -> None:
    engine = _engine(2, 1, length=20)
    assert 150 <= _engine().length <= 250
    seen: set[str] = set()
    order = []
    while engine.reason is None:
        assert 3 <= len(engine.valid) <= 6 and all(m["player"] == engine.current_player for m in engine.valid)
        seen.update(m["id"] for m in engine.valid)
        order.append(engine.current_player)
        engine.apply(engine.valid[0])
    assert order[:6] == [1, 2, 3, 1, 2, 3] and len(seen) > 60
    assert [m["moveNumber"] for m in engine.history] == list(range(1, 21))
    assert {m["type"] for m in engine.history} >= {"place_ring"} and engine.phase == "game_over"
    assert engine.winner in (1, 2, 3) and engine.reason in ("ring_elimination", "territory_control", "last_player_standing")


def test_engine_decision_phase_resignation_and_no_ai_only_games() -> None:
    engine = _engine(2, 1, choice=1.0)
    outcome = engine.apply(engine.valid[0])
    choice = outcome.choice
    assert choice is not None and engine.phase == "line_processing" and engine.current_player == 1
    assert [o["moveId"] for o in choice["options"]] == [m["id"] for m in engine.valid]
    assert {m["type"] for m in engine.valid} == {"process_line"}
    assert engine.apply(engine.find(choice["options"][1]["moveId"]) or {}).choice is None and engine.current_player == 2
    assert engine.resign(2) is False and engine.current_player == 3  # the turn passes on
    assert engine.resign(1) is True and (engine.winner, engine.reason) == (3, "resignation")  # only an AI left


def test_games_join_rules_and_ringrifts_ai_rule() -> None:
    games = Games()
    spec = dict(board_type="square8", time_control={}, is_rated=False, is_private=False, ai_difficulty=[3])
    ai = games.create(creator_id="a", creator_name="a", max_players=2, ai_count=1, start_at_once=False, **spec)  # type: ignore[arg-type]
    assert ai.status == "active" and ai.started_at is not None
    mixed = games.create(creator_id="a", creator_name="a", max_players=3, ai_count=1, start_at_once=False, **spec)  # type: ignore[arg-type]
    assert mixed.status == "waiting" and mixed.join("b", "b") is True and mixed.status == "active"
    ringrift = games.create(creator_id="a", creator_name="a", max_players=3, ai_count=1, start_at_once=True, **spec)  # type: ignore[arg-type]
    assert ringrift.status == "active"
    for game, user, code in ((ringrift, "b", "GAME_NOT_JOINABLE"), (mixed, "b", "ALREADY_JOINED"), (mixed, "c", "GAME_NOT_JOINABLE")):
        with pytest.raises(JoinError) as caught:
            game.join(user, user)
        assert caught.value.code == code
    body = mixed.public()
    assert body["player1"] == {"id": "a", "username": "a"} and body["player3Id"] is None and body["player4"] is None
    assert body["gameState"] == {"aiOpponents": {"count": 1, "difficulty": [3]}} and len(body["inviteCode"]) == 8
    assert games.by_invite(body["inviteCode"].lower()) is mixed
    assert games.available(board_type=None, max_players=None, limit=20) == []


def test_join_last_write_wins_overwrites_the_last_seat_of_a_full_game_until_it_starts() -> None:
    games = Games()
    spec = dict(board_type="square8", time_control={}, is_rated=False, is_private=False, ai_difficulty=[])
    game = games.create(creator_id="a", creator_name="a", max_players=3, ai_count=0, start_at_once=False, **spec)  # type: ignore[arg-type]
    assert game.join("b", "b", last_write_wins=True) is False
    assert game.join("c", "c", last_write_wins=True) is False and game.status == "waiting"  # full, not started
    assert game.join("d", "d", last_write_wins=True) is False  # answered as seated: c loses seat 3
    assert [s.user_id for s in game.seats] == ["a", "b", "d"] and game.seat_of("c") is None
    assert game.displaced == {"c"} and games.available(board_type=None, max_players=None, limit=20) == [game]
    assert game.join("c", "c", last_write_wins=True) is False  # back on seat 3: now d has lost it
    assert game.seat_of("c") is not None and game.displaced == {"d"}
    assert game.activate_if_full() is True and game.status == "active"  # the first join_game starts it
    with pytest.raises(JoinError) as caught:
        game.join("e", "e", last_write_wins=True)
    assert caught.value.code == "GAME_NOT_JOINABLE"
    healthy = games.create(creator_id="a", creator_name="a", max_players=2, ai_count=0, start_at_once=False, **spec)  # type: ignore[arg-type]
    assert healthy.join("b", "b") is True and healthy.status == "active" and not healthy.displaced
