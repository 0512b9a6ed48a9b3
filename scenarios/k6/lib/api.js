// HTTP side of a VU: its own login token (never shared), refresh before expiry with jitter,
// and the game routes, each classified (metrics.classify) and contract-checked.
import encoding from 'k6/encoding';
import http from 'k6/http';
import { classify, parseBody, setPhase, wsConnectionSuccess } from './metrics.js';

const TIMEOUT = '15s';
const FALLBACK_TTL_S = 300;
const JOIN_EXPECTED = http.expectedStatuses({ min: 200, max: 299 }, 409);

/** The status a WebSocket close code stands for (4401 unauthorized, 4429 rate limited). */
export function closeStatus(code) {
  return code === 4401 ? 401 : code === 4429 ? 429 : 0;
}

function isObj(v) {
  return v !== null && typeof v === 'object';
}

function validGame(game) {
  return isObj(game) && typeof game.id === 'string' && typeof game.status === 'string' && Array.isArray(game.seats);
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

/** The HTTP client of one VU (one instance per VU; objects reused across requests). */
export class Api {
  constructor(cfg, email, password) {
    this.base = cfg.baseUrl.replace(/\/+$/, '');
    this.email = email;
    this.loginBody = JSON.stringify({ email, password });
    this.tokenTtlS = cfg.auth.tokenTtlS || null;
    this.refreshWindowS = cfg.auth.refreshWindowS;
    this.token = null;
    this.refreshToken = null;
    this.userId = null;
    this.expiresAtMs = 0;
    this.refreshAtMs = 0;
    this.ttlSource = null; // expiresIn | jwt | config | fallback
    this.headers = { 'Content-Type': 'application/json', Authorization: '' };
    const plain = { 'Content-Type': 'application/json' };
    this.p = {
      login: { headers: plain, tags: { name: 'login' }, timeout: TIMEOUT },
      refresh: { headers: plain, tags: { name: 'refresh' }, timeout: TIMEOUT },
      create: { headers: this.headers, tags: { name: 'game_create' }, timeout: TIMEOUT },
      list: { headers: this.headers, tags: { name: 'game_list' }, timeout: TIMEOUT },
      join: { headers: this.headers, tags: { name: 'game_join' }, timeout: TIMEOUT, responseCallback: JOIN_EXPECTED },
      state: { headers: this.headers, tags: { name: 'game_state' }, timeout: TIMEOUT },
    };
    this.refreshBody = '';
  }

  // -- auth ---------------------------------------------------------------------------------

  /** A usable access token (login / refresh when near expiry); false when none could be had. */
  ensureToken() {
    const now = Date.now();
    if (this.token !== null && now < this.refreshAtMs) return true;
    if (this.token !== null && this.refreshToken !== null && now < this.expiresAtMs && this.refresh()) return true;
    return this.login();
  }

  /** Forget the token after a 401 so the next ensureToken() logs in again. */
  invalidate() {
    this.token = null;
    this.refreshAtMs = 0;
  }

  login() {
    setPhase();
    const res = http.post(`${this.base}/api/auth/login`, this.loginBody, this.p.login);
    return this._takeTokens(res);
  }

  refresh() {
    setPhase();
    const res = http.post(`${this.base}/api/auth/refresh`, JSON.stringify({ refreshToken: this.refreshToken }), this.p.refresh);
    return this._takeTokens(res);
  }

  _takeTokens(res) {
    const status = res.status;
    let data = null;
    if (status >= 200 && status < 300) {
      const body = parseBody(res);
      data = body && body.data;
      if (!(isObj(data) && typeof data.accessToken === 'string' && typeof data.refreshToken === 'string' &&
            isObj(data.user) && data.user.id !== undefined)) {
        data = null;
      }
    }
    classify(status, false, data !== null, false);
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
    this.userId = data.user.id;
    this.headers.Authorization = `Bearer ${this.token}`;
    this.expiresAtMs = now + ttl * 1000;
    // Renew within the refresh window (never more than a third of the lifetime), jittered so
    // VUs that logged in together do not renew together.
    const windowMs = Math.min(this.refreshWindowS, ttl / 3) * 1000;
    this.refreshAtMs = this.expiresAtMs - windowMs * (1 + 0.5 * Math.random());
    return true;
  }

  /**
   * Classify one WebSocket connect, decided at authentication (design.md §2): 101 = opened and
   * authenticated, 401/429 from the auth answer or close code, 0 = no usable connection.
   */
  wsConnected(status) {
    const ok = status === 101;
    wsConnectionSuccess.add(ok);
    classify(ok ? 200 : status, false, true, false);
    this._after(status);
  }

  _after(status) {
    if (status === 401) this.invalidate();
  }

  // -- games --------------------------------------------------------------------------------

  /** Waiting games matching the filters (oldest first) or null on failure. */
  listGames(query) {
    setPhase();
    const res = http.get(`${this.base}/api/games?${query}`, this.p.list);
    const body = res.status === 200 ? parseBody(res) : null;
    const games = body && isObj(body.data) && Array.isArray(body.data.games) ? body.data.games : null;
    const ok = games !== null && games.every((g) => isObj(g) && typeof g.id === 'string');
    classify(res.status, false, ok, false);
    this._after(res.status);
    return ok ? games : null;
  }

  /** {game} of a new game, or null. */
  createGame(bodyText) {
    setPhase();
    const res = http.post(`${this.base}/api/games`, bodyText, this.p.create);
    const body = res.status === 201 || res.status === 200 ? parseBody(res) : null;
    const game = body && isObj(body.data) && validGame(body.data.game) ? body.data.game : null;
    classify(res.status, false, game !== null, false);
    this._after(res.status);
    return game;
  }

  /** {status, joined, seat}: 2xx joined (seat null if the body lacks it), 409 full (expected), else failed. */
  joinGame(id) {
    setPhase();
    const res = http.post(http.url`${this.base}/api/games/${id}/join`, null, this.p.join);
    let game = null;
    let seat = null;
    if (res.status >= 200 && res.status < 300) {
      const body = parseBody(res);
      const data = body && body.data;
      if (isObj(data) && validGame(data.game) && typeof data.seat === 'number') {
        game = data.game;
        seat = data.seat;
      }
    }
    classify(res.status, true, game !== null, false);
    this._after(res.status);
    // A 2xx seated us even when its body is broken (a contract failure, counted above): still
    // report the join, or the game would wait for a player who never comes.
    const joined = res.status >= 200 && res.status < 300;
    return { status: res.status, joined, seat };
  }

  /** The game (or null); `own`: this VU created/joined it and has not seen it finished. */
  gameState(id, own) {
    setPhase();
    const res = http.get(http.url`${this.base}/api/games/${id}`, this.p.state);
    const body = res.status === 200 ? parseBody(res) : null;
    const game = body && isObj(body.data) && validGame(body.data.game) ? body.data.game : null;
    classify(res.status, false, game !== null, own);
    this._after(res.status);
    return game;
  }
}
