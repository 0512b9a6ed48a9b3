// Contract metrics (design.md §2), the `phase` VU tag, and the classification of every
// HTTP response / WebSocket connect. One sample per request in each of the five Rates.
import exec from 'k6/execution';
import { Counter, Rate, Trend } from 'k6/metrics';

export const reqErrors = new Rate('req_errors');
export const trueErrors = new Rate('true_errors');
export const status401 = new Rate('status_401');
export const status429 = new Rate('status_429');
export const serverAvailable = new Rate('server_available');

export const contractFailures = new Counter('contract_failures_total');
export const idLifecycleMismatches = new Counter('id_lifecycle_mismatches_total');
export const authTokenExpired = new Counter('auth_token_expired_total');
export const rateLimitHits = new Counter('rate_limit_hit_total');
export const capacityFailures = new Counter('capacity_failures_total');

export const wsConnectionSuccess = new Rate('ws_connection_success');
export const wsMessageLatency = new Trend('ws_message_latency', true);
export const moveE2eLatency = new Trend('move_e2e_latency', true);
export const moveServerProcessing = new Trend('move_server_processing', true);
export const moveStalled = new Rate('move_stalled');
export const aiMoveLatency = new Trend('ai_move_latency', true);
export const aiFallback = new Rate('ai_fallback');

export const gamesActiveDelta = new Counter('games_active_delta');
export const playersActiveDelta = new Counter('players_active_delta');

// Extra diagnostics (not read by criteria): why a game session ended early, WebSocket error
// messages from the server, games played to the end.
export const gameAborts = new Counter('game_aborts_total');
export const wsErrors = new Counter('ws_errors_total');
export const gamesCompleted = new Counter('games_completed_total');

/**
 * One 0 sample per counter, so every counter of the contract is in the summary (count 0)
 * even when nothing happened: "zero" is then a measurement, not missing data.
 */
export function emitZeroCounters() {
  setPhase();
  [contractFailures, idLifecycleMismatches, authTokenExpired, rateLimitHits, capacityFailures, gamesActiveDelta,
    playersActiveDelta, gameAborts, wsErrors, gamesCompleted].forEach((counter) => counter.add(0));
}

// --- phase ---------------------------------------------------------------------------------

let steadyStartMs = 0;
let steadyEndMs = 0;
let currentPhase = '';

/** Remember the steady window of this run (from setup()'s t0); call at each iteration start. */
export function initPhase(t0, steady) {
  steadyStartMs = t0 + steady.startS * 1000;
  steadyEndMs = t0 + steady.endS * 1000;
  currentPhase = '';
  setPhase();
}

/** Set VU tag `phase` (ramp/steady/rampdown) for the samples that follow. */
export function setPhase() {
  const now = Date.now();
  const phase = now < steadyStartMs ? 'ramp' : now <= steadyEndMs ? 'steady' : 'rampdown';
  if (phase !== currentPhase) {
    currentPhase = phase;
    exec.vu.tags.phase = phase;
  }
  return now;
}

// --- classification ------------------------------------------------------------------------

const ONE = 1;

/**
 * Record the five Rates and the counters for one HTTP response or WebSocket connect.
 * status: HTTP status (0 = no response). expected409: a 409 is a normal answer (join).
 * contractOk: false when a 2xx lacks the expected fields. ownGame: the request was about a game
 * this VU created/joined and has not seen finished (a 404 is then an id-lifecycle mismatch).
 * Returns true when the request failed.
 */
export function classify(status, expected409, contractOk, ownGame) {
  setPhase();
  const ok2xx = status >= 200 && status < 300;
  let failed;
  if (ok2xx) {
    failed = !contractOk;
    if (failed) contractFailures.add(ONE);
  } else {
    failed = !(expected409 && status === 409);
  }
  reqErrors.add(failed);
  trueErrors.add(failed && status !== 401 && status !== 429);
  status401.add(status === 401);
  status429.add(status === 429);
  serverAvailable.add(status !== 0 && status < 500);
  if (status === 401) {
    authTokenExpired.add(ONE);
  } else if (status === 429) {
    rateLimitHits.add(ONE);
    capacityFailures.add(ONE);
  } else if (status === 0 || status >= 500) {
    capacityFailures.add(ONE);
  } else if (status === 400 || status === 403) {
    contractFailures.add(ONE);
  } else if (status === 404 && ownGame) {
    idLifecycleMismatches.add(ONE);
  }
  return failed;
}

/** A server-side rate limit seen on the WebSocket (no request sample: counters only). */
export function wsRateLimited() {
  setPhase();
  rateLimitHits.add(ONE);
  capacityFailures.add(ONE);
}

/** Parse a JSON body; null when it is not JSON. */
export function parseBody(res) {
  const body = res.body;
  if (typeof body !== 'string' || body.length === 0) return null;
  try {
    return JSON.parse(body);
  } catch (e) {
    return null;
  }
}
