// Contract metrics (docs/design.md §2, docs/contract.md §6), the `phase` VU tag, and the
// classification of every HTTP response / WebSocket connect: one sample per request in each of
// the five Rates.
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
export const moveStalled = new Rate('move_stalled');
export const aiMoveLatency = new Trend('ai_move_latency', true);

export const gamesActiveDelta = new Counter('games_active_delta');
export const playersActiveDelta = new Counter('players_active_delta');

// A game with AI seats and more than one human seat that the server made active at creation
// (RingRift's rule): the scenario's game shape cannot be formed on this server.
export const gameShapeUnformable = new Counter('game_shape_unformable_total');

// Extra diagnostics (not read by criteria): why a game session ended early, WebSocket error
// events from the server, games a human saw end (game_over) while it was in them.
export const gameAborts = new Counter('game_aborts_total');
export const wsErrors = new Counter('ws_errors_total');
export const gamesCompleted = new Counter('games_completed_total');

/** The `name` tag of every HTTP request, and every Counter (checked against PRODVAL_CONFIG facts). */
export const REQUEST_NAMES = ['login', 'refresh', 'game_create', 'game_list', 'game_join', 'game_state', 'game_leave',
  'ws_connect'];
// One tag object per request name, reused: every Rate sample and error counter carries `name`, so the
// plugin can say which endpoint failed (`req_errors{name:game_list}` …) without a tag per request.
const NAME_TAGS = {};
REQUEST_NAMES.forEach((name) => { NAME_TAGS[name] = { name }; });
const COUNTERS = [contractFailures, idLifecycleMismatches, authTokenExpired, rateLimitHits, capacityFailures,
  gamesActiveDelta, playersActiveDelta, gameAborts, wsErrors, gamesCompleted, gameShapeUnformable];
export const COUNTER_NAMES = COUNTERS.map((c) => c.name);

/**
 * One 0 sample per counter, so every counter of the contract is in the summary (count 0)
 * even when nothing happened: "zero" is then a measurement, not missing data.
 */
export function emitZeroCounters() {
  setPhase();
  COUNTERS.forEach((counter) => counter.add(0));
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

/** Set VU tag `phase` (ramp/steady/rampdown) for the samples that follow; returns Date.now(). */
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
 * status: HTTP status (0 = no response). expectedRace: the answer is an expected race answer
 * (a 400 GAME_FULL / GAME_NOT_JOINABLE / ALREADY_JOINED to a join): not failed, not counted.
 * contractOk: false when a 2xx lacks the expected fields. ownGame: the request was about a game
 * this VU created/joined and has not seen ended (a 404 is then an id-lifecycle mismatch).
 * name: the request's `name` tag (REQUEST_NAMES). Returns true when the request failed.
 */
export function classify(name, status, expectedRace, contractOk, ownGame) {
  setPhase();
  const tags = NAME_TAGS[name];
  const ok2xx = status >= 200 && status < 300;
  let failed;
  if (ok2xx) {
    failed = !contractOk;
    if (failed) contractFailures.add(ONE, tags);
  } else {
    failed = !expectedRace;
  }
  reqErrors.add(failed, tags);
  trueErrors.add(failed && status !== 401 && status !== 429, tags);
  status401.add(status === 401, tags);
  status429.add(status === 429, tags);
  serverAvailable.add(status !== 0 && status < 500, tags);
  if (!failed || ok2xx) return failed;
  if (status === 401) {
    authTokenExpired.add(ONE, tags);
  } else if (status === 429) {
    rateLimitHits.add(ONE, tags);
    capacityFailures.add(ONE, tags);
  } else if (status === 0 || status >= 500) {
    capacityFailures.add(ONE, tags);
  } else if (status === 400 || status === 403) {
    contractFailures.add(ONE, tags);
  } else if (status === 404 && ownGame) {
    idLifecycleMismatches.add(ONE, tags);
  }
  return failed;
}

/**
 * A join answered 200 whose seat is not ours after all (RingRift's join reads the free seat and
 * writes it without a lock, so every join of a herd is answered "Joined game successfully" and the
 * last write keeps the seat): a contract failure of `game_join`, found when the game is looked at.
 */
export function seatLost(foundAt) {
  setPhase();
  contractFailures.add(ONE, NAME_TAGS.game_join);
  gameAborts.add(1, SEAT_LOST_TAGS[foundAt] || SEAT_LOST_TAGS.start);
}
// Where the lost seat was found (poll, join_game, start, leave): one tag object each, reused.
const SEAT_LOST_TAGS = {};
['poll', 'join_game', 'start', 'leave'].forEach((at) => { SEAT_LOST_TAGS[at] = { reason: 'seat_lost', found_at: at }; });

/** A server-side rate limit seen on the WebSocket (an `error` RATE_LIMITED event): counters only. */
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

// Tag objects reused for the diagnostic counters (low cardinality: unknown values -> "other").
const TAG_CACHE = {};
const SAFE_TAG = /^[A-Za-z0-9_:.-]{1,40}$/;
const MAX_TAG_VALUES = 40;
let tagValues = 0;

/** A reusable `{key: value}` tag object; values that are not short identifiers become "other". */
export function tagOf(key, value) {
  const v = typeof value === 'string' && SAFE_TAG.test(value) ? value : 'other';
  const id = `${key}\u0000${v}`;
  let tags = TAG_CACHE[id];
  if (tags === undefined) {
    if (tagValues >= MAX_TAG_VALUES && v !== 'other') return tagOf(key, 'other');
    tagValues++;
    tags = { [key]: v };
    TAG_CACHE[id] = tags;
  }
  return tags;
}
