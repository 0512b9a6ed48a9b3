// HTTP side of a VU (RingRift's API, docs/contract.md §1): its own login token (never shared),
// refresh before expiry with jitter, and the game routes, each classified (metrics.classify) and
// contract-checked. The rate-limit bypass token (a secret) goes into request headers only.
import encoding from 'k6/encoding';
import http from 'k6/http';
import { classify, parseBody, setPhase, wsConnectionSuccess } from './metrics.js';

const TIMEOUT = '15s';
// A login waits as long as k6's default allows. A timed-out login is not cancelled on the server:
// it still costs a full password hash (RingRift: bcryptjs cost 12, 0.45 s measured on Node's one
// thread, so ~2 logins/s per API process), and the retry queues another one behind it. With
// 15 s the baseline at --prodval-time-scale 0.1 against RingRift sent 232 logins for 95 VUs: 19
// succeeded in time, the server finished the other ~210 after their clients had given up (its log
// kept logging users in for a minute after k6 had exited), so no game formed.
const LOGIN_TIMEOUT = '60s';
const FALLBACK_TTL_S = 300;
const MAX_RETRY_AFTER_MS = 30000;
const MAX_LOGIN_BACKOFF_MS = 60000;
// k6's http_req_failed for a join: a 400 is an expected race answer there (GAME_FULL, ...). The
// body decides for req_errors; k6's callback sees only the status.
const JOIN_EXPECTED = http.expectedStatuses({ min: 200, max: 299 }, 400);
// Leaving a game that has not started, whose seat a later join may have taken (see seatLost): a
// 403 "not a participant" is then the answer to expect, and the lost seat is counted at the join.
const LEAVE_UNSEATED = http.expectedStatuses({ min: 200, max: 299 }, 403);

function isObj(v) {
  return v !== null && typeof v === 'object';
}

/** A `game` object of the contract: id and status at least. */
export function validGame(game) {
  return isObj(game) && typeof game.id === 'string' && game.id !== '' && typeof game.status === 'string';
}

/** Seconds of lifetime in a JWT (exp - iat, else exp - now); null when it cannot be read. */
export function jwtLifetimeS(token, nowMs) {
  try {
    const parts = token.split('.');
    if (parts.length !== 3) return null;
    const claims = JSON.parse(encoding.b64decode(parts[1], 'rawurl', 's'));
    if (typeof claims.exp !== 'number') return null;
    const ttl = typeof claims.iat === 'number' ? claims.exp - claims.iat : claims.exp - nowMs / 1000;
    return ttl > 0 ? ttl : null;
  } catch (e) {
    return null;
  }
}

/** The number of seats taken in a game object (player1Id … player4Id). */
export function seatsTaken(game) {
  let n = 0;
  if (game.player1Id) n++;
  if (game.player2Id) n++;
  if (game.player3Id) n++;
  if (game.player4Id) n++;
  return n;
}

/** True when `userId` holds one of the game's human seats (player1Id … player4Id). */
export function seated(game, userId) {
  return userId !== null && (game.player1Id === userId || game.player2Id === userId
    || game.player3Id === userId || game.player4Id === userId);
}

/** The error code of an error body, or ''. */
function errorCode(res) {
  const body = parseBody(res);
  return body && isObj(body.error) && typeof body.error.code === 'string' ? body.error.code : '';
}

/** The HTTP client of one VU (one instance per VU; objects reused across requests). */
export class Api {
  /**
   * cfg: the validated PRODVAL_CONFIG; email/password: this VU's pool user; bypassToken: the
   * rate-limit bypass token or '' (sent as X-RateLimit-Bypass-Token, never logged or tagged).
   */
  constructor(cfg, email, password, bypassToken) {
    this.base = cfg.baseUrl.replace(/\/+$/, '');
    this.email = email;
    this.loginBody = JSON.stringify({ email, password });
    this.tokenTtlS = cfg.auth.tokenTtlS || null;
    this.refreshWindowS = cfg.auth.refreshWindowS;
    this.raceCodes = cfg.facts.expectedJoinErrors;
    this.token = null;
    this.refreshToken = null;
    this.userId = null;
    this.expiresAtMs = 0;
    this.refreshAtMs = 0;
    this.ttlSource = null; // expiresIn | jwt | config | fallback
    this.retryAfterMs = 0;
    this.loginFailures = 0;
    this.loginNotBeforeMs = 0;
    this.inSession = false;
    const plain = { 'Content-Type': 'application/json' };
    if (bypassToken) plain[cfg.facts.bypassHeader] = bypassToken;
    this.headers = Object.assign({ Authorization: '' }, plain);
    this.wsHeaders = bypassToken ? { [cfg.facts.bypassHeader]: bypassToken } : {};
    const p = (headers, name, extra) => Object.assign({ headers, tags: { name }, timeout: TIMEOUT }, extra || {});
    this.p = {
      login: p(plain, 'login', { timeout: LOGIN_TIMEOUT }),
      loginInSession: p(plain, 'login'),
      refresh: p(plain, 'refresh'),
      create: p(this.headers, 'game_create'),
      list: p(this.headers, 'game_list'),
      join: p(this.headers, 'game_join', { responseCallback: JOIN_EXPECTED }),
      state: p(this.headers, 'game_state'),
      leave: p(this.headers, 'game_leave'),
      leaveUnstarted: p(this.headers, 'game_leave', { responseCallback: LEAVE_UNSEATED }),
    };
  }

  // -- auth ---------------------------------------------------------------------------------

  /**
   * A usable access token (login / refresh when near expiry); false when none could be had.
   * Inside a Socket.IO session (`inSession`, set by the player around ws.connect) a login waits
   * 15 s at most, not 60 s: a callback blocked that long leaves the server's pings unanswered.
   */
  ensureToken() {
    const now = Date.now();
    if (this.token !== null && now < this.refreshAtMs) return true;
    if (this.token !== null && this.refreshToken !== null && now < this.expiresAtMs && this.refresh()) return true;
    if (now < this.loginNotBeforeMs) return false; // backing off after failed logins
    return this.login();
  }

  /** Time to renew (cheap check for timers). */
  dueForRefresh(now) {
    return this.token !== null && now >= this.refreshAtMs;
  }

  /** Forget the token after a 401 so the next ensureToken() logs in again. */
  invalidate() {
    this.token = null;
    this.refreshAtMs = 0;
  }

  login() {
    setPhase();
    const res = http.post(`${this.base}/api/auth/login`, this.loginBody, this.inSession ? this.p.loginInSession : this.p.login);
    const ok = this._takeTokens(res, true);
    // Failed logins in a row back off exponentially (2 s … 60 s): RingRift locks an account out
    // after a few failed logins (429 AUTH_LOGIN_LOCKED_OUT), so a 401 storm must not hammer it.
    this.loginFailures = ok ? 0 : this.loginFailures + 1;
    if (!ok) {
      const wait = Math.min(MAX_LOGIN_BACKOFF_MS, 1000 * Math.pow(2, Math.min(this.loginFailures, 6)));
      this.retryAfterMs = Math.max(this.retryAfterMs, wait * (0.75 + 0.5 * Math.random()));
      this.loginNotBeforeMs = Date.now() + this.retryAfterMs;
    }
    return ok;
  }

  refresh() {
    setPhase();
    const res = http.post(`${this.base}/api/auth/refresh`, JSON.stringify({ refreshToken: this.refreshToken }),
      this.p.refresh);
    return this._takeTokens(res, false);
  }

  _takeTokens(res, isLogin) {
    const status = res.status;
    let data = null;
    if (status >= 200 && status < 300) {
      const body = parseBody(res);
      data = body && body.data;
      // A refresh answer carries no `user` and no `expiresIn` on RingRift: that is fine.
      if (!(isObj(data) && typeof data.accessToken === 'string' && data.accessToken !== '' &&
            typeof data.refreshToken === 'string' &&
            (!isLogin || (isObj(data.user) && data.user.id !== undefined && data.user.id !== null)))) {
        data = null;
      }
    }
    classify(isLogin ? 'login' : 'refresh', status, false, data !== null, false);
    this._after(status, res);
    if (data === null) {
      this.invalidate();
      return false;
    }
    const now = Date.now();
    let ttl = null;
    if (typeof data.expiresIn === 'number' && data.expiresIn > 0) {
      ttl = data.expiresIn;
      this.ttlSource = 'expiresIn';
    } else if ((ttl = jwtLifetimeS(data.accessToken, now)) !== null) {
      this.ttlSource = 'jwt';
    } else if (this.tokenTtlS) {
      ttl = this.tokenTtlS;
      this.ttlSource = 'config';
    } else {
      ttl = FALLBACK_TTL_S; // and a 401 makes us log in again
      this.ttlSource = 'fallback';
    }
    this.token = data.accessToken;
    this.refreshToken = data.refreshToken;
    if (isLogin) this.userId = String(data.user.id);
    this.headers.Authorization = `Bearer ${this.token}`;
    this.expiresAtMs = now + ttl * 1000;
    // Renew within the refresh window (never more than a third of the lifetime), jittered so
    // VUs that logged in together do not renew together.
    const windowMs = Math.min(this.refreshWindowS, ttl / 3) * 1000;
    this.refreshAtMs = this.expiresAtMs - windowMs * (1 + 0.5 * Math.random());
    return true;
  }

  /**
   * Classify one WebSocket connect, decided at the Socket.IO connect answer: 101 = `40{sid}`,
   * 401 = `44{...}` (token refused), other = the handshake's HTTP status, 0 = no usable connection.
   */
  wsConnected(status) {
    const ok = status === 101;
    wsConnectionSuccess.add(ok);
    classify('ws_connect', ok ? 200 : status, false, true, false);
    this._after(status);
  }

  _after(status, res) {
    if (status === 401) this.invalidate();
    if (status === 429 && res) {
      const seconds = parseFloat(res.headers['Retry-After']);
      this.retryAfterMs = Math.min(MAX_RETRY_AFTER_MS, isFinite(seconds) && seconds > 0 ? seconds * 1000 : 1000);
    }
  }

  /** How long to wait before the next try: a 429's Retry-After (≤ 30 s) or the login backoff, once; else `min`. */
  backoffMs(min) {
    const wait = Math.max(min, this.retryAfterMs);
    this.retryAfterMs = 0;
    return wait;
  }

  // -- games --------------------------------------------------------------------------------

  /** Joinable games (GET /api/games/lobby/available, tag game_list), or null on failure. */
  listGames(query) {
    setPhase();
    const res = http.get(`${this.base}/api/games/lobby/available?${query}`, this.p.list);
    const body = res.status === 200 ? parseBody(res) : null;
    let games = body && isObj(body.data) && Array.isArray(body.data.games) ? body.data.games : null;
    if (games !== null && !games.every((g) => isObj(g) && typeof g.id === 'string')) games = null;
    classify('game_list', res.status, false, games !== null, false);
    this._after(res.status, res);
    return games;
  }

  /** The new game, or null. */
  createGame(bodyText) {
    setPhase();
    const res = http.post(`${this.base}/api/games`, bodyText, this.p.create);
    const body = res.status === 201 || res.status === 200 ? parseBody(res) : null;
    const game = body && isObj(body.data) && validGame(body.data.game) ? body.data.game : null;
    classify('game_create', res.status, false, game !== null, false);
    this._after(res.status, res);
    return game;
  }

  /**
   * Join over HTTP: {status, joined, race, game}. 2xx = joined (game null if the body is broken);
   * a 400 with a race code (GAME_FULL …) = race (expected); anything else failed (classified).
   */
  joinGame(id) {
    setPhase();
    const res = http.post(http.url`${this.base}/api/games/${id}/join`, null, this.p.join);
    const status = res.status;
    let game = null;
    let race = false;
    if (status >= 200 && status < 300) {
      const body = parseBody(res);
      if (body && isObj(body.data) && validGame(body.data.game)) game = body.data.game;
    } else if (status === 400) {
      race = this.raceCodes.indexOf(errorCode(res)) >= 0;
    }
    // A 404 here is about a game someone else announced: not this VU's game (no mismatch).
    classify('game_join', status, race, game !== null, false);
    this._after(status, res);
    return { status, joined: status >= 200 && status < 300, race, game };
  }

  /** The game (or null); `own`: this VU created/joined it and has not seen it end. */
  gameState(id, own) {
    setPhase();
    const res = http.get(http.url`${this.base}/api/games/${id}`, this.p.state);
    const body = res.status === 200 ? parseBody(res) : null;
    const game = body && isObj(body.data) && validGame(body.data.game) ? body.data.game : null;
    classify('game_state', res.status, false, game !== null, own);
    this._after(res.status, res);
    return { status: res.status, game };
  }

  /**
   * Leave a waiting game / resign an active one (tag game_leave): 'left' on 2xx, 'not_seated' for
   * a 403 to leaving an unstarted game (`unstarted`: our seat may have been taken), else 'failed'.
   */
  leaveGame(id, own, unstarted) {
    setPhase();
    const res = http.post(http.url`${this.base}/api/games/${id}/leave`, null,
      unstarted ? this.p.leaveUnstarted : this.p.leave);
    const ok = res.status >= 200 && res.status < 300;
    const notSeated = unstarted === true && res.status === 403;
    const body = ok ? parseBody(res) : null;
    classify('game_leave', res.status, notSeated, body !== null && body.success === true, own);
    this._after(res.status, res);
    return notSeated ? 'not_seated' : ok ? 'left' : 'failed';
  }
}
